"""The kernel's cgroup tables read as text, and the VM's interpreter moved into its groups early.

A leaf module (`os`, `errno`, `time` and `pywsl.sha256` only), for the host and the VM's interpreter.
`pywsl.vm.cgroups` makes the VM's groups and sets their limits. What it reads of the kernel
(`/proc/self/mountinfo`: the cgroup hierarchies; `/proc/self/cgroup`: a process's groups) is parsed
here with nothing but `os`, so that a cold launch can make the VM's groups (`make_early`) and have
the VM's interpreter moved into them while the rest loads (`MOVE_SCRIPT`, run by a shell: the move
waits for an RCU grace period in the kernel, which is why it is started that early, and a thread of
the launch would then compete with it for the interpreter's lock). An interpreter
that no boot takes leaves those groups again and removes them when they are empty
(`leave_groups`), whether or not the launch that started it lived to end it.
"""

from __future__ import annotations

import errno
import os
import time

__all__ = [
    "MOVE_SCRIPT",
    "group_digest",
    "group_name",
    "groups_named",
    "has_process",
    "hierarchies",
    "join",
    "leave_groups",
    "make_early",
    "own_group",
    "read_text",
    "remove_empty",
    "remove_unused",
    "unified_place",
]

V1_CONTROLLERS = frozenset({"memory", "cpu", "pids", "cpuset"})  # the v1 controllers pywsl uses
EARLY_CONTROLLERS = ("memory", "cpu")  # the v1 groups a VM always gets (cpuset only with a limit)
REMOVE_TIMEOUT = 1.0  # s a removal waits for the group's last process to be gone
REMOVE_RETRY = 0.01  # s between tries


def read_text(path: str) -> str:
    """A small kernel file's text ("" when it cannot be read)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")
    except OSError:
        return ""
    finally:
        os.close(fd)


def hierarchies(mountinfo: str) -> list[tuple[str, int, frozenset[str]]]:
    """(mount point, version, v1 controllers pywsl uses) of each cgroup hierarchy in `mountinfo`."""
    found: list[tuple[str, int, frozenset[str]]] = []
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields = left.split()
        fstype, _source, *options = right.split()
        super_options = set(options[0].split(",")) if options else set()
        mount_point = fields[4].replace("\\040", " ")
        if fstype == "cgroup2":
            found.append((mount_point, 2, frozenset()))
        elif fstype == "cgroup":
            found.append((mount_point, 1, frozenset(super_options & V1_CONTROLLERS)))
    return found


def own_group(proc_cgroup: str, version: int, controller: str | None) -> str:
    """A process's group in a hierarchy, from its `/proc/<pid>/cgroup` text ("/" when not listed)."""
    for line in proc_cgroup.splitlines():
        number, controllers, path = line.split(":", 2)
        if version == 2 and number == "0" and controllers == "":
            return path
        if version == 1 and controller in controllers.split(","):
            return path
    return "/"


V2_CONTROLLERS = frozenset({"cpu", "cpuset", "memory"})  # what a VM's v2 group gets where the root has it
V2_TOP = "pywsl"  # below the v2 root: the VMs' groups when the caller's own group cannot hold them


def unified_place(mount_point: str, own: str) -> str:
    """The group (as in `/proc/self/cgroup`) below which a VM's group goes in the unified hierarchy.

    The caller's own group, unless it gives the groups below it fewer of `V2_CONTROLLERS` than the
    hierarchy's root has. That is the case on a systemd host with cgroup v2 alone: the caller's
    scope or service enables no controller for groups below it, and cannot, as processes are in it.
    Then those controllers are enabled on the way from the root, and the VM's group goes to
    `V2_TOP` below the root (as a container engine without systemd places its containers), or to
    the root itself for a caller in the root group. Nothing changes where the root has none of
    them (a hybrid host, whose v1 hierarchies hold them) or they cannot be enabled (a cgroup
    namespace whose root holds processes)."""
    wanted = _controllers(mount_point, "cgroup.controllers") & V2_CONTROLLERS
    own_path = os.path.join(mount_point, own.lstrip("/"))
    if not wanted or wanted <= _controllers(own_path, "cgroup.subtree_control"):
        return own
    _enable(mount_point, wanted)
    if not own.strip("/"):
        return own
    top = os.path.join(mount_point, V2_TOP)
    made = False
    try:
        os.mkdir(top, 0o755)
        made = True
    except FileExistsError:
        pass
    except OSError:
        return own
    _enable(top, wanted)
    if _controllers(top, "cgroup.subtree_control") & wanted:
        return f"/{V2_TOP}"
    if made:
        remove_empty(top, timeout=0.0)
    return own


def _controllers(group: str, name: str) -> set[str]:
    return set(read_text(os.path.join(group, name)).split())


def _enable(group: str, controllers: set[str]) -> None:
    """Enable `controllers` for the groups below `group`, one at a time (one the kernel refuses,
    for lack of it in the parent or for processes in `group`, stays off)."""
    for controller in sorted(controllers - _controllers(group, "cgroup.subtree_control")):
        try:
            _write_control(group, f"+{controller}")
        except OSError:
            continue


