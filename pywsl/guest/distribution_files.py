"""Reading a small file of a distribution as its root, without ever waiting on it or following it out.

Used for the distribution's own configuration (``/etc/wsl.conf``, ``/etc/default/locale``): the
path is resolved inside the distribution's tree, and only a regular file of bounded size is read.
"""

from __future__ import annotations

import os
import stat

from pywsl.guest.rootfs import open_in_root, read_bounded

__all__ = ["UnusableFile", "read_regular_file"]


def _is_symlink(root_fd: int, path: str) -> bool:
    try:
        fd = open_in_root(root_fd, path, os.O_PATH | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        return stat.S_ISLNK(os.fstat(fd).st_mode)
    finally:
        os.close(fd)


class UnusableFile(Exception):
    """The file exists but is not something to read a configuration from."""

    def __init__(self, reason: str, *, not_opened: bool = False) -> None:
        super().__init__(reason)
        self.not_opened = not_opened  # the path does not open at all (C's fopen would fail too)


def read_regular_file(root_fd: int, path: str, limit: int) -> bytes | None:
    """The bytes of ``path`` inside the tree, None if absent; ``UnusableFile`` for anything else.

    The path is opened ``O_PATH`` first (opening a FIFO or a device has effects of its own), and
    only a regular file is then opened for reading, non-blocking, and read up to ``limit``.
    """
    try:
        handle = open_in_root(root_fd, path, os.O_PATH)
    except FileNotFoundError:
        if _is_symlink(root_fd, path):
            raise UnusableFile("a symbolic link to nothing in the distribution", not_opened=True) from None
        return None
    except OSError as error:
        raise UnusableFile(f"cannot be opened ({error.strerror or error})", not_opened=True) from None
    try:
        info = os.fstat(handle)
        if not stat.S_ISREG(info.st_mode):
            raise UnusableFile("not a regular file")
        if info.st_size > limit:
            raise UnusableFile(f"larger than {limit} bytes")
        try:
            fd = os.open(f"/proc/self/fd/{handle}", os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        except OSError as error:
            raise UnusableFile(f"cannot be read ({error.strerror or error})") from None
    finally:
        os.close(handle)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnusableFile("not a regular file")
        return read_bounded(fd, limit)
    except ValueError:
        raise UnusableFile(f"larger than {limit} bytes") from None
    except OSError as error:
        raise UnusableFile(f"cannot be read ({error.strerror or error})") from None
    finally:
        os.close(fd)
