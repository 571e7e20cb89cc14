"""The units pywsl masks for systemd before it starts, as WSL's systemd generator does.

WSL links its init into ``/run/systemd/system-generators``; on every (re)load the generator masks
``systemd-networkd-wait-online.service`` and ``NetworkManager-wait-online.service`` (the
distribution's network is set up by WSL and is not managed by systemd: waiting for it only times
out) and ``console-getty.service`` (the console is not a terminal anyone logs in on). pywsl writes
the same masks (links to ``/dev/null``) into ``/run/systemd/system`` once, before systemd starts:
they last until the instance ends, survive ``systemctl daemon-reload``, and a unit file of the
same name in ``/etc/systemd/system`` still wins over them, as over a generator's output.

A kernel file system that systemd mounts at boot but that cannot be mounted here is masked too:
an instance is a user namespace, and ``debugfs`` and ``tracefs`` (``sys-kernel-debug.mount``,
``sys-kernel-tracing.mount``) are refused there (``EPERM``), which is the only thing that made a
stock Debian boot ``degraded``. Each such file system is tried on a scratch directory first: one
that mounts (a kernel that allows it) keeps its unit.

A drop-in for ``user@.service`` gives each user's manager ``XDG_RUNTIME_DIR`` and
``DBUS_SESSION_BUS_ADDRESS`` (``/run/user/<uid>``), which ``pam_systemd`` gives it where
``libpam-systemd`` is installed: without it (Debian's ``systemd`` only recommends it) the manager
exits at once, and ``systemctl --user`` cannot work.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterable

from pywsl.guest import syscalls
from pywsl.guest.rootfs import write_file_atomic
from pywsl.lean_context import suppress

TYPE_CHECKING = False  # the type checker sees dataclasses; `records` gives the same classes cheaply
if TYPE_CHECKING:
    from dataclasses import dataclass
else:
    from pywsl.records import dataclass

RUNTIME_UNITS = "/run/systemd/system"
SCRATCH = "/run/systemd/.pywsl-probe"
MASK_TARGET = "/dev/null"
# What WSL's generator masks on every distribution.
WSL_MASKED = (
    "systemd-networkd-wait-online.service",
    "NetworkManager-wait-online.service",
    "console-getty.service",
)
# Without pam_systemd (Debian's systemd only recommends libpam-systemd) a user's manager
# finds no XDG_RUNTIME_DIR and exits; these are the values pam_systemd gives it.
USER_MANAGER_DROPIN = ("user@.service.d", "pywsl-runtime-dir.conf")
USER_MANAGER_ENVIRONMENT = (
    "[Service]\n"
    "Environment=XDG_RUNTIME_DIR=/run/user/%i DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/%i/bus\n"
)
_PROBE_FLAGS = syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC
_REFUSED = (errno.EPERM, errno.EACCES, errno.ENODEV, errno.EINVAL)


@dataclass(frozen=True)
class KernelMount:
    """A mount unit of systemd for a kernel file system, and the path its condition looks at."""

    unit: str
    fstype: str
    condition_path: str


KERNEL_MOUNTS = (
    KernelMount("sys-kernel-debug.mount", "debugfs", "/sys/kernel/debug"),
    KernelMount("sys-kernel-tracing.mount", "tracefs", "/sys/kernel/tracing"),
    KernelMount("sys-kernel-config.mount", "configfs", "/sys/kernel/config"),
)


def can_mount(fstype: str, scratch: str = SCRATCH) -> bool:
    """Whether ``fstype`` mounts here (tried on ``scratch`` and taken off at once)."""
    os.makedirs(scratch, 0o700, exist_ok=True)
    try:
        syscalls.mount(fstype, scratch, fstype, _PROBE_FLAGS, None)
    except OSError as error:
        if error.errno in _REFUSED:
            return False
        raise
    finally:
        with suppress(OSError):
            syscalls.umount2(scratch, syscalls.MNT_DETACH)
        with suppress(OSError):
            os.rmdir(scratch)
    return True


def refused_kernel_mounts(
    mounts: Iterable[KernelMount] = KERNEL_MOUNTS,
    mountable: Callable[[str], bool] = can_mount,
    exists: Callable[[str], bool] = os.path.isdir,
) -> list[str]:
    """The units of ``mounts`` that systemd would start (their path exists) but that would fail."""
    return [mount.unit for mount in mounts if exists(mount.condition_path) and not mountable(mount.fstype)]


def mask(units: Iterable[str], folder: str = RUNTIME_UNITS) -> list[str]:
    """Link each unit to ``/dev/null`` in ``folder``; a unit file already there is left alone.

    Returns the units masked."""
    os.makedirs(folder, 0o755, exist_ok=True)
    masked = []
    for unit in units:
        if "/" in unit or unit.startswith("."):
            raise ValueError(f"not a unit name: {unit!r}")
        try:
            os.symlink(MASK_TARGET, os.path.join(folder, unit))
        except FileExistsError:
            continue
        masked.append(unit)
    return masked


def write_user_manager_dropin(folder: str = RUNTIME_UNITS) -> None:
    """``user@.service``'s runtime folder and bus in its environment, as ``pam_systemd`` sets them."""
    dropins = os.path.join(folder, USER_MANAGER_DROPIN[0])
    os.makedirs(dropins, 0o755, exist_ok=True)
    write_file_atomic(os.path.join(dropins, USER_MANAGER_DROPIN[1]), USER_MANAGER_ENVIRONMENT.encode())


def prepare() -> list[str]:
    """Write WSL's masks, those of the kernel file systems refused here and the user manager's
    drop-in; the units masked."""
    masked = mask([*WSL_MASKED, *refused_kernel_mounts()])
    write_user_manager_dropin()
    return masked
