"""Directory descriptors for the VM: a distribution's folder opened without following symlinks.

WSL hands its utility VM a disk; the namespaces backend hands mini_init an open directory
(``LaunchInit``, ``Import``, ``Export``). Whoever opens it for a user must not let a symlink
planted in the user's tree redirect it: ``open_beneath`` opens a trusted anchor folder (symlinks
allowed there, it is the user's own setting) and then walks every component below it with
``O_NOFOLLOW``, one ``openat`` at a time, so that the descriptor it returns is the directory the
path names and nothing else. The caller runs it with the user's rights.

``renameat2`` (``RENAME_NOREPLACE``, ``RENAME_EXCHANGE``) and ``is_empty_directory`` serve the
service's checked changes to a user's tree (``pywsl.api.files.owned_tree``).
"""

from __future__ import annotations

import errno
import functools
import os
import platform
import stat
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ctypes

_WALK_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class SymlinkInPath(OSError):
    """A component of the path is a symbolic link (``errno`` ELOOP)."""


def parts_below(anchor: os.PathLike[str] | str, path: os.PathLike[str] | str) -> list[str] | None:
    """The components of ``path`` below ``anchor`` (both made absolute and normalized, without
    resolving links); [] for the anchor itself, None when ``path`` is not below ``anchor``."""
    top = PurePosixPath(os.path.normpath(os.path.abspath(anchor)))
    target = PurePosixPath(os.path.normpath(os.path.abspath(path)))
    if target == top:
        return []
    if top not in target.parents:
        return None
    return list(target.relative_to(top).parts)


def open_child(parent_fd: int, name: str, shown: str = "") -> int:
    """``name`` in ``parent_fd`` as an O_PATH directory descriptor; never through a symlink."""
    if not name or "/" in name or name in (".", ".."):
        raise OSError(errno.EINVAL, f"invalid folder name {name!r}")
    try:
        return os.open(name, _WALK_FLAGS, dir_fd=parent_fd)
    except NotADirectoryError:
        info = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        if stat.S_ISLNK(info.st_mode):
            raise SymlinkInPath(errno.ELOOP, "is a symbolic link", shown or name) from None
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", shown or name) from None
    except OSError as error:
        raise type(error)(error.errno, error.strerror, shown or name) from None


def open_beneath(anchor: os.PathLike[str] | str, parts: Sequence[str]) -> int:
    """An O_PATH descriptor of ``anchor/parts...``: the anchor is opened as it is (following
    symlinks), each part below it with ``O_NOFOLLOW`` (SymlinkInPath when one is a link)."""
    fd = os.open(anchor, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    shown = os.fspath(anchor)
    try:
        for name in parts:
            shown = os.path.join(shown, name)
            child = open_child(fd, name, shown)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


# renameat2(2) flags and system call numbers (glibc's wrapper is not in every libc Python links).
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
_SYS_RENAMEAT2 = {
    "x86_64": 316,
    "aarch64": 276,
    "arm64": 276,
    "riscv64": 276,
    "loongarch64": 276,
    "ppc64le": 357,
    "ppc64": 357,
    "s390x": 347,
}
_AT_FDCWD = -100


def renameat2(
    old_dir_fd: int | None, old_name: str, new_dir_fd: int | None, new_name: str, flags: int
) -> None:
    """``renameat2(2)``: a rename with ``RENAME_NOREPLACE`` or ``RENAME_EXCHANGE`` (None for a
    descriptor means the current folder)."""
    number = _SYS_RENAMEAT2.get(platform.machine())
    if number is None:
        raise OSError(errno.ENOSYS, f"renameat2: unknown system call number on {platform.machine()}")
    import ctypes  # only here: a launch does not load it

    libc = _libc()
    result = libc.syscall(
        ctypes.c_long(number),
        ctypes.c_int(_AT_FDCWD if old_dir_fd is None else old_dir_fd),
        os.fsencode(old_name),
        ctypes.c_int(_AT_FDCWD if new_dir_fd is None else new_dir_fd),
        os.fsencode(new_name),
        ctypes.c_uint(flags),
    )
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), old_name)


@functools.cache
def _libc() -> ctypes.CDLL:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def is_empty_directory(fd: int) -> bool:
    """True when the directory open as ``fd`` (not ``O_PATH``) holds nothing."""
    with os.scandir(fd) as entries:
        return next(entries, None) is None
