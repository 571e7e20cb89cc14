"""Opening, reading and locking the small files the service keeps in a user's folders.

A user can replace any file in their own folders: the registry by a FIFO (an `open` that waits for
a writer forever), by a link, or by a file of many gigabytes; and they can hold its `flock` for as
long as they like. The service reads these files on the user's behalf, so it opens them without
blocking and without following a last-component link, checks with `fstat` that it got a regular
file before reading, reads at most a fixed number of bytes, and waits for a lock for a bounded time
that ends early when the request is cancelled. Every failure is a clear `WslError`.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time

from pywsl.api import cancellation
from pywsl.api.errors import WslError

__all__ = ["LOCK_TIMEOUT", "flock_bounded", "open_regular", "read_bounded"]

# How long the service waits for a lock another process of the same user holds.
LOCK_TIMEOUT = 30.0
_OPEN_FLAGS = os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY
_FIRST_DELAY = 0.001
_LONGEST_DELAY = 0.05


def open_regular(path: str | os.PathLike[str], flags: int, mode: int = 0o600, *, what: str) -> int:
    """Open ``path`` (``flags`` plus O_NONBLOCK, O_NOFOLLOW, O_CLOEXEC, O_NOCTTY) and check that it
    is a regular file; the descriptor is blocking again. FileNotFoundError passes through; a link,
    a FIFO, a device or a directory is a WslError naming ``what``."""
    try:
        fd = os.open(path, flags | _OPEN_FLAGS, mode)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise WslError("E_UNEXPECTED", f"{what} {os.fspath(path)} is a symbolic link.") from None
        if error.errno in (errno.ENXIO, errno.EISDIR, errno.EWOULDBLOCK):
            raise WslError("E_UNEXPECTED", f"{what} {os.fspath(path)} is not a regular file.") from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise WslError("E_UNEXPECTED", f"{what} {os.fspath(path)} is not a regular file.")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_bounded(fd: int, limit: int, *, what: str) -> bytes:
    """The whole content of the regular file ``fd``; a WslError when it holds more than ``limit``
    bytes (checked before reading, and while reading, since it may grow)."""
    if os.fstat(fd).st_size > limit:
        raise WslError("E_UNEXPECTED", f"{what} is larger than {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    while chunk := os.read(fd, min(1 << 20, limit + 1 - size)):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise WslError("E_UNEXPECTED", f"{what} is larger than {limit} bytes.")
    return b"".join(chunks)


def flock_bounded(fd: int, operation: int, *, what: str, timeout: float = LOCK_TIMEOUT) -> None:
    """`flock(fd, operation)`, waiting at most ``timeout`` seconds for another holder; the wait
    ends early with E_ABORT when the current request is cancelled."""
    token = cancellation.current()
    deadline = time.monotonic() + timeout
    delay = _FIRST_DELAY
    while True:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        left = deadline - time.monotonic()
        if left <= 0:
            raise WslError(
                "E_ILLEGAL_STATE_CHANGE", f"{what} stayed locked by another process for {timeout:g} seconds."
            )
        if token.wait(min(delay, left)):
            token.check()
        delay = min(delay * 2, _LONGEST_DELAY)
