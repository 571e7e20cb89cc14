"""The utility VM's memory and processor limits as control groups.

WSL gives its utility VM a memory size and a processor count (``.wslconfig`` ``memory`` and
``processors``). The ``namespaces`` backend turns them into cgroup limits on the VM's processes:

* cgroup v2 (``memory.max``, ``cpu.max``) where the unified hierarchy has those controllers;
* otherwise cgroup v1 (``memory.limit_in_bytes``, ``cpu.cfs_quota_us``/``cpu.cfs_period_us``),
  as on hybrid hosts.

``processors`` also gives the VM a cpuset of that many CPUs (the first ones the host process may
use; ``cpuset.cpus``, v2 or v1), so that ``nproc`` and ``sched_getaffinity`` inside show the
count (the VM also restricts its own CPU affinity, for hosts without a cpuset controller).
``swap`` limits memory plus swap (``memory.memsw.limit_in_bytes`` in v1 where the kernel accounts
swap, ``memory.swap.max`` in v2).

The VM's group is ``pywsl-<uid>-<digest>`` (one per runtime folder) beneath the group the host
process runs in, in every hierarchy that is used: v2 always (it is the root of the VM's cgroup
namespace), and v1 ``memory`` and ``cpu`` where those are v1 controllers. On a host with cgroup
v2 alone (systemd's default), the caller's scope or service cannot give a group below it any
controller, so the v2 group goes to ``/pywsl`` below the root instead, with ``memory``, ``cpu``
and ``cpuset`` enabled on the way (``cgroup_tables.unified_place``). The host creates the
groups before boot; the VM's monitor moves the VM into them and removes them once it has stopped.
The v2 group is delegated to the VM's root (``delegate_to``: the group, its ``cgroup.procs``,
``cgroup.threads`` and ``cgroup.subtree_control`` are chowned to it, as a container manager does),
so that a distribution's systemd can make its own sub-groups there; the limit files stay root's.
On a hybrid host the unified hierarchy has no controllers: systemd runs on it all the same (no
resource control of its units), while the v1 limits above still hold for the whole VM.
A VM whose monitor was killed leaves its (empty) groups behind: ``find_groups`` finds them by name
in every hierarchy, wherever the process that booted that VM ran, and ``remove_group`` removes
them, sub-groups first, as long as no process is left in them.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from pathlib import Path

from pywsl import cgroup_tables
from pywsl.lean_context import suppress

TYPE_CHECKING = False  # the type checker sees dataclasses; a cold launch's boot loads no `dataclasses`
if TYPE_CHECKING:
    from dataclasses import dataclass
else:
    from pywsl.records import dataclass

CGROUP_ROOT = Path("/sys/fs/cgroup")


CPU_PERIOD_US = 100_000
MAX_GROUPS_SCANNED = 200_000


def _warn(message: str, *arguments: object) -> None:
    """A warning in this module's log (`logging` is loaded by the first one, not by a boot)."""
    import logging

    logging.getLogger(__name__).warning(message, *arguments)


@dataclass(frozen=True)
class Hierarchy:
    """One mounted cgroup hierarchy: where it is mounted and which v1 controllers it has."""

    mount_point: Path
    version: int
    controllers: frozenset[str]


def mounted_hierarchies(mountinfo: str | None = None) -> list[Hierarchy]:
    """The cgroup hierarchies in ``/proc/self/mountinfo``."""
    if mountinfo is None:
        mountinfo = cgroup_tables.read_text("/proc/self/mountinfo")
    return [
        Hierarchy(Path(mount_point), version, controllers)
        for mount_point, version, controllers in cgroup_tables.hierarchies(mountinfo)
    ]


def own_cgroup(version: int, controller: str | None, proc_cgroup: str | None = None) -> str:
    """The calling process's group in a hierarchy (from ``/proc/self/cgroup``)."""
    if proc_cgroup is None:
        proc_cgroup = cgroup_tables.read_text("/proc/self/cgroup")
    return cgroup_tables.own_group(proc_cgroup, version, controller)


