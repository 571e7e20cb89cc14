"""Mount plans: the filesystems a distribution (or the import/export worker) sees, as data.

WSL's init mounts ``/proc``, ``/sys``, ``/dev``, ``/run`` and friends in a distribution's root
before anything runs there, and mini_init gives bsdtar a view that only contains the target disk.
pywsl describes each of those views as a list of steps (:func:`distribution_plan`,
:func:`worker_plan`) and applies it with :func:`apply_plan`.

Steps are applied *before* ``pivot_root``, while the sources (the VM's ``/dev/null``, ``/sys``,
``/``) are still reachable. Every target is resolved inside the new root with ``openat2``
(``RESOLVE_IN_ROOT``), so a symlink planted in an untrusted root filesystem can never redirect a
mount outside it; the mount itself goes onto the resolved ``/proc/self/fd/<n>``. Missing mount
points are created inside the root.

Never a devtmpfs: ``/dev`` is a tmpfs with the few device nodes a distribution needs bind-mounted
from the VM's ``/dev``, plus a private devpts instance.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence

from pywsl.guest import syscalls
from pywsl.guest.rootfs import open_in_root
from pywsl.lean_context import closing_fd

TYPE_CHECKING = False  # the type checker sees dataclasses; `records` gives the same classes cheaply
if TYPE_CHECKING:
    from dataclasses import dataclass
else:
    from pywsl.records import dataclass

_NOSUID_NODEV_NOEXEC = syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC
DEVICE_NODES = ("null", "zero", "full", "random", "urandom", "tty")
WORKER_TARGET = "/target"
# What the import/export worker borrows from the VM to run tar and its compressors.
WORKER_HOST_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
WORKER_HOST_FILES = ("/etc/ld.so.cache",)
# Where a new root is attached before pivot_root, in the private mount namespace doing it.
STAGING = "/tmp"
# The tmpfs every distribution of a VM shares (WSL's /mnt/wsl), and where mini_init keeps it
# attached in the VM's own mount namespace (which no process of the VM uses as its root).
SHARED_MOUNT_POINT = "/mnt/wsl"
SHARED_TMPFS_PATH = "/tmp"
# mini_init's tmpfs of the host PATH folders its instances share (``vm_path_folders``): mounted
# first at the same place, then covered by the shared tmpfs; reached by its fd alone.
FOLDERS_TMPFS_PATH = SHARED_TMPFS_PATH


@dataclass(frozen=True)
class Mount:
    """A fresh filesystem (``fstype``) or a bind mount of ``source`` (``fstype`` None) at ``target``."""

    target: str
    fstype: str | None = None
    source: str | None = None
    options: str | None = None
    flags: int = 0
    recursive: bool = False
    read_only: bool = False
    file: bool = False


@dataclass(frozen=True)
class Symlink:
    path: str
    target: str


@dataclass(frozen=True)
class AttachTree:
    """Attach a detached mount tree (an ``open_tree`` fd given to :func:`apply_plan` by name)."""

    target: str
    tree: str
    read_only: bool = False


@dataclass(frozen=True)
class Restrict:
    """Set mount attributes (``MOUNT_ATTR_RDONLY``, ``_NOEXEC``...) on the mounts at and below ``target``.

    Attributes are only ever added: the kernel refuses to clear a flag a mount inherited locked.
    """

    target: str
    attributes: int


Step = Mount | Symlink | AttachTree | Restrict
# [automount] options that a bind mount of the host's tree can carry (wsl.conf), as mount attributes.
AUTOMOUNT_ATTRIBUTES = {
    "ro": syscalls.MOUNT_ATTR_RDONLY,
    "noexec": syscalls.MOUNT_ATTR_NOEXEC,
    "nosuid": syscalls.MOUNT_ATTR_NOSUID,
    "nodev": syscalls.MOUNT_ATTR_NODEV,
}
# Options that change nothing for this tree ("rw" and friends are the defaults; the host tree is
# always nosuid and nodev; ownership and case options belong to DrvFs and cannot apply to a bind).
AUTOMOUNT_NEUTRAL = frozenset({"rw", "exec", "suid", "dev"})


def distribution_plan(networking_mode: str, host_mount_point: str | None) -> list[Step]:
    """What init mounts in a distribution's root (see the module docstring)."""
    steps: list[Step] = [Mount("/proc", "proc", "proc", flags=_NOSUID_NODEV_NOEXEC)]
    if networking_mode == "none":
        # A network namespace of our own: a sysfs instance of our own.
        steps.append(Mount("/sys", "sysfs", "sysfs", flags=_NOSUID_NODEV_NOEXEC | syscalls.MS_RDONLY))
    else:
        # The host's network is shared: its sysfs, read-only.
        steps.append(Mount("/sys", source="/sys", recursive=True, read_only=True))
    steps += [
        Mount("/dev", "tmpfs", "tmpfs", "mode=755,size=65536k", syscalls.MS_NOSUID | syscalls.MS_STRICTATIME),
        *(Mount(f"/dev/{name}", source=f"/dev/{name}", file=True) for name in DEVICE_NODES),
        Mount(
            "/dev/pts",
            "devpts",
            "devpts",
            "newinstance,ptmxmode=0666,mode=0620,gid=5",
            syscalls.MS_NOSUID | syscalls.MS_NOEXEC,
        ),
        Symlink("/dev/ptmx", "pts/ptmx"),
        Mount("/dev/shm", "tmpfs", "tmpfs", "mode=1777", syscalls.MS_NOSUID | syscalls.MS_NODEV),
        Mount("/dev/mqueue", "mqueue", "mqueue", flags=_NOSUID_NODEV_NOEXEC),
        Symlink("/dev/fd", "/proc/self/fd"),
        Symlink("/dev/stdin", "/proc/self/fd/0"),
        Symlink("/dev/stdout", "/proc/self/fd/1"),
        Symlink("/dev/stderr", "/proc/self/fd/2"),
        Mount("/run", "tmpfs", "tmpfs", "mode=755", syscalls.MS_NOSUID | syscalls.MS_NODEV),
        Mount("/tmp", "tmpfs", "tmpfs", "mode=1777", syscalls.MS_NOSUID | syscalls.MS_NODEV),
    ]
    if host_mount_point is not None:
        steps += host_tree_plan(host_mount_point)
    return steps


