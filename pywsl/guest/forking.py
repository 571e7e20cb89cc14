"""Helpers for the guest's forks: every role is a fork of one Python process, as WSL's ``/init`` is.

A forked role must hold only the file descriptors it serves: a stray copy of another instance's
channel would keep that channel open after its instance has gone, and the host would never see
the close that means "terminated". :func:`become_child` closes everything else and resets the
parent's signal handling; children end with ``os._exit`` so that no finalizer of the parent's
objects ever runs in them.
"""

from __future__ import annotations

import os
import struct
import sys
from collections.abc import Iterable

from pywsl.guest import lean_signal as signal
from pywsl.lean_context import suppress

_HANDLED_SIGNALS = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE)
MAX_FD = 1 << 20


def close_other_fds(keep: Iterable[int]) -> None:
    """Close every descriptor above 2 except ``keep``."""
    low = 3
    for fd in sorted({fd for fd in keep if fd >= 3}):
        if fd > low:
            os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, MAX_FD)


def become_child(keep: Iterable[int]) -> None:
    """Right after ``fork()``: default signal handling, no wakeup fd, only ``keep`` open."""
    with suppress(ValueError, OSError):
        signal.set_wakeup_fd(-1)
    for number in _HANDLED_SIGNALS:
        signal.signal(number, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    close_other_fds(keep)


def exit_now(code: int) -> None:
    """Leave a forked child at once (no finalizers, no atexit, buffered output flushed)."""
    with suppress(Exception):
        sys.stdout.flush()
    with suppress(Exception):
        sys.stderr.flush()
    os._exit(code)


def exit_code(status: int) -> int:
    """A wait status as an exit code: the exit status, or 128 + the signal number."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1


def reap_children() -> tuple[list[tuple[int, int]], bool]:
    """Collect every child that has exited, without blocking.

    Returns the ``(pid, wait status)`` pairs and whether any child is still running.
    """
    reaped: list[tuple[int, int]] = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped, False
        if pid == 0:
            return reaped, True
        reaped.append((pid, status))


def wait_for(pid: int) -> int:
    """Wait for one child and return its exit code (as :func:`exit_code`)."""
    while True:
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            return 1
        except InterruptedError:
            continue
        return exit_code(status)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def read_u32(fd: int) -> int | None:
    """A little-endian uint32 from a pipe, or None at end of file."""
    data = b""
    while len(data) < 4:
        chunk = os.read(fd, 4 - len(data))
        if not chunk:
            return None
        data += chunk
    return int(struct.unpack("<I", data)[0])