@dataclass(frozen=True)
class VmCgroup:
    """The VM's groups (one directory per hierarchy used) and the limits written into them."""

    paths: tuple[Path, ...]
    warnings: tuple[str, ...] = ()

    @classmethod
    def create(
        cls,
        name: str,
        *,
        memory_bytes: int | None,
        processors: int | None,
        swap_bytes: int | None = None,
        delegate_to: tuple[int, int] | None = None,
    ) -> VmCgroup:
        """Create (or reuse) the groups and apply the limits. Limits that cannot be applied are warnings.

        ``delegate_to``: the host uid and gid of the VM's root, who gets the v2 group (``delegate``)."""
        paths: list[Path] = []
        warnings: list[str] = []
        hierarchies = mounted_hierarchies()
        v2_controllers = _join_v2(hierarchies, name, delegate_to, paths, warnings)
        wanted = {
            "memory": memory_bytes is not None,
            "cpu": processors is not None,
            "cpuset": processors is not None,
        }
        for controller, needed in wanted.items():
            if controller not in v2_controllers:
                _join_v1(hierarchies, controller, needed, name, paths, warnings)
        for path in paths:
            _reset_limits(path)
        if memory_bytes is not None:
            _apply(paths, v2_controllers, "memory", memory_bytes, warnings)
        if processors is not None:
            _apply(paths, v2_controllers, "cpu", processors, warnings)
            _apply_cpuset(paths, v2_controllers, processors, warnings)
        if swap_bytes is not None and memory_bytes is not None:
            _apply_swap(paths, v2_controllers, memory_bytes, swap_bytes, warnings)
        for warning in warnings:
            _warn("%s", warning)
        return cls(tuple(paths), tuple(warnings))

    def add(self, pid: int) -> bool:
        """Move process `pid` into every group it is not in yet (its children to come are born
        there); False when a group refused it (then the process itself joins, as the VM's first
        process does)."""
        return all([cgroup_tables.join(str(path), pid) for path in self.paths])  # every group tried

    def remove(self) -> None:
        """Remove the groups that are empty (a group still in use stays)."""
        for path in self.paths:
            remove_group(path)

    def process_ids(self) -> set[int]:
        """Every process still in one of the VM's groups (an empty set once the VM has stopped)."""
        pids: set[int] = set()
        for path in self.paths:
            try:
                for root, _dirs, files in os.walk(path):
                    if "cgroup.procs" in files:
                        text = Path(root, "cgroup.procs").read_text()
                        pids.update(int(item) for item in text.split())
            except FileNotFoundError:
                continue
        return pids


DELEGATED_FILES = ("cgroup.procs", "cgroup.threads", "cgroup.subtree_control")


def _join_v2(
    hierarchies: list[Hierarchy],
    name: str,
    delegate_to: tuple[int, int] | None,
    paths: list[Path],
    warnings: list[str],
) -> set[str]:
    """The VM's group in the unified hierarchy (delegated when asked); its enabled controllers."""
    v2 = next((item for item in hierarchies if item.version == 2), None)
    if v2 is None:
        return set()
    group = _make_group(
        v2.mount_point, cgroup_tables.unified_place(str(v2.mount_point), own_cgroup(2, None)), name
    )
    if group is None:
        return set()
    paths.append(group)
    if delegate_to is not None:
        warnings += delegate(group, *delegate_to)
    return _enabled_controllers(group)


def _join_v1(
    hierarchies: list[Hierarchy],
    controller: str,
    needed: bool,
    name: str,
    paths: list[Path],
    warnings: list[str],
) -> None:
    """The VM's group in the v1 hierarchy of ``controller`` (cpuset only when a limit needs it)."""
    v1 = next((item for item in hierarchies if item.version == 1 and controller in item.controllers), None)
    if v1 is None:
        if needed and controller != "cpuset":
            warnings.append(f"no cgroup {controller} controller: the VM's {controller} limit is not applied")
        return
    if controller == "cpuset" and not needed:
        return
    group = _make_group(v1.mount_point, own_cgroup(1, controller), name)
    if group is None:
        warnings.append(f"cannot create the VM's cgroup in {v1.mount_point}")
    elif group not in paths:
        paths.append(group)