def host_tree_plan(host_mount_point: str, attributes: int = 0) -> list[Step]:
    """The host's files at ``host_mount_point`` (``[automount] root`` + ``host``).

    The tree is the one ``host_view`` prepared: nosuid, nodev, with the host's ``proc``, ``sys``
    and ``dev`` masked by locked empty mounts. The distribution's own ``/proc`` goes on top of the
    ``proc`` mask, where a host's ``/proc`` is expected. ``attributes`` (from ``[automount]
    options``, :func:`automount_attributes`) are added to every mount of the tree.
    """
    steps: list[Step] = [AttachTree(host_mount_point, "host")]
    if attributes:
        steps.append(Restrict(host_mount_point, attributes))
    steps.append(Mount(f"{host_mount_point}/proc", "proc", "proc", flags=_NOSUID_NODEV_NOEXEC))
    return steps


def automount_attributes(options: str) -> tuple[int, list[str]]:
    """The mount attributes of an ``[automount] options`` string, and the options that do not apply.

    ``ro``, ``noexec``, ``nosuid`` and ``nodev`` apply to the host's tree; ``rw``, ``exec``,
    ``suid`` and ``dev`` are accepted and change nothing; anything else (DrvFs' ``uid=``,
    ``gid=``, ``umask=``, ``metadata``, ``case=``...) cannot apply to a bind mount and is named.
    """
    attributes, ignored = 0, []
    for option in (item.strip() for item in options.split(",")):
        if not option:
            continue
        value = AUTOMOUNT_ATTRIBUTES.get(option.lower())
        if value is not None:
            attributes |= value
        elif option.lower() not in AUTOMOUNT_NEUTRAL:
            ignored.append(option)
    return attributes, ignored


