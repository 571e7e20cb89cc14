"""The host PATH folders of the VM's booting caller, made once for all of the VM's instances.

Each instance's init makes the folders that stand for a host PATH (``path_folders``): one link to
the launcher per executable of a host folder, about a thousand for ``/usr/bin``, and a launch
waits for them. The launches into a new VM most likely have the PATH of the caller that booted
it, so mini_init makes those generations as the VM starts: it takes the builder's lock before it
serves (:func:`hold`) and forks the builder (:meth:`HeldBuilder.start`) once the first distribution
is on its way, off the booting launch's path: a child whose root is the VM's host tree (what an
instance sees at ``interop_paths.HOST_VIEW``), filling a tmpfs of its own while that distribution
starts. Every instance attaches a read-only clone of that tmpfs at
``path_folders.VM_GENERATIONS`` and links to a generation there rather than making it; one made
while the builder still runs is waited for (``path_folders.BUILDING`` stays locked until the
builder is done or gone). A host folder that changed since the VM started is made by the
instance itself, as before.

All of the VM's instances share these files: a distribution's root could remount its clone
writable (the instances are in one user namespace), as it can write the shared ``/mnt/wsl``.
"""

from __future__ import annotations

import fcntl
import os
import stat

from pywsl.guest import forking, guest_log, path_folders
from pywsl.guest.interop_paths import LAUNCHER

__all__ = ["FORMAT", "FORMAT_FILE", "HeldBuilder", "build", "hold"]

log = guest_log.getLogger("pywsl.interop")


class HeldBuilder:
    """The builder's lock, taken (`hold`) before any instance can look at the generations, and
    held until the builder is forked (`start`: its copy then holds the lock until it is done)."""

    def __init__(self, folders: list[str], host_tree_fd: int, folder_fd: int, lock: int) -> None:
        self.folders = folders
        self.host_tree_fd = host_tree_fd
        self.folder_fd = folder_fd
        self.lock = lock

    def start(self) -> int | None:
        """Fork the builder, with the VM's host tree as its root; its pid, or None when it cannot
        start (the lock is let go: the instances then make their folders themselves)."""
        try:
            pid = os.fork()
        except OSError as error:
            log.warning("interop: the VM's host PATH folders are not made ahead: %s", error)
            self.abandon()
            return None
        if pid == 0:
            code = 1
            try:
                forking.become_child([2, self.host_tree_fd, self.folder_fd, self.lock])
                os.fchdir(self.host_tree_fd)
                os.chroot(".")  # host paths now resolve as an instance's host view resolves them
                build(self.folders, self.folder_fd, view="")
                code = 0
            finally:
                forking.exit_now(code)
        self.abandon()  # the child's copy holds the lock until it exits
        return pid

    def abandon(self) -> None:
        """Let go of this process's copy of the lock (no builder of its own any more)."""
        if self.lock >= 0:
            os.close(self.lock)
            self.lock = -1


def hold(host_path: str, host_tree_fd: int, folder_fd: int) -> HeldBuilder | None:
    """Take the lock of the builder of `host_path`'s generations in the tmpfs `folder_fd` (an fd
    of its root), to be forked later with `host_tree_fd` (the VM's host tree) as its root; None
    when there is nothing to make or the lock cannot be had (the instances then make their
    folders themselves)."""
    folders = path_folders.candidate_folders(host_path)[: path_folders.MAX_PATH_FOLDERS]
    if not folders or host_tree_fd < 0 or folder_fd < 0:
        return None
    try:
        lock = os.open(
            path_folders.BUILDING,
            os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o644,
            dir_fd=folder_fd,
        )
    except OSError as error:
        log.warning("interop: the VM's host PATH folders are not made ahead: %s", error)
        return None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # (kept folders: nobody else builds)
    except OSError as error:
        os.close(lock)
        log.warning("interop: the VM's host PATH folders are not made ahead: %s", error)
        return None
    return HeldBuilder(folders, host_tree_fd, folder_fd, lock)


def build(folders: list[str], folder_fd: int, view: str) -> None:
    """Make the generation of each host folder (seen at `view` + the folder) in `folder_fd`,
    once per real folder; a folder that cannot be listed is skipped. A generation the folder
    already holds (kept on the host from an earlier run, ``path_folder_store``) is used as it is,
    under whichever name of the same real folder; every other entry is removed (the generations
    of folders no longer on the PATH, and what a builder that was ended left half made), all of
    them when they were made for other links (:data:`FORMAT`)."""
    existing = _entries(folder_fd)
    if _read_format(folder_fd) != FORMAT:
        _remove(existing - {path_folders.BUILDING}, folder_fd)
        existing = set()
        _write_format(folder_fd)
    by_identity = {
        path_folders.folder_identity(name): name
        for name in existing
        if "@" in name and not name.endswith(".new")
    }
    keep = {path_folders.BUILDING, FORMAT_FILE}
    for host_folder in folders:
        try:
            generation = path_folders.generation_name(host_folder, view)
            identity = path_folders.folder_identity(generation)  # the same folder under another name
            if identity not in by_identity:
                real = path_folders.real_host_folder(host_folder, view)
                path_folders.generate(real, generation, folder_fd, view)
                by_identity[identity] = generation
            keep.add(by_identity[identity])
        except OSError as error:
            log.debug("interop: host folder %s skipped: %s", host_folder, error)
    _remove(existing - keep, folder_fd)  # (what was made here is kept)


# What the store's links are: generations made for another launcher path are not used.
FORMAT_FILE = ".format"
FORMAT = f"pywsl host PATH folders: links to {LAUNCHER}\n"
_FORMAT_LIMIT = 4096


def _entries(folder_fd: int) -> set[str]:
    fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=folder_fd)
    try:
        return set(os.listdir(fd))
    finally:
        os.close(fd)


def _read_format(folder_fd: int) -> str:
    try:
        fd = os.open(FORMAT_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder_fd)
    except OSError:
        return ""
    try:
        return os.read(fd, _FORMAT_LIMIT).decode(errors="replace")
    except OSError:
        return ""
    finally:
        os.close(fd)


def _write_format(folder_fd: int) -> None:
    temporary = f"{FORMAT_FILE}.{os.getpid()}.new"
    fd = os.open(
        temporary,
        os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
        0o644,
        dir_fd=folder_fd,
    )
    try:
        os.write(fd, FORMAT.encode())
    finally:
        os.close(fd)
    os.rename(temporary, FORMAT_FILE, src_dir_fd=folder_fd, dst_dir_fd=folder_fd)


def _remove(names: set[str], folder_fd: int) -> None:
    """Remove these entries of `folder_fd`: a folder with the links in it, anything else itself."""
    for name in sorted(names):
        try:
            if stat.S_ISDIR(os.lstat(name, dir_fd=folder_fd).st_mode):
                path_folders.remove_tree(name, folder_fd)
            else:
                os.unlink(name, dir_fd=folder_fd)
        except OSError as error:
            log.debug("interop: cannot remove %s of the host PATH folders: %s", name, error)