def _write_control(group: str, text: str) -> None:
    fd = os.open(os.path.join(group, "cgroup.subtree_control"), os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def group_digest(runtime_dir: str) -> str:
    """The part of a VM's group name (`pywsl-<uid>-<digest>`) that names its runtime folder."""
    from pywsl.sha256 import sha256

    return sha256(os.path.realpath(runtime_dir).encode()).hexdigest()[:12]


def group_name(uid: int, runtime_dir: str) -> str:
    """`pywsl-<uid>-<digest of the runtime folder>`: one group per VM, even for one user's test VMs."""
    return f"pywsl-{uid}-{group_digest(runtime_dir)}"


def has_process(group: str, pid: int) -> bool:
    """Whether process `pid` is in `group` itself (False when that cannot be read)."""
    return str(pid) in read_text(os.path.join(group, "cgroup.procs")).split()


# `sh -c MOVE_SCRIPT sh PID GROUP...`: move process PID into each group, one after the other
# without an interpreter between the moves (the first waits for an RCU grace period); when PID
# is gone by then (its launch vanished and it left before it was moved), remove the groups, which
# nobody else would (only an empty group can be removed: another VM's stays).
MOVE_SCRIPT = (
    'pid=$1; shift; for group in "$@"; do echo "$pid" > "$group/cgroup.procs"; done; '
    'kill -0 "$pid" || rmdir "$@"'
)


def make_early(name: str) -> tuple[str, ...]:
    """Make the groups `VmCgroup.create(name, ...)` makes whatever the limits (the unified
    hierarchy's, and memory's and cpu's in v1 where the unified one has not those controllers)
    with no limit and no delegation yet. Every group made is returned: whoever moves a process
    into them, or ends it, removes them. `create` then sets them up and reports what fails;
    nothing is reported here."""
    groups: list[str] = []
    enabled: set[str] = set()
    for mount_point, own, controller in _early_places():
        if controller in enabled:
            continue
        group = _made(mount_point, own, name)
        if group is None:
            continue
        groups.append(group)
        if controller is None:  # the unified hierarchy: v1 groups only for what it has not
            enabled = set(read_text(os.path.join(group, "cgroup.controllers")).split())
    return tuple(groups)


def _early_places() -> list[tuple[str, str, str | None]]:
    """Where `make_early` makes its groups, beside this process's own: (mount point, own group
    there, the v1 controller it is for or None for the unified hierarchy), unified first."""
    found = hierarchies(read_text("/proc/self/mountinfo"))
    mine = read_text("/proc/self/cgroup")
    places: list[tuple[str, str, str | None]] = []
    unified = next((item for item in found if item[1] == 2), None)
    if unified is not None:
        places.append((unified[0], unified_place(unified[0], own_group(mine, 2, None)), None))
    for controller in EARLY_CONTROLLERS:
        v1 = next((item for item in found if item[1] == 1 and controller in item[2]), None)
        if v1 is None:
            continue
        place = (v1[0], own_group(mine, 1, controller), controller)
        if all(other[:2] != place[:2] for other in places):  # (one v1 hierarchy for both: once)
            places.append(place)
    return places


def join(group: str, pid: int) -> bool:
    """Move process `pid` into `group` unless it is there already (a move waits for an RCU grace
    period even into the same group); False when the move failed."""
    return has_process(group, pid) or _moved(group, pid)


def remove_empty(group: str, timeout: float = REMOVE_TIMEOUT) -> bool:
    """Remove `group` if it is empty (no process, no sub-group: another VM's is never removed),
    waiting at most `timeout` s for a process that is exiting to leave it. True when it is gone."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.rmdir(group)
        except FileNotFoundError:
            return True
        except OSError as error:
            if error.errno != errno.EBUSY or time.monotonic() >= deadline:
                return False
            time.sleep(REMOVE_RETRY)
        else:
            return True


def groups_named(name: str) -> list[str]:
    """The paths of this process's groups called `name`, one per hierarchy (and v1 controller)."""
    mine = read_text("/proc/self/cgroup")
    found: list[str] = []
    for mount_point, version, controllers in hierarchies(read_text("/proc/self/mountinfo")):
        for controller in sorted(controllers) if version == 1 else [None]:
            own = own_group(mine, version, controller)
            if own.rpartition("/")[2] == name:
                found.append(os.path.join(mount_point, own.lstrip("/")))
    return found


def leave_groups(name: str) -> None:
    """Move this process out of its groups called `name` (into the groups they were made in) and
    remove those that are empty then; a group another process is in stays."""
    for group in groups_named(name):
        if _moved(os.path.dirname(group), os.getpid()):
            remove_empty(group)


def remove_unused(name: str) -> None:
    """Remove the groups `make_early(name)` makes beside this process's own groups where they are
    empty (no process, no sub-group): those of an interpreter that was never moved into them (its
    launch ended before it could move it). One in use, another VM's of the same name, stays."""
    for mount_point, own, _controller in _early_places():
        remove_empty(_group_path(mount_point, own, name), timeout=0.0)


def _moved(group: str, pid: int) -> bool:
    """Move process `pid` into `group`; False when that failed."""
    try:
        fd = os.open(os.path.join(group, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        os.write(fd, str(pid).encode())
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def _group_path(mount_point: str, own: str, name: str) -> str:
    return os.path.join(mount_point, own.lstrip("/"), name)


def _made(mount_point: str, own: str, name: str) -> str | None:
    group = _group_path(mount_point, own, name)
    try:
        os.mkdir(group)
    except FileExistsError:
        pass
    except OSError:
        return None
    return group
