"""The relay: WSL's per-process helper between a client and one launched Linux process.

The session leader forks one relay per ``CreateProcessUtilityVm`` (wsl-reference §4.3 steps 5-7).
The relay is a child subreaper; it forks the user's process and stays until every descendant of
it has exited. It gets five descriptors from the client: stdin, stdout, stderr, the
terminal-control channel and the exit channel.

* A std stream that is not a console is the client's own file, pipe or socket: the process gets
  it as is, nothing is copied.
* The console streams share one PTY opened from the distribution's own ``/dev/ptmx``. The relay
  copies socket [0] → PTY master and PTY master → socket [1] (or [2] when stdout is not a
  console, or back on [0] when neither output is), non-blocking with pending buffers. EOF on
  socket [0] becomes end-of-file on the terminal (VEOF at the start of a line), or a hang-up
  when the terminal is in raw mode.
* Control channel (sequence numbers ignored): ``WindowSizeChanged`` → ``TIOCSWINSZ``; the pywsl
  extension ``SignalProcess`` → the signal to the process group of the child (pipes) or to the
  terminal's foreground process group (PTY). The control channel closing means the client is
  gone: the terminal is hung up (as WSL's relay ends when socket [3] closes).
* No PTY available: the process is not started and its exit status is ``LX_INIT_TTY_LIMIT``.
* When the direct child exits, the remaining terminal output is flushed, then ``ExitStatus``
  goes on the exit channel: the exit status, or 128 + the signal number when the child was killed
  (a deliberate difference from WSL's raw wait status). After the client's echo of those bytes
  the stdio sockets are shut down; the relay keeps reaping until no descendant is left.

The child side, from fork to exec (user, environment, working directory, ``execvpe``), is
``relay_child``; ``LaunchRequest`` and ``RelayContext`` are defined there and re-exported here.
Everything here is imported before the guest enters the distribution: nothing is imported later.
"""

from __future__ import annotations

import errno
import fcntl
import gc
import os
import select
import struct
import termios
from collections.abc import Callable, Sequence

from pywsl.guest import forking, syscalls
from pywsl.guest import lean_signal as signal
from pywsl.guest.relay_child import LaunchRequest, RelayContext, next_pid, run_child, spawn_child
from pywsl.lean_context import suppress
from pywsl.wire import unix_sockets as socket
from pywsl.wire.channel import MessageChannel
from pywsl.wire.constants import LX_INIT_TTY_LIMIT
from pywsl.wire.errors import ChannelClosed, ProtocolError
from pywsl.wire.launch_codec import EXIT_STATUS as _EXIT_STATUS
from pywsl.wire.launch_codec import SIGNAL_PROCESS as _SIGNAL_PROCESS
from pywsl.wire.launch_codec import WINDOW_SIZE_CHANGED as _WINDOW_SIZE_CHANGED
from pywsl.wire.message_types import LxMessageType

TYPE_CHECKING = False  # `typing`, `dataclasses` would cost the VM's start (`records`: the same classes)
if TYPE_CHECKING:
    from dataclasses import dataclass
    from typing import NoReturn
else:
    from pywsl.records import dataclass

__all__ = [
    "BUFFER_SIZE",
    "PASSED_PIPE_ROOM",
    "LaunchRequest",
    "RelayContext",
    "RelayDescriptors",
    "give_room",
    "open_pty",
    "run_relay",
]

# Every copy moves up to this many bytes at a time; a pending buffer holds at most 4 of them.
BUFFER_SIZE = 64 * 1024
_PENDING_LIMIT = 4 * BUFFER_SIZE
# When the child exits, at most this much terminal output still waiting in the PTY is forwarded.
_FINAL_DRAIN_LIMIT = 16 * 1024 * 1024

# <asm-generic/ioctls.h> numbers (x86, arm, riscv and the other generic architectures).
_TIOCSPTLCK = 0x40045431
_TIOCGPTN = 0x80045430
_TIOCGPTPEER = 0x5441
_IUTF8 = 0o040000
_WINSIZE = struct.Struct("HHHH")

