"""The client's terminal: raw mode and window size, as wsl.exe sets up its console.

wsl.exe switches its console to virtual-terminal input without line editing or echo while a Linux
process runs, so every key (Ctrl-C included) reaches the PTY inside the distribution, and it
reports the console size in ``CreateProcessUtilityVm`` and ``WindowSizeChanged``. On a Linux
host the same is a raw-mode termios on the caller's terminal and ``TIOCGWINSZ``. On Windows the
COM client sets the console mode itself (`pywsl.api.com.win32`); this module only imports there.
"""

from __future__ import annotations

import contextlib
import os
import struct
import sys
from types import TracebackType
from typing import Any

__all__ = ["RawMode", "is_terminal", "make_raw", "window_size"]

_WINSIZE = struct.Struct("HHHH")
# termios.tcgetattr's list: iflag, oflag, cflag, lflag, ispeed, ospeed, cc
_IFLAG, _OFLAG, _CFLAG, _LFLAG, _CC = 0, 1, 2, 3, 6

if sys.platform != "win32":
    import fcntl
    import termios

TermiosAttributes = list[Any]


def is_terminal(fd: int) -> bool:
    """Whether ``fd`` is an open terminal (what wsl.exe calls a console handle)."""
    try:
        return os.isatty(fd)
    except OSError:
        return False


def window_size(fd: int) -> tuple[int, int] | None:
    """``(rows, columns)`` of the terminal on ``fd``, or None if it is not a terminal."""
    try:
        data = fcntl.ioctl(fd, termios.TIOCGWINSZ, bytes(_WINSIZE.size))
    except OSError:
        return None
    rows, columns, _, _ = _WINSIZE.unpack(data)
    return rows, columns


def make_raw(attributes: TermiosAttributes) -> TermiosAttributes:
    """A copy of ``attributes`` changed as ``cfmakeraw`` does."""
    raw: TermiosAttributes = list(attributes)
    iflag, oflag, cflag, lflag = (int(raw[index]) for index in (_IFLAG, _OFLAG, _CFLAG, _LFLAG))
    iflag &= ~(
        termios.IGNBRK
        | termios.BRKINT
        | termios.PARMRK
        | termios.ISTRIP
        | termios.INLCR
        | termios.IGNCR
        | termios.ICRNL
        | termios.IXON
    )
    oflag &= ~termios.OPOST
    lflag &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.ISIG | termios.IEXTEN)
    cflag &= ~(termios.CSIZE | termios.PARENB)
    cflag |= termios.CS8
    raw[_IFLAG], raw[_OFLAG], raw[_CFLAG], raw[_LFLAG] = iflag, oflag, cflag, lflag
    cc = list(raw[_CC])
    cc[termios.VMIN] = 1
    cc[termios.VTIME] = 0
    raw[_CC] = cc
    return raw


class RawMode:
    """Context manager: the terminal on ``fd`` in raw mode, its settings restored on exit.

    ``restore()`` may be called more than once (and from a signal path); only the first call
    after ``enter()`` changes anything. A descriptor that is not a terminal is left alone.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._saved: TermiosAttributes | None = None

    @property
    def active(self) -> bool:
        return self._saved is not None

    def enter(self) -> None:
        if self._saved is not None:
            return
        try:
            saved: TermiosAttributes = termios.tcgetattr(self.fd)
        except termios.error:
            return
        termios.tcsetattr(self.fd, termios.TCSADRAIN, make_raw(saved))
        self._saved = saved

    def restore(self) -> None:
        saved, self._saved = self._saved, None
        if saved is None:
            return
        # A terminal that went away (hangup) has nothing left to restore.
        with contextlib.suppress(termios.error):
            termios.tcsetattr(self.fd, termios.TCSADRAIN, saved)

    def __enter__(self) -> RawMode:
        self.enter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.restore()
