"""Safe access to files of a distribution's root filesystem from outside it.

WSL's mini_init ``chroot``s into a freshly extracted distribution before it reads
``/etc/os-release`` or checks for ``/bin/sh``, so that symlinks in an untrusted tree resolve inside
it. pywsl does the same without a chroot: ``openat2`` with ``RESOLVE_IN_ROOT`` resolves a path as if
the directory were ``/`` (absolute symlinks and ``..`` stay inside), and every read is bounded.
"""

from __future__ import annotations

import os
import stat

from pywsl.guest import syscalls
from pywsl.lean_context import suppress

_RESOLVE = syscalls.RESOLVE_IN_ROOT | syscalls.RESOLVE_NO_MAGICLINKS


def open_in_root(root_fd: int, path: str, flags: int = os.O_RDONLY, mode: int = 0) -> int:
    """Open ``path`` (absolute or relative) inside the tree ``root_fd`` as if it were ``/``."""
    return syscalls.openat2(root_fd, path.lstrip("/") or ".", flags | os.O_CLOEXEC, _RESOLVE, mode)


def exists_in_root(root_fd: int, path: str) -> bool:
    try:
        fd = open_in_root(root_fd, path, os.O_PATH)
    except OSError:
        return False
    os.close(fd)
    return True


def read_in_root(root_fd: int, path: str, limit: int) -> bytes | None:
    """At most ``limit`` bytes of a regular file inside the tree, or None if it is not one.

    A file larger than ``limit`` is an error (ValueError), never silently truncated.
    """
    try:
        fd = open_in_root(root_fd, path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return read_bounded(fd, limit, path)
    finally:
        os.close(fd)


def read_bounded(fd: int, limit: int, shown: str = "") -> bytes:
    """Everything `fd` holds, at most `limit` bytes: ValueError for more (never truncated)."""
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = os.read(fd, min(65536, limit + 1 - total))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            raise ValueError(f"{shown + ': ' if shown else ''}larger than {limit} bytes")


def write_file_atomic(path: str, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` by a new regular file (a symlink at ``path`` is replaced, not followed),
    unless it already is exactly that file: a regular file of this process's user and group, with
    one name, the mode and the content. A distribution's start then writes nothing when its
    ``/etc/hostname``, ``/etc/hosts`` and ``/etc/resolv.conf`` did not change: a rename over a file
    waits for the filesystem's journal, and on ext4 (``auto_da_alloc``) writes the new file out."""
    if _already(path, data, mode):
        return
    directory, name = os.path.split(path)
    temporary = os.path.join(directory or ".", f".{name}.pywsl-new")
    with suppress(FileNotFoundError):
        os.unlink(temporary)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    try:
        os.rename(temporary, path)
    except OSError:
        with suppress(OSError):
            os.unlink(temporary)
        raise


def _already(path: str, data: bytes, mode: int) -> bool:
    """Whether `path` is a regular file (not a link) of this process's user and group, with one
    name, exactly `mode` and `data`. Nothing but a regular file is opened (no device, FIFO or link)."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        info = os.fstat(fd)
        if not (
            stat.S_ISREG(info.st_mode)
            and stat.S_IMODE(info.st_mode) == mode
            and (info.st_uid, info.st_gid) == (os.geteuid(), os.getegid())
            and info.st_nlink == 1
            and info.st_size == len(data)
        ):
            return False
        return read_bounded(fd, len(data)) == data
    except (OSError, ValueError):
        return False
    finally:
        os.close(fd)
