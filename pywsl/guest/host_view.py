"""What the utility VM sees of the host: a read-only ``/sys`` and a masked copy of the host's tree.

WSL's utility VM runs its own kernel, so nothing a distribution unmounts can reveal Windows.
pywsl's VM shares the host's kernel and mounts: a distribution's root is root of its own user
namespace and may unmount, remount or move any mount it made itself, so every mount that hides
host state must be one it cannot touch. The kernel gives that guarantee to mounts that a mount
namespace *inherited across a user namespace*: when a mount namespace is copied into a less
privileged user namespace, every mount in it is locked to its parent (it cannot be unmounted or
moved on its own) and its read-only, nosuid, nodev and noexec flags are locked too. Copies of
locked mounts (``open_tree`` clones, recursive binds) stay locked.

So the VM's first process, still in the host's user namespace, enters a mount namespace of its
own and prepares there, before it creates the VM's user namespace (:func:`prepare`):

* ``/sys`` read-only, recursively. The VM's ``/sys`` is then locked read-only, and so is every
  bind of it and every new sysfs the VM mounts (the kernel copies the lock from the visible
  sysfs it requires for such a mount);
* the *host tree* that distributions see at ``/mnt/host``: a private recursive copy of ``/``,
  ``nosuid`` and ``nodev``, whose ``proc``, ``sys`` and ``dev`` are covered by empty read-only
  tmpfs masks. It is attached at the VM's runtime folder (:data:`host_tree_path`), where the host
  keeps a root-only folder and where ``mini_init`` finds it at start. Being private, it never
  receives host mounts made later, which would carry neither ``nosuid`` nor ``nodev``.
"""

from __future__ import annotations

import errno
import os
import stat

from pywsl.guest import mounts, syscalls
from pywsl.lean_context import closing_fd

# Which host folders the host tree hides: the host's processes, its sysfs and its device nodes.
MASKED = ("proc", "sys", "dev")
MASK_OPTIONS = "mode=0555,size=4k,nr_inodes=16"
_MASK_FLAGS = syscalls.MS_RDONLY | syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC


def host_tree_path(runtime_dir: str) -> str:
    """Where the host tree is attached in the VM's mount namespace (the runtime folder)."""
    return runtime_dir


def prepare(runtime_dir: str) -> None:
    """Enter a new mount namespace (host user namespace) and prepare the VM's view of the host
    (:func:`enter`, then :func:`attach_host_tree`).

    Runs in the process that is about to create the VM's user namespace; raises OSError when a
    step fails (the VM then does not boot).
    """
    enter()
    attach_host_tree(runtime_dir)


def enter() -> None:
    """A mount namespace of this process's own, private, with ``/sys`` read-only (first step)."""
    syscalls.unshare(syscalls.CLONE_NEWNS)
    mounts.make_private()
    _make_sys_read_only()


def attach_host_tree(runtime_dir: str) -> None:
    """The masked host tree over the runtime folder (after :func:`enter`): from here on the
    runtime folder's own files are out of reach by path."""
    _attach_host_tree(host_tree_path(runtime_dir))


def _make_sys_read_only() -> None:
    with closing_fd(os.open("/sys", os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)) as fd:
        syscalls.mount_setattr(
            fd, "", syscalls.AT_EMPTY_PATH | syscalls.AT_RECURSIVE, attr_set=syscalls.MOUNT_ATTR_RDONLY
        )


def _attach_host_tree(path: str) -> None:
    tree = mounts.clone_tree("/")
    try:
        syscalls.mount_setattr(
            tree,
            "",
            syscalls.AT_EMPTY_PATH | syscalls.AT_RECURSIVE,
            attr_set=syscalls.MOUNT_ATTR_NOSUID | syscalls.MOUNT_ATTR_NODEV,
            propagation=syscalls.MS_PRIVATE,
        )
        with closing_fd(os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)) as target:
            syscalls.move_mount(
                tree, "", target, "", syscalls.MOVE_MOUNT_F_EMPTY_PATH | syscalls.MOVE_MOUNT_T_EMPTY_PATH
            )
    finally:
        os.close(tree)
    with closing_fd(os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)) as root:
        for name in MASKED:
            _mask(root, name)


def _mask(root: int, name: str) -> None:
    """Cover ``root/name`` (a directory of the host tree) with an empty read-only tmpfs."""
    try:
        fd = syscalls.openat2(
            root,
            name,
            os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW,
            syscalls.RESOLVE_NO_SYMLINKS | syscalls.RESOLVE_BENEATH,
        )
    except OSError as error:
        if error.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return  # nothing of the host there to hide
        raise
    with closing_fd(fd):
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            return
        syscalls.mount("tmpfs", f"/proc/self/fd/{fd}", "tmpfs", _MASK_FLAGS, MASK_OPTIONS)


def open_host_tree(runtime_dir: str) -> int:
    """An O_PATH fd of the host tree in the VM's mount namespace, checked to be a copy of ``/``.

    Called right after the VM's namespaces are created, while the caller still has the host
    root's ids: the runtime folder is root's alone, and the VM's root cannot enter it later.
    """
    fd = os.open(host_tree_path(runtime_dir), os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        here, root = os.fstat(fd), os.stat("/")
        if (here.st_dev, here.st_ino) != (root.st_dev, root.st_ino):
            raise OSError(errno.EINVAL, f"{runtime_dir} does not hold the host tree")
    except BaseException:
        os.close(fd)
        raise
    return fd