def worker_plan(read_only_target: bool) -> list[Step]:
    """The import/export worker's root: the VM's programs read-only, the target at ``/target``."""
    steps: list[Step] = []
    for path in WORKER_HOST_PATHS:
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(info.st_mode):
            steps.append(Symlink(path, os.readlink(path)))
        elif stat.S_ISDIR(info.st_mode):
            steps.append(Mount(path, source=path, recursive=True, read_only=True))
    for path in WORKER_HOST_FILES:
        if os.path.isfile(path):
            steps.append(Mount(path, source=path, read_only=True, file=True))
    steps += [
        Mount("/dev", "tmpfs", "tmpfs", "mode=755,size=64k", syscalls.MS_NOSUID),
        Mount("/dev/null", source="/dev/null", file=True),
        Mount("/tmp", "tmpfs", "tmpfs", "mode=1777", syscalls.MS_NOSUID | syscalls.MS_NODEV),
        AttachTree(WORKER_TARGET, "target", read_only=read_only_target),
    ]
    return steps


def _fd_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


def ensure_directory(root_fd: int, path: str) -> None:
    """``mkdir -p`` of ``path`` inside the root (components resolved in the root)."""
    current = ""
    for part in [item for item in path.split("/") if item]:
        parent = current or "/"
        current = f"{current}/{part}"
        try:
            os.close(open_in_root(root_fd, current, os.O_PATH | os.O_DIRECTORY))
            continue
        except FileNotFoundError:
            pass
        parent_fd = open_in_root(root_fd, parent, os.O_PATH | os.O_DIRECTORY)
        try:
            os.mkdir(part, 0o755, dir_fd=parent_fd)
        except FileExistsError:
            pass
        finally:
            os.close(parent_fd)


def _ensure_file(root_fd: int, path: str) -> None:
    parent, name = os.path.split(path)
    ensure_directory(root_fd, parent)
    try:
        os.close(open_in_root(root_fd, path, os.O_PATH))
        return
    except FileNotFoundError:
        pass
    with closing_fd(open_in_root(root_fd, parent or "/", os.O_PATH | os.O_DIRECTORY)) as parent_fd:
        fd = os.open(
            name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=parent_fd
        )
        os.close(fd)


def _make_read_only(root_fd: int, target: str) -> None:
    _restrict(root_fd, target, syscalls.MOUNT_ATTR_RDONLY)


def _restrict(root_fd: int, target: str, attributes: int) -> None:
    with closing_fd(open_in_root(root_fd, target, os.O_PATH)) as fd:
        syscalls.mount_setattr(fd, "", syscalls.AT_EMPTY_PATH | syscalls.AT_RECURSIVE, attr_set=attributes)


def _apply_mount(root_fd: int, step: Mount) -> None:
    if step.file:
        _ensure_file(root_fd, step.target)
    else:
        ensure_directory(root_fd, step.target)
    with closing_fd(open_in_root(root_fd, step.target, os.O_PATH)) as fd:
        if step.fstype is not None:
            syscalls.mount(step.source or step.fstype, _fd_path(fd), step.fstype, step.flags, step.options)
            return
        if step.source is None:
            raise ValueError(f"bind mount of {step.target} without a source")
        flags = syscalls.MS_BIND | (syscalls.MS_REC if step.recursive else 0)
        syscalls.mount(step.source, _fd_path(fd), None, flags, None)
    if step.read_only:
        _make_read_only(root_fd, step.target)


def _apply_symlink(root_fd: int, step: Symlink) -> None:
    parent, name = os.path.split(step.path)
    ensure_directory(root_fd, parent)
    with closing_fd(open_in_root(root_fd, parent or "/", os.O_PATH | os.O_DIRECTORY)) as parent_fd:
        try:
            os.symlink(step.target, name, dir_fd=parent_fd)
        except FileExistsError:
            if os.readlink(name, dir_fd=parent_fd) != step.target:
                raise