def delegate(group: Path, uid: int, gid: int) -> list[str]:
    """Give a v2 group (and the files that manage its sub-groups) to ``uid``/``gid``; warnings on failure.

    The group is one the host just made below a cgroup2 mount (root's alone); nothing is followed."""
    try:
        fd = os.open(group, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as error:
        return [f"cannot delegate cgroup {group}: {error.strerror}"]
    try:
        os.fchown(fd, uid, gid)
        for name in DELEGATED_FILES:
            with suppress(FileNotFoundError):
                os.chown(name, uid, gid, dir_fd=fd, follow_symlinks=False)
    except OSError as error:
        return [f"cannot delegate cgroup {group}: {error.strerror}"]
    finally:
        os.close(fd)
    return []


def has_process(group: Path, pid: int) -> bool:
    """Whether process `pid` is in `group` itself (False when that cannot be read)."""
    return cgroup_tables.has_process(str(group), pid)


def _make_group(mount_point: Path, own: str, name: str) -> Path | None:
    parent = mount_point / own.lstrip("/")
    group = parent / name
    try:
        group.mkdir(exist_ok=True)
    except OSError as error:
        _warn("cannot create cgroup %s: %s", group, error)
        return None
    return group


def _enabled_controllers(group: Path) -> set[str]:
    try:
        return set((group / "cgroup.controllers").read_text().split())
    except OSError:
        return set()


def _is_v2(path: Path) -> bool:
    return (path / "cgroup.controllers").exists()


def _write(path: Path, value: str) -> None:
    path.write_text(value)


def _reset_limits(path: Path) -> None:
    """Drop the limits a previous VM of the same user may have left on a reused group."""
    settings = (
        [("memory.max", "max"), ("cpu.max", f"max {CPU_PERIOD_US}")]
        if _is_v2(path)
        else [
            ("memory.memsw.limit_in_bytes", "-1"),
            ("memory.limit_in_bytes", "-1"),
            ("memory.memsw.limit_in_bytes", "-1"),
            ("cpu.cfs_quota_us", "-1"),
        ]
    )
    for name, value in settings:
        target = path / name
        if target.exists():
            with suppress(OSError):
                _write(target, value)


def _apply(
    paths: list[Path], v2_controllers: set[str], controller: str, value: int, warnings: list[str]
) -> None:
    for path in paths:
        v2 = _is_v2(path)
        if v2 and controller not in v2_controllers:
            continue
        v1_file = "memory.limit_in_bytes" if controller == "memory" else "cpu.cfs_quota_us"
        if not v2 and not (path / v1_file).exists():
            continue
        try:
            if controller == "memory":
                _write(path / ("memory.max" if v2 else "memory.limit_in_bytes"), str(value))
            elif v2:
                _write(path / "cpu.max", f"{value * CPU_PERIOD_US} {CPU_PERIOD_US}")
            else:
                _write(path / "cpu.cfs_period_us", str(CPU_PERIOD_US))
                _write(path / "cpu.cfs_quota_us", str(value * CPU_PERIOD_US))
        except OSError as error:
            warnings.append(f"cannot set the VM's {controller} limit in {path}: {error.strerror}")
        return
    warnings.append(f"no cgroup carries the VM's {controller} limit")


def parse_cpu_list(text: str) -> list[int]:
    """The CPUs of a ``cpuset.cpus``-style list (``0-3,6``)."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        first, _, last = part.partition("-")
        cpus.extend(range(int(first), int(last or first) + 1))
    return cpus


def _apply_cpuset(paths: list[Path], v2_controllers: set[str], processors: int, warnings: list[str]) -> None:
    """Restrict the group to the first ``processors`` CPUs of its parent (v1 needs ``mems`` too)."""
    for path in paths:
        v2 = _is_v2(path)
        if (v2 and "cpuset" not in v2_controllers) or not (path / "cpuset.cpus").exists():
            continue
        try:
            parent = path.parent
            effective = parent / "cpuset.cpus.effective" if v2 else parent / "cpuset.effective_cpus"
            available = parse_cpu_list(
                effective.read_text() if effective.exists() else (parent / "cpuset.cpus").read_text()
            )
            if not v2:
                mems = parent / "cpuset.effective_mems"
                mems = mems if mems.exists() else parent / "cpuset.mems"
                _write(path / "cpuset.mems", mems.read_text().strip())
            chosen = available[:processors] or available
            _write(path / "cpuset.cpus", ",".join(str(cpu) for cpu in chosen))
        except (OSError, ValueError) as error:
            warnings.append(f"cannot set the VM's cpuset in {path}: {error}")
        return


def _apply_swap(
    paths: list[Path], v2_controllers: set[str], memory_bytes: int, swap_bytes: int, warnings: list[str]
) -> None:
    """Memory plus swap: ``memory.memsw.limit_in_bytes`` (v1) or ``memory.swap.max`` (v2)."""
    for path in paths:
        v2 = _is_v2(path)
        target = path / ("memory.swap.max" if v2 else "memory.memsw.limit_in_bytes")
        if (v2 and "memory" not in v2_controllers) or not target.exists():
            continue
        try:
            _write(target, str(swap_bytes if v2 else memory_bytes + swap_bytes))
        except OSError as error:
            warnings.append(f"cannot set the VM's swap limit in {path}: {error.strerror}")
        return
    warnings.append("the host does not account swap per cgroup: the VM's swap limit is not applied")


def find_groups(matches: Callable[[str], bool], hierarchies: list[Hierarchy] | None = None) -> list[Path]:
    """Every group whose name ``matches``, in the v2 hierarchy and the v1 memory/cpu/pids ones.

    The walk does not descend into a matching group (its sub-groups go with it) and gives up after
    ``MAX_GROUPS_SCANNED`` directories.
    """
    if hierarchies is None:
        hierarchies = mounted_hierarchies()
    roots = dict.fromkeys(h.mount_point for h in hierarchies if h.version != 1 or h.controllers)
    found: list[Path] = []
    scanned = 0
    for root in roots:
        scanned = _walk_groups(root, matches, found, scanned)
    return found


def _walk_groups(root: Path, matches: Callable[[str], bool], found: list[Path], scanned: int) -> int:
    """Add the groups under ``root`` whose name ``matches`` to ``found``; returns how many
    directories have been scanned in all (the walk stops at ``MAX_GROUPS_SCANNED``)."""
    pending = [str(root)]
    while pending and scanned < MAX_GROUPS_SCANNED:
        for path, name in _sub_folders(pending.pop()):
            scanned += 1
            if matches(name):
                found.append(Path(path))
            else:
                pending.append(path)
    return scanned


def _sub_folders(folder: str) -> list[tuple[str, str]]:
    """(path, name) of the directories directly in ``folder`` (not following links); none when it
    cannot be read."""
    try:
        with os.scandir(folder) as entries:
            return [(entry.path, entry.name) for entry in entries if _is_folder(entry)]
    except OSError:
        return []


def _is_folder(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def _groups_below(path: Path) -> list[Path]:
    """``path`` and its sub-groups, deepest first."""
    ordered: list[Path] = []
    for root, _dirs, _files in os.walk(path, topdown=False):
        ordered.append(Path(root))
    return ordered


def _has_processes(path: Path) -> bool:
    try:
        return bool((path / "cgroup.procs").read_text().split())
    except FileNotFoundError:
        return False


def remove_group(path: Path, timeout: float = 0.0) -> bool:
    """Remove a group and its sub-groups if no process is left in them; True once it is gone.

    A group whose last processes are still exiting is busy for a moment: it is retried for up to
    ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    for group in _groups_below(path):
        while True:
            if _has_processes(group):
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.02)
                continue
            try:
                os.rmdir(group)
                break
            except FileNotFoundError:
                break
            except OSError as error:
                if error.errno != errno.EBUSY or time.monotonic() >= deadline:
                    _warn("cannot remove cgroup %s: %s", group, error)
                    return False
                time.sleep(0.02)
    return not path.exists()