_WINDOW_SIZE_TYPE = LxMessageType.LxInitMessageWindowSizeChanged
_SIGNAL_PROCESS_TYPE = _SIGNAL_PROCESS.message_type

# A control character set to this is disabled (_POSIX_VDISABLE).
_DISABLED_CHARACTER = b"\0"


@dataclass(frozen=True)
class RelayDescriptors:
    """The five descriptors of a CreateProcessUtilityVm, in message order."""

    stdio: tuple[int, int, int]
    control: int
    exit: int

    @classmethod
    def from_list(cls, fds: Sequence[int]) -> RelayDescriptors:
        if len(fds) != 5:
            raise ValueError(
                f"expected 5 file descriptors (stdin, stdout, stderr, control, exit), got {len(fds)}"
            )
        return cls((fds[0], fds[1], fds[2]), fds[3], fds[4])

    def all(self) -> tuple[int, ...]:
        return (*self.stdio, self.control, self.exit)


def open_pty() -> tuple[int, int]:
    """A new PTY from ``/dev/ptmx`` (the caller's devpts): ``(master, slave)``, close-on-exec."""
    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(master, _TIOCSPTLCK, struct.pack("i", 0))
        try:
            slave = fcntl.ioctl(master, _TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
        except OSError as error:
            if error.errno not in (errno.EINVAL, errno.ENOTTY):
                raise
            (number,) = struct.unpack("I", fcntl.ioctl(master, _TIOCGPTN, bytes(4)))
            slave = os.open(f"/dev/pts/{number}", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except BaseException:
        os.close(master)
        raise
    return master, slave


def _set_window_size(fd: int, rows: int, columns: int) -> None:
    if rows > 0 and columns > 0:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, _WINSIZE.pack(rows, columns, 0, 0))


def _log(message: str) -> None:
    with suppress(OSError):
        os.write(2, f"pywsl relay[{os.getpid()}]: {message}\n".encode(errors="replace"))


def _close(fd: int | None) -> None:
    if fd is not None and fd >= 0:
        with suppress(OSError):
            os.close(fd)


def _shutdown(fd: int, how: int) -> None:
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return  # not a socket: closing it is all there is
    try:
        with suppress(OSError):
            sock.shutdown(how)
    finally:
        sock.detach()


# -- the caller's pipes --------------------------------------------------------------------------------

# What a pipe the caller passed as a std stream can hold at least. The launched process runs in
# the VM's scheduling group (its session's, or its cgroup's), not in the caller's: on few
# processors a pipeline through it (`producer | pywsl -- filter | consumer`) then stalls on a
# pipe of the default 64 KiB far more often than one whose stages share a group (measured: a
# 4 GiB `head | cat | cat` on two processors, 2.7 s with the middle `cat` in a session of its
# own against 2.2 s, and 2.2 s again with this room). The kernel charges the room to the pipe's
# owner and holds it to that user's pipe limits (the VM's root has no right to pass them).
PASSED_PIPE_ROOM = 256 * 1024


def give_room(fd: int) -> None:
    """Let the pipe `fd` hold `PASSED_PIPE_ROOM` bytes (or what the kernel allows the pipe's
    owner; anything that is not a pipe, or a pipe that holds that much already, is left as is)."""
    try:
        if fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ) < PASSED_PIPE_ROOM:
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PASSED_PIPE_ROOM)
    except OSError:
        pass  # not a pipe (EBADF), or over the owner's limits (EPERM): the pipe stays as it was


# -- the relay ----------------------------------------------------------------------------------------


