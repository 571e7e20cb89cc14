"""lxcfs on the host: per-container ``/proc/meminfo``, ``cpuinfo``, ``stat``, ``uptime``...

A program inside a distribution reads the VM's memory and processor counts from ``/proc``, which
the kernel fills with the host's figures whatever the cgroup limits are. ``lxcfs`` (Debian package
``lxcfs``) serves those files computed from the reader's cgroups; when the host runs it, each
distribution gets them bind-mounted over its ``/proc`` files. Only an lxcfs mounted by root
(``user_id=0``) counts: a FUSE file system any user mounted must never answer for another's
distribution.
"""

from __future__ import annotations

from pathlib import Path

FSTYPE = "fuse.lxcfs"


def find_lxcfs(mountinfo: str | None = None) -> str | None:
    """The mount point of root's lxcfs in ``/proc/self/mountinfo``, or None."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return None
    for line in mountinfo.splitlines():
        left, separator, right = line.partition(" - ")
        if not separator:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] != FSTYPE:
            continue
        if "user_id=0" not in tail[2].split(","):
            continue
        mount_point = fields[4].replace("\\040", " ")
        if mount_point.startswith("/") and "\\" not in mount_point:
            return mount_point
    return None
