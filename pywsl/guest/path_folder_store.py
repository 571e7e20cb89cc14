"""The VM's host PATH folders kept across the VM's runs: ``path-folders`` in its runtime folder.

``vm_path_folders`` makes, as the VM starts, one generation per folder of the booting caller's
host PATH: a link to the interop launcher per host program, about a thousand for ``/usr/bin``,
10 to 15 ms of work that a cold launch waited for. A generation depends on its host folder alone
(it is named after the folder's device, inode and modification time), so the generations live in
the VM's runtime folder on the host, and a VM started again only makes those of folders that
changed (the builder removes the others: the store never holds more than one VM's tmpfs did).

The VM's first process, still host root and in the host's user namespace (``vm_monitor``):

1. :func:`open_store`: once in a mount namespace of its own, but before the host tree covers the
   runtime folder, opens the store (made when missing, owned by the VM's root, mode 0755). It is
   used only where the runtime folder is root's and nobody else may enter it (so that no path
   leads another user to it) and the store is a folder of the VM's root that only it can write;
2. :func:`stage`: once the host tree covers the runtime folder, mounts a read-only bind of the
   store over the store's own folder in that tree (in a folder only the host's root can enter).
   When it then creates the VM's user namespace, the VM's copy of that mount is locked read-only,
   and so is every clone of it that an instance attaches: a distribution's root cannot make its
   view writable;
3. right after that, still with the host root's ids, it opens the VM's copy of that mount
   (:func:`open_staged`, checked to show the store) for mini_init, which attaches clones of it in
   the instances, while its builder writes, as the VM's root, through the descriptor of step 1
   alone.

Without a usable store (another owner, a runtime folder others can enter, an error), mini_init
makes a tmpfs of its own for them, as before.
"""

from __future__ import annotations

import errno
import os
import stat

from pywsl.guest import guest_log, host_view, mounts, syscalls

__all__ = ["STORE_NAME", "open_staged", "open_store", "owner_of", "stage"]

log = guest_log.getLogger("pywsl.interop")

STORE_NAME = "path-folders"
STORE_MODE = 0o755
_FOLDER = os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_ONLY = (
    syscalls.MOUNT_ATTR_RDONLY
    | syscalls.MOUNT_ATTR_NOSUID
    | syscalls.MOUNT_ATTR_NODEV
    | syscalls.MOUNT_ATTR_NOEXEC
)


def owner_of(
    uid_map: list[tuple[int, int, int]], gid_map: list[tuple[int, int, int]]
) -> tuple[int, int] | None:
    """The host uid and gid of the VM's root, None when the maps leave it unmapped."""
    ids = []
    for lines in (uid_map, gid_map):
        found = next((outside for inside, outside, count in lines if inside == 0 and count > 0), None)
        if found is None:
            return None
        ids.append(found)
    return ids[0], ids[1]


def open_store(runtime_dir: str, owner: tuple[int, int] | None) -> int:
    """A descriptor of the store in `runtime_dir` for the VM's root `owner` (made when missing),
    or -1 when it cannot be used (logged: the VM then makes the folders in a tmpfs)."""
    if owner is None:
        return -1
    try:
        runtime = os.open(runtime_dir, os.O_PATH | _FOLDER)
    except OSError as error:
        log.warning("the host PATH folders are not kept: %s: %s", runtime_dir, error)
        return -1
    try:
        return _store_in(runtime, runtime_dir, owner)
    except OSError as error:
        log.warning("the host PATH folders are not kept: %s", error)
        return -1
    finally:
        os.close(runtime)


def _store_in(runtime: int, runtime_dir: str, owner: tuple[int, int]) -> int:
    folder = os.fstat(runtime)
    if folder.st_uid != 0 or folder.st_mode & 0o077:
        raise OSError(errno.EPERM, f"{runtime_dir} is not root's alone")
    made = False
    try:
        os.mkdir(STORE_NAME, 0o700, dir_fd=runtime)
        made = True
    except FileExistsError:
        pass
    fd = os.open(STORE_NAME, os.O_RDONLY | _FOLDER, dir_fd=runtime)
    try:
        if made:
            os.fchown(fd, *owner)
            os.fchmod(fd, STORE_MODE)
        info = os.fstat(fd)
        if (info.st_uid, info.st_gid) != owner:
            raise OSError(
                errno.EPERM, f"{STORE_NAME} belongs to {info.st_uid}:{info.st_gid}, not the VM's root"
            )
        if stat.S_IMODE(info.st_mode) != STORE_MODE:  # (a folder: opened with O_DIRECTORY)
            raise OSError(errno.EPERM, f"{STORE_NAME} is not of mode {STORE_MODE:o}")
    except BaseException:
        os.close(fd)
        raise
    return fd


def stage(store: int, runtime_dir: str) -> bool:
    """Once the host tree covers `runtime_dir` (``host_view``), mount a read-only bind of the
    store over the store's own folder inside that tree (which only the host's root can reach);
    False, logged, when that fails."""
    try:
        target = _in_host_tree(runtime_dir)
    except OSError as error:
        log.warning("the host PATH folders are not kept: %s", error)
        return False
    try:
        _check_same(target, store, "the host tree's copy of the store")
        tree = mounts.clone_tree(store, recursive=False)
        try:
            syscalls.mount_setattr(tree, "", syscalls.AT_EMPTY_PATH, attr_set=_READ_ONLY)
            syscalls.move_mount(
                tree, "", target, "", syscalls.MOVE_MOUNT_F_EMPTY_PATH | syscalls.MOVE_MOUNT_T_EMPTY_PATH
            )
        finally:
            os.close(tree)
    except OSError as error:
        log.warning("the host PATH folders are not kept: %s", error)
        return False
    finally:
        os.close(target)
    return True


def open_staged(store: int, runtime_dir: str) -> int:
    """Right after the VM's namespaces are made, while this process still has the host root's ids
    (as ``host_view.open_host_tree``): an O_PATH descriptor of the VM's copy of the staged
    read-only mount, checked to show the store."""
    fd = _in_host_tree(runtime_dir)
    try:
        _check_same(fd, store, "the staged store")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _in_host_tree(runtime_dir: str) -> int:
    """An O_PATH descriptor of the store's folder as the host tree at `runtime_dir` shows it."""
    root = os.open(host_view.host_tree_path(runtime_dir), os.O_PATH | _FOLDER)
    try:
        inside = os.path.join(runtime_dir.lstrip("/"), STORE_NAME)
        return syscalls.openat2(
            root, inside, os.O_PATH | _FOLDER, syscalls.RESOLVE_NO_SYMLINKS | syscalls.RESOLVE_BENEATH
        )
    finally:
        os.close(root)


def _check_same(fd: int, store: int, what: str) -> None:
    here, expected = os.fstat(fd), os.fstat(store)
    if (here.st_dev, here.st_ino) != (expected.st_dev, expected.st_ino):
        raise OSError(errno.EINVAL, f"{what} is another folder")