class _Relay:
    """The relay's event loop (one per launched process)."""

    def __init__(self, request: LaunchRequest, fds: RelayDescriptors) -> None:
        self.request = request
        self.console = request.console
        self.stdio = fds.stdio
        self.master: int | None = None
        self.master_eof = False  # every slave descriptor is closed (the master reads EIO)
        self.child_pid = 0
        # console stdin socket → master
        self.input_fd: int | None = fds.stdio[0] if self.console[0] else None
        self.input_pending = bytearray()
        self.input_eof = False
        self.end_of_file_sent = False
        self.last_input = b"\n"
        # master → the socket of the first console output (or back on stdin's socket)
        self.output_fd: int | None = None
        self.output_pending = bytearray()
        self.final_drain_done = False
        self.console_sockets = [fd for fd, console in zip(fds.stdio, self.console, strict=True) if console]
        self.passed_stdio = [fd for fd, console in zip(fds.stdio, self.console, strict=True) if not console]
        for fd in self.passed_stdio:
            give_room(fd)
        control = MessageChannel(socket.socket(fileno=fds.control), name="control")
        self.control: MessageChannel | None = control
        control.ignore_sequence_numbers()
        self.exit: MessageChannel | None = MessageChannel(socket.socket(fileno=fds.exit), name="exit")
        self.exit_code: int | None = None
        self.status_sent = False
        self.finished = False  # the exit handshake is over: stdio is shut down
        self.no_children = False
        self.wake_read, self.wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        if any(self.console):
            if self.console[1]:
                self.output_fd = fds.stdio[1]
            elif self.console[2]:
                self.output_fd = fds.stdio[2]
            else:
                self.output_fd = fds.stdio[0]

    # -- setup -----------------------------------------------------------------------------------

    def start(self, context: RelayContext) -> None:
        syscalls.set_child_subreaper(True)
        signal.signal(signal.SIGCHLD, _ignore_signal)
        signal.set_wakeup_fd(self.wake_write)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
        terminal: int | None = None
        if any(self.console):
            try:
                self.master, terminal = open_pty()
            except OSError as error:
                # No terminal for the process (devpts full or missing): it does not start, and
                # the exit status says why, as WSL's LX_INIT_TTY_LIMIT.
                with suppress(OSError):
                    os.write(self.stdio[2], f"pywsl: cannot open a terminal: {error}\r\n".encode())
                self.exit_code = LX_INIT_TTY_LIMIT
                return
            attributes = termios.tcgetattr(self.master)
            attributes[0] |= _IUTF8
            termios.tcsetattr(self.master, termios.TCSANOW, attributes)
            _set_window_size(self.master, self.request.rows, self.request.columns)
        stdio = [
            terminal if console and terminal is not None else fd
            for fd, console in zip(self.stdio, self.console, strict=True)
        ]
        if terminal is None:
            # No terminal to make the controlling one: spawned, without a fork of the interpreter.
            pid, code = spawn_child(self.request, context, stdio, _named_after)
            if not pid:
                self.exit_code = code
        else:
            expected = next_pid()
            if expected:
                _named_after(expected)  # before the child can look (it sets up before its exec)
            pid = os.fork()
            if pid == 0:
                run_child(self.request, context, stdio, terminal)
            if pid != expected:
                _named_after(pid)
        self.child_pid = pid
        _close(terminal)
        for fd in self.passed_stdio:
            _close(fd)
        self.passed_stdio = []
        for fd in {*self.console_sockets, *([self.master] if self.master is not None else [])}:
            os.set_blocking(fd, False)

    # -- the loop --------------------------------------------------------------------------------

    def run(self) -> None:
        while not (self.finished and self.no_children):
            self._after_events()
            if self.finished and self.no_children:
                break
            interest = self._interest()
            poller = select.poll()
            for fd, events in interest.items():
                poller.register(fd, events)
            for fd, events in poller.poll():
                self._dispatch(fd, events)
        self._close_everything()

    def _interest(self) -> dict[int, int]:
        interest: dict[int, int] = {}

        def want(fd: int | None, events: int) -> None:
            if fd is not None:
                interest[fd] = interest.get(fd, 0) | events

        want(self.wake_read, select.POLLIN)
        if self.master is not None and not self.master_eof:
            drained = self.exit_code is not None and self.final_drain_done
            if self.finished or (len(self.output_pending) < _PENDING_LIMIT and not drained):
                want(self.master, select.POLLIN)
            if self.input_pending and not self.finished:
                want(self.master, select.POLLOUT)
        if self.input_fd is not None and not self.input_eof and len(self.input_pending) < _PENDING_LIMIT:
            want(self.input_fd, select.POLLIN)
        if self.output_fd is not None and self.output_pending:
            want(self.output_fd, select.POLLOUT)
        if self.control is not None and not self.finished:
            want(self.control.fileno(), select.POLLIN)
        if self.exit is not None and self.status_sent and not self.finished:
            want(self.exit.fileno(), select.POLLIN)
        return interest

    def _dispatch(self, fd: int, events: int) -> None:
        """One poll event to the handler of each role the descriptor has now (see ``_ROUTES``)."""
        readable = bool(events & (select.POLLIN | select.POLLHUP | select.POLLERR))
        writable = bool(events & (select.POLLOUT | select.POLLHUP | select.POLLERR))
        for descriptor_of, handler in _ROUTES:
            if descriptor_of(self) == fd:
                handler(self, readable, writable)

    def _on_wake(self, readable: bool, writable: bool) -> None:
        """A signal woke the loop (SIGCHLD): empty the wakeup pipe and reap."""
        with suppress(OSError):
            while os.read(self.wake_read, 256):
                pass
        self._reap()

    def _on_master(self, readable: bool, writable: bool) -> None:
        if readable:
            self._read_master()
            self._write_output()  # most of the time the socket takes it right away
        if writable and self.master is not None:
            self._write_master()

    def _on_control(self, readable: bool, writable: bool) -> None:
        if readable:
            self._read_control()

    def _on_exit_channel(self, readable: bool, writable: bool) -> None:
        if readable and self.status_sent:
            self._read_echo()

    def _on_input(self, readable: bool, writable: bool) -> None:
        if readable and not self.input_eof and len(self.input_pending) < _PENDING_LIMIT:
            self._read_input()

    def _on_output(self, readable: bool, writable: bool) -> None:
        if writable and self.output_pending:
            self._write_output()

    def _after_events(self) -> None:
        """Move the exit handshake on (each step needs the previous one and empty buffers)."""
        if self.input_eof and not self.input_pending and not self.end_of_file_sent:
            self._queue_end_of_file()
        if self.exit_code is None:
            return
        if not self.finished:
            if self.master is not None and not self.final_drain_done:
                self._final_drain()
            if self.output_pending and self.output_fd is not None:
                return
            if not self.status_sent:
                self._send_exit_status()
        if self.finished:
            self._reap()

    # -- terminal input --------------------------------------------------------------------------

    def _read_input(self) -> None:
        assert self.input_fd is not None
        try:
            data = os.read(self.input_fd, BUFFER_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.input_eof = True
            return
        if self.master is None or self.master_eof or self.finished:
            return  # nobody reads the terminal any more
        self.input_pending += data

    def _queue_end_of_file(self) -> None:
        """EOF on the stdin socket: end-of-file for the terminal's reader.

        In canonical mode VEOF at the start of a line makes read() return 0; after a partial
        line the first VEOF only completes it, so a second one follows. Only then: a VEOF nobody
        consumes stays in the terminal as a NUL byte that the next reader gets (a shell prints
        it as ``^@``). A client in raw mode sends Enter as ``\\r``, a line end once ICRNL maps it.
        A terminal in raw mode (a line editor) has no end-of-file: it is hung up, as WSL's relay
        closes the terminal when its stdin socket ends.
        """
        self.end_of_file_sent = True
        if self.master is None:
            return
        try:
            attributes = termios.tcgetattr(self.master)
        except termios.error:
            return
        if not attributes[3] & termios.ICANON:
            self._hang_up()
            return
        characters = attributes[6]
        eof = characters[termios.VEOF]
        eof = eof if isinstance(eof, bytes) else bytes([eof])
        line_ends = {b"\n", eof} | {
            character
            for character in (characters[termios.VEOL], characters[termios.VEOL2])
            if character != _DISABLED_CHARACTER
        }
        if attributes[0] & termios.ICRNL and not attributes[0] & termios.IGNCR:
            line_ends.add(b"\r")
        self.input_pending += eof if self.last_input in line_ends else eof * 2

    def _hang_up(self) -> None:
        """What the kernel does when a terminal hangs up: SIGHUP and SIGCONT to its foreground
        group and to the session leader (the child). The master stays open for the last output."""
        if self.exit_code is not None or self.child_pid <= 0 or self.master is None:
            return
        with suppress(OSError):
            group = os.tcgetpgrp(self.master)
            if group > 0:
                for number in (signal.SIGHUP, signal.SIGCONT):
                    os.killpg(group, number)
        for number in (signal.SIGHUP, signal.SIGCONT):
            with suppress(OSError):
                os.kill(self.child_pid, number)

    def _write_master(self) -> None:
        assert self.master is not None
        try:
            written = os.write(self.master, self.input_pending[:BUFFER_SIZE])
        except BlockingIOError:
            return
        except OSError:
            self.input_pending.clear()  # the terminal has no reader any more
            return
        if written:
            self.last_input = bytes(self.input_pending[written - 1 : written])
            del self.input_pending[:written]

    # -- terminal output -------------------------------------------------------------------------

    def _read_master(self) -> None:
        """Read what the terminal has (a PTY gives at most 4 KiB a read) up to the pending limit."""
        while self.master is not None and len(self.output_pending) < _PENDING_LIMIT:
            try:
                data = os.read(self.master, BUFFER_SIZE)
            except BlockingIOError:
                return
            except OSError:
                data = b""  # EIO: no process has the terminal open any more
            if not data:
                if self.exit_code is None:
                    # Closing the master now would hang up the child while it is still exiting
                    # (SIGHUP): keep it, just stop reading it, until the child has been reaped.
                    self.master_eof = True
                    self.input_pending.clear()
                else:
                    self._close_master()
                return
            if self.finished or self.output_fd is None:
                continue  # nobody gets this output any more: read and drop it
            self.output_pending += data

    def _final_drain(self) -> None:
        """After the child exited: take what the terminal still holds, then stop reading it."""
        self.final_drain_done = True
        drained = 0
        while self.master is not None and drained < _FINAL_DRAIN_LIMIT:
            try:
                data = os.read(self.master, BUFFER_SIZE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._close_master()
                return
            drained += len(data)
            if self.output_fd is not None:
                self.output_pending += data

    def _write_output(self) -> None:
        while self.output_fd is not None and self.output_pending:
            try:
                written = os.write(self.output_fd, self.output_pending[:BUFFER_SIZE])
            except BlockingIOError:
                return
            except OSError:
                # The client stopped reading: its output is dropped from now on.
                self.output_pending.clear()
                self.output_fd = None
                return
            del self.output_pending[:written]

    def _close_master(self) -> None:
        _close(self.master)
        self.master = None
        self.input_pending.clear()

    # -- control and exit channels -------------------------------------------------------------

    def _read_control(self) -> None:
        assert self.control is not None
        try:
            data, fds = self.control.receive()
        except ChannelClosed:
            self._client_gone()
            return
        except (ProtocolError, OSError) as error:
            _log(f"control channel: {error}")
            self._client_gone()
            return
        for fd in fds:
            _close(fd)
        message_type = struct.unpack_from("<I", data)[0]
        handler = _CONTROL_HANDLERS.get(message_type)
        if handler is None:
            _log(f"control channel: ignoring a message of type {message_type}")
            return
        try:
            handler(self, data)
        except (ProtocolError, OSError) as error:
            _log(f"control channel: {error}")

    def _on_window_size_changed(self, data: bytes) -> None:
        size = _WINDOW_SIZE_CHANGED.parse(data)
        if self.master is not None:
            _set_window_size(self.master, int(size.Rows), int(size.Columns))

    def _on_signal_process(self, data: bytes) -> None:
        self._signal(int(_SIGNAL_PROCESS.parse(data).Signal))

    def _signal(self, number: int) -> None:
        if not 0 < number < signal.NSIG:
            _log(f"control channel: {number} is not a signal number")
            return
        if self.exit_code is not None or self.child_pid <= 0:
            return
        group = self.child_pid
        if self.master is not None:
            with suppress(OSError):
                # 0 = no foreground group: never let that become killpg(0), the relay's own group
                group = os.tcgetpgrp(self.master) or self.child_pid
        try:
            os.killpg(group, number)
        except ProcessLookupError:
            # The child has not called setsid() yet: it is still in the relay's group.
            with suppress(ProcessLookupError):
                os.kill(self.child_pid, number)

    def _client_gone(self) -> None:
        """The control channel closed: the client went away; hang the terminal up."""
        if self.control is not None:
            self.control.close()
            self.control = None
        if self.exit_code is None:
            self._close_master()
            self.output_pending.clear()
            self.output_fd = None

    def _send_exit_status(self) -> None:
        assert self.exit_code is not None
        self.status_sent = True
        if self.exit is None:
            self._finish()
            return
        try:
            self.exit.send(_EXIT_STATUS, ExitCode=self.exit_code)
        except (OSError, ProtocolError):
            self._finish()

    def _read_echo(self) -> None:
        assert self.exit is not None
        with suppress(ChannelClosed, ProtocolError, OSError):
            _, fds = self.exit.receive()
            for fd in fds:
                _close(fd)
        self._finish()

    def _finish(self) -> None:
        """The exit handshake is over: shut down stdio (stdin for reading, outputs for writing)."""
        self.finished = True
        self.output_pending.clear()
        self.input_pending.clear()
        for fd in self.console_sockets:
            _shutdown(fd, socket.SHUT_RDWR)
            _close(fd)
        self.console_sockets = []
        self.input_fd = None
        self.output_fd = None
        for channel in (self.control, self.exit):
            if channel is not None:
                channel.close()
        self.control = None
        self.exit = None

    # -- children --------------------------------------------------------------------------------

    def _reap(self) -> None:
        reaped, running = forking.reap_children()
        self.no_children = not running
        for pid, status in reaped:
            if pid == self.child_pid:
                self.exit_code = forking.exit_code(status)

    def _close_everything(self) -> None:
        self._close_master()
        if not self.finished:
            self._finish()
        signal.set_wakeup_fd(-1)
        _close(self.wake_read)
        _close(self.wake_write)


# Each role a descriptor can have in the loop (the descriptor it is now, None when none) and the
# handler of an event on it, as (readable, writable); a descriptor with two roles (the stdin
# socket that also takes the output) gets both handlers, in this order.
_ROUTES: tuple[tuple[Callable[[_Relay], int | None], Callable[[_Relay, bool, bool], None]], ...] = (
    (lambda relay: relay.wake_read, _Relay._on_wake),
    (lambda relay: relay.master, _Relay._on_master),
    (lambda relay: relay.control.fileno() if relay.control is not None else None, _Relay._on_control),
    (lambda relay: relay.exit.fileno() if relay.exit is not None else None, _Relay._on_exit_channel),
    (lambda relay: relay.input_fd, _Relay._on_input),
    (lambda relay: relay.output_fd, _Relay._on_output),
)
# The handler of each message type of the control channel.
_CONTROL_HANDLERS: dict[int, Callable[[_Relay, bytes], None]] = {
    _WINDOW_SIZE_TYPE: _Relay._on_window_size_changed,
    _SIGNAL_PROCESS_TYPE: _Relay._on_signal_process,
}


def _named_after(child: int) -> None:
    """The relay is called after its child, as WSL's (``Relay(N)``)."""
    syscalls.set_process_title(f"Relay({child})")


def _ignore_signal(number: int, frame: object) -> None:
    """SIGCHLD handler: its only job is to wake the loop through the wakeup descriptor."""


def run_relay(request: LaunchRequest, fds: RelayDescriptors, context: RelayContext) -> NoReturn:
    """The relay process (forked by the session leader): launch the process, relay, then exit."""
    code = 0
    try:
        signal.set_wakeup_fd(-1)
        # Collect garbage inherited from the parent now: a socket object collected later would
        # close whatever descriptor had reused its number by then. The leader froze what it had
        # before it served (`session_leader.serve`): only its few objects since then are scanned.
        gc.collect()
        forking.close_other_fds(fds.all())
        relay = _Relay(request, fds)
        relay.start(context)
        relay.run()
    except BaseException as error:
        _log(f"failed: {error!r}")
        code = 1
    os._exit(code)
