"""A pseudoconsole for a host program run from inside a distribution (WSL's ``CreatePseudoconsole``).

The caller's terminal is the controlling terminal of the caller's session inside the
distribution; it cannot be the host program's too without being taken from the caller. So, as
WSL gives a Windows program started from a Linux terminal a pseudoconsole of its own, the interop
worker opens a new terminal on the host (``openpty``), as the owner:

* the program's session is started on its slave (``posix_spawn`` with ``setsid`` opens the slave
  by path: it becomes the session's controlling terminal, the program's process group its
  foreground group), for each of stdin, stdout and stderr that is the caller's terminal; the
  others (pipes, files) stay what the caller passed;
* the worker relays bytes: the caller's terminal (raw while the client waits) to the master, the
  master to the caller's terminal; window sizes from the client are set on the master (the
  kernel sends the program ``SIGWINCH``);
* Ctrl-C, Ctrl-Z and the other keys reach the program through its own terminal's line
  discipline, as on a host terminal.

Only the master is non-blocking: the caller's descriptors are shared with the caller and stay
as they are. Input is read from the caller only when the master can take it, output from the
master only when the caller's terminal can take it, so neither side can block the other.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import termios
from collections.abc import Sequence

from pywsl.lean_context import suppress

__all__ = ["Pseudoconsole"]

CHUNK = 4096
_WINSIZE = struct.Struct("HHHH")


class Pseudoconsole:
    """A host terminal standing in for the caller's, and the relay between them."""

    def __init__(self, stdio: Sequence[int], rows: int, columns: int) -> None:
        self.terminals = [index for index, fd in enumerate(stdio) if os.isatty(fd)]
        if not self.terminals:
            raise OSError(errno.ENOTTY, "none of the caller's descriptors is a terminal")
        self.master = self.slave = self.input = -1
        # Copies of the caller's terminal (the received descriptors are closed once the program runs).
        self.output = os.dup(stdio[self.terminals[0]])
        try:
            self.input = os.dup(stdio[0]) if 0 in self.terminals else -1
            self.master, self.slave = os.openpty()
            self.slave_path = os.ttyname(self.slave)
            os.set_blocking(self.master, False)
            if self.input < 0:
                # The caller's terminal keeps its own output processing: no second "\r\n".
                mode = termios.tcgetattr(self.slave)
                mode[1] &= ~termios.OPOST
                termios.tcsetattr(self.slave, termios.TCSANOW, mode)
            self.resize(rows, columns)
        except BaseException:
            self.close()
            raise
        self.to_master = b""
        self.to_caller = b""
        self.master_open = True

    def file_actions(self, stdio: Sequence[int]) -> list[tuple[int, ...] | tuple[int, int, str, int, int]]:
        """``posix_spawn`` file actions: the slave (opened by path: the controlling terminal of the
        new session) for the caller's terminals, the caller's own descriptors for the rest."""
        actions: list[tuple[int, ...] | tuple[int, int, str, int, int]] = []
        first = self.terminals[0]
        actions.append((os.POSIX_SPAWN_OPEN, first, self.slave_path, os.O_RDWR, 0))
        for target, fd in enumerate(stdio):
            if target == first:
                continue
            source = first if target in self.terminals else fd
            actions.append((os.POSIX_SPAWN_DUP2, source, target))
        return actions

    def started(self) -> None:
        """The program has the slave: the worker's copy goes (the master then sees the end)."""
        if self.slave >= 0:
            os.close(self.slave)
            self.slave = -1

    def resize(self, rows: int, columns: int) -> None:
        if rows > 0 and columns > 0:
            with suppress(OSError):
                fcntl.ioctl(self.master, termios.TIOCSWINSZ, _WINSIZE.pack(rows, columns, 0, 0))

    def readers(self) -> list[int]:
        fds = []
        if self.master_open and not self.to_caller:
            fds.append(self.master)
        if self.input >= 0 and not self.to_master:
            fds.append(self.input)
        return fds

    def writers(self) -> list[int]:
        fds = []
        if self.to_master and self.master_open:
            fds.append(self.master)
        if self.to_caller:
            fds.append(self.output)
        return fds

    def relay(self, readable: Sequence[int], writable: Sequence[int]) -> None:
        """One step of the relay for what ``select`` found ready."""
        if self.master in readable:
            self.to_caller = self._read(self.master)
        if self.input >= 0 and self.input in readable:
            self._read_input()
        if self.master in writable and self.to_master:
            written = self._write(self.master, self.to_master)
            self.to_master = self.to_master[written:] if written >= 0 else b""
        if self.output in writable and self.to_caller:
            written = self._write(self.output, self.to_caller)
            self.to_caller = self.to_caller[written:] if written >= 0 else b""

    def _read_input(self) -> None:
        """Keys from the caller's terminal. An empty read is ^D on a terminal in canonical mode
        (passed on as ^D) and a hang-up otherwise (no more input is read)."""
        try:
            data = os.read(self.input, CHUNK)
            if not data and termios.tcgetattr(self.input)[3] & termios.ICANON:
                data = b"\x04"
        except (OSError, termios.error):
            data = b""
        if data:
            self.to_master = data
        else:
            os.close(self.input)
            self.input = -1

    def drain(self) -> None:
        """After the program exited: what its terminal still holds, to the caller's terminal."""
        while self.master_open:
            if not self.to_caller:
                self.to_caller = self._read(self.master)
                if not self.to_caller:
                    return
            written = self._write(self.output, self.to_caller)
            if written <= 0:
                return
            self.to_caller = self.to_caller[written:]

    def _read(self, fd: int) -> bytes:
        try:
            data = os.read(fd, CHUNK)
        except BlockingIOError:
            return b""
        except OSError as error:
            if fd == self.master and error.errno == errno.EIO:
                self.master_open = False  # every slave descriptor is closed
            return b""
        if not data and fd == self.master:
            self.master_open = False
        return data

    def _write(self, fd: int, data: bytes) -> int:
        try:
            return os.write(fd, data[:CHUNK])
        except BlockingIOError:
            return 0
        except OSError:
            return -1

    def close(self) -> None:
        self.started()
        for fd in (self.master, self.input, self.output):
            if fd >= 0:
                os.close(fd)
        self.master = self.input = self.output = -1