def _apply_tree(root_fd: int, step: AttachTree, trees: Mapping[str, int]) -> None:
    tree_fd = trees.get(step.tree)
    if tree_fd is None:
        raise ValueError(f"no mount tree named {step.tree!r} for {step.target}")
    ensure_directory(root_fd, step.target)
    with closing_fd(open_in_root(root_fd, step.target, os.O_PATH | os.O_DIRECTORY)) as fd:
        flags = syscalls.MOVE_MOUNT_F_EMPTY_PATH | syscalls.MOVE_MOUNT_T_EMPTY_PATH
        syscalls.move_mount(tree_fd, "", fd, "", flags)
    if step.read_only:
        _make_read_only(root_fd, step.target)


def apply_plan(root_fd: int, steps: Sequence[Step], trees: Mapping[str, int] | None = None) -> None:
    """Apply the steps under ``root_fd`` in order; the first failure raises OSError naming the step."""
    for step in steps:
        try:
            if isinstance(step, Mount):
                _apply_mount(root_fd, step)
            elif isinstance(step, Symlink):
                _apply_symlink(root_fd, step)
            elif isinstance(step, Restrict):
                _restrict(root_fd, step.target, step.attributes)
            else:
                _apply_tree(root_fd, step, trees or {})
        except OSError as error:
            target = step.path if isinstance(step, Symlink) else step.target
            raise OSError(error.errno, f"cannot set up {target}: {error.strerror or error}") from error


def shared_tmpfs(path: str = SHARED_TMPFS_PATH) -> int:
    """mini_init's tmpfs for :data:`SHARED_MOUNT_POINT`, mounted at ``path``; an O_PATH fd of its root.

    Each instance attaches a clone of it (:func:`clone_tree`): clones of one mount share its files.
    """
    syscalls.mount("tmpfs", path, "tmpfs", syscalls.MS_NOSUID | syscalls.MS_NODEV, "mode=1777")
    # shared: a disk mounted into it later (``--mount``) shows in the distributions' copies too
    syscalls.mount(None, path, None, syscalls.MS_SHARED)
    return os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)


def folders_tmpfs(path: str = FOLDERS_TMPFS_PATH) -> int:
    """mini_init's tmpfs for the host PATH folders of its instances, mounted at ``path`` (before
    :func:`shared_tmpfs` covers it there); an O_PATH fd of its root. An instance attaches a clone
    of that mount alone (``clone_tree(fd, recursive=False)``): the tmpfs covering it is not part
    of it."""
    syscalls.mount(
        "tmpfs", path, "tmpfs", syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC, "mode=0755"
    )
    return os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)


def make_private() -> None:
    """Stop mount events of this (new) mount namespace from propagating back to its parent."""
    syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_SLAVE)


def clone_tree(path_or_fd: str | int, recursive: bool = True) -> int:
    """A detached copy of the mount tree at a path (or an fd) of the caller's mount namespace."""
    flags = syscalls.OPEN_TREE_CLONE | syscalls.OPEN_TREE_CLOEXEC
    if recursive:
        flags |= syscalls.AT_RECURSIVE
    if isinstance(path_or_fd, int):
        return syscalls.open_tree(path_or_fd, "", flags | syscalls.AT_EMPTY_PATH)
    return syscalls.open_tree(syscalls.AT_FDCWD, path_or_fd, flags)


def attach_root(tree_fd: int) -> None:
    """Attach a detached tree at :data:`STAGING`, so that it can become the root."""
    syscalls.move_mount(tree_fd, "", syscalls.AT_FDCWD, STAGING, syscalls.MOVE_MOUNT_F_EMPTY_PATH)


def mount_tmpfs_root(options: str = "mode=755") -> int:
    """A fresh tmpfs at :data:`STAGING`, returned as an fd of its root."""
    syscalls.mount("tmpfs", STAGING, "tmpfs", syscalls.MS_NOSUID | syscalls.MS_NODEV, options)
    return os.open(STAGING, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)


def pivot_into(root_fd: int) -> None:
    """Make the attached mount ``root_fd`` the root and drop the old root entirely."""
    os.fchdir(root_fd)
    syscalls.pivot_root(".", ".")
    syscalls.umount2(".", syscalls.MNT_DETACH)
    os.chdir("/")
