"""The client side of a launched Linux process: what wsl.exe does once the relay is connected.

``prepare_stdio`` decides, per std stream, what the relay gets (wsl-reference §4.3 step 9 and
§8 item 13): a stream that is a terminal becomes a console stream (one end of a socket pair that
``LxProcess`` relays to and from the terminal, the Linux side gets a PTY); anything else (the
caller's file, pipe or socket, a new pipe for ``PIPE``, ``/dev/null`` for ``DEVNULL``) is passed
to the Linux process as is, with no copy. It also makes the control and exit socket pairs.

``LxProcess`` then plays wsl.exe's part:

* with a terminal on stdin, that terminal is in raw mode while the process runs (restored on
  every way out), every key goes to the PTY, and ``WindowSizeChanged`` is sent at the start and
  on every SIGWINCH;
* SIGINT, SIGTERM, SIGHUP and SIGQUIT received by the client are forwarded as the pywsl extension
  ``SignalProcess`` (to the process group of the Linux process in pipe mode, to the terminal's
  foreground group otherwise);
* ``ExitStatus`` on the exit channel is echoed back (the relay waits for the echo), the rest of
  the terminal output is copied, and the exit status is the result: the process's exit code,
  128 + the signal number when a signal killed it, 1 if the channel closed without a status
  (``exit_status_lost``: the instance or the whole VM ended under the process;
  ``instance_terminated_error`` is what wsl.exe then says).
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType, TracebackType
from typing import IO, Any, BinaryIO, Final

from pywsl.api.errors import WslError
from pywsl.api.process.terminal import RawMode, is_terminal, window_size
from pywsl.wire.errors import ChannelClosed, ProtocolError
from pywsl.wire.launch_codec import EXIT_STATUS as _EXIT_STATUS
from pywsl.wire.launch_codec import SIGNAL_PROCESS as _SIGNAL_PROCESS
from pywsl.wire.launch_codec import WINDOW_SIZE_CHANGED as _WINDOW_SIZE_CHANGED

__all__ = [
    "BUFFER_SIZE",
    "DEVNULL",
    "FORWARDED_SIGNALS",
    "PIPE",
    "STDOUT",
    "LxProcess",
    "PreparedStdio",
    "StdioSpec",
    "instance_terminated_error",
    "prepare_stdio",
]

# subprocess's values (`subprocess.PIPE` works as well): the launch path does not import subprocess.
PIPE: Final = -1
STDOUT: Final = -2
DEVNULL: Final = -3

# A std stream: None = the caller's own fd 0/1/2, an fd, a file object with a descriptor,
# PIPE, DEVNULL, or STDOUT (stderr only: the same stream as stdout).
StdioSpec = int | IO[Any] | None

BUFFER_SIZE = 64 * 1024
_PENDING_LIMIT = 4 * BUFFER_SIZE
if sys.platform == "win32":  # this module imports there; Windows launches go through ComProcess
    FORWARDED_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)
else:
    FORWARDED_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
# Exit status when the exit channel closes before an ExitStatus arrives (as wsl.exe).
_EXIT_CHANNEL_CLOSED = 1
INSTANCE_TERMINATED = "The Windows Subsystem for Linux instance has terminated."


def _timeout_expired(args: Sequence[str], timeout: float | None) -> Exception:
    """`subprocess.TimeoutExpired`, as `Popen.wait` raises it (subprocess is loaded only then)."""
    import subprocess

    return subprocess.TimeoutExpired(list(args), timeout or 0)


def _close(fd: int | None) -> None:
    if fd is not None and fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)


class _Stream:
    """One std stream as prepared for the relay."""

    __slots__ = ("client_fd", "console", "index", "owned", "relay_fd", "terminal_fd")

    def __init__(
        self,
        index: int,
        relay_fd: int,
        *,
        owned: bool = False,
        console: bool = False,
        terminal_fd: int | None = None,
        client_fd: int | None = None,
    ) -> None:
        self.index = index
        self.relay_fd = relay_fd  # what the relay gets for this stream
        self.owned = owned  # relay_fd was made here (closed once the relay has it)
        self.console = console
        self.terminal_fd = terminal_fd  # console: the caller's terminal this stream is relayed to
        self.client_fd = client_fd  # console: our socket end; PIPE: our pipe end

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"_Stream({shown})"


class PreparedStdio:
    """The descriptors of one launch, before and after the relay has its ends.

    Give ``relay_stdio``, ``relay_control_fd`` and ``relay_exit_fd`` to
    ``CoreInstance.create_process`` (the console flags, ``rows`` and ``columns`` go into the
    request), then call ``close_relay_ends()``: the client keeps only its own ends.
    """

    def __init__(
        self,
        streams: tuple[_Stream, _Stream, _Stream],
        control: socket.socket,
        exit: socket.socket,
        relay_control_fd: int,
        relay_exit_fd: int,
        rows: int = 0,
        columns: int = 0,
    ) -> None:
        self.streams = streams
        self.control = control  # client end of the control channel
        self.exit = exit  # client end of the exit channel
        self.relay_control_fd = relay_control_fd
        self.relay_exit_fd = relay_exit_fd
        self.rows = rows
        self.columns = columns
        self._relay_ends_closed = False

    def __repr__(self) -> str:
        return (
            f"PreparedStdio(streams={self.streams!r}, control={self.control!r}, exit={self.exit!r}, "
            f"relay_control_fd={self.relay_control_fd!r}, relay_exit_fd={self.relay_exit_fd!r}, "
            f"rows={self.rows!r}, columns={self.columns!r})"
        )

    @property
    def relay_stdio(self) -> tuple[int, int, int]:
        return (self.streams[0].relay_fd, self.streams[1].relay_fd, self.streams[2].relay_fd)

    @property
    def relay_fds(self) -> tuple[int, int, int, int, int]:
        """All five in CreateProcessUtilityVm order: stdin, stdout, stderr, control, exit."""
        return (*self.relay_stdio, self.relay_control_fd, self.relay_exit_fd)

    @property
    def console(self) -> tuple[bool, bool, bool]:
        return (self.streams[0].console, self.streams[1].console, self.streams[2].console)

    def close_relay_ends(self) -> None:
        """Close the descriptors made for the relay (the caller's own fds are left alone)."""
        if self._relay_ends_closed:
            return
        self._relay_ends_closed = True
        closed: set[int] = set()
        for stream in self.streams:
            if stream.owned and stream.relay_fd not in closed:
                closed.add(stream.relay_fd)
                _close(stream.relay_fd)
        _close(self.relay_control_fd)
        _close(self.relay_exit_fd)

    def close(self) -> None:
        """Close everything made here (a launch that failed)."""
        self.close_relay_ends()
        for stream in self.streams:
            _close(stream.client_fd)
            stream.client_fd = None
        self.control.close()
        self.exit.close()


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _check_fd(fd: int, what: str) -> int:
    try:
        os.fstat(fd)
    except OSError as error:
        raise ValueError(f"{what}: {fd} is not an open file descriptor ({error.strerror})") from None
    return fd


def _stream_fd(spec: int | IO[Any] | None, index: int, what: str) -> int:
    if spec is None:
        return _check_fd(index, what)
    if isinstance(spec, bool):
        raise TypeError(f"{what}: expected a file descriptor, a file object, None, PIPE or DEVNULL")
    if isinstance(spec, int):
        if spec < 0:
            raise ValueError(f"{what}: {spec} is not a file descriptor, PIPE or DEVNULL")
        return _check_fd(spec, what)
    try:
        fd = spec.fileno()
    except (AttributeError, OSError, ValueError) as error:
        raise ValueError(f"{what}: the file object has no file descriptor ({error})") from None
    return _check_fd(fd, what)


def _prepare_stream(spec: StdioSpec, index: int, made: list[int]) -> _Stream:
    what = ("stdin", "stdout", "stderr")[index]
    if spec == PIPE and not isinstance(spec, bool):
        read_end, write_end = os.pipe()
        made.extend((read_end, write_end))
        if index == 0:
            return _Stream(index, read_end, owned=True, client_fd=write_end)
        return _Stream(index, write_end, owned=True, client_fd=read_end)
    if spec == DEVNULL and not isinstance(spec, bool):
        fd = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        made.append(fd)
        return _Stream(index, fd, owned=True)
    if spec is None and not _is_open(index):
        # A caller started with this standard stream closed: the process gets /dev/null.
        fd = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        made.append(fd)
        return _Stream(index, fd, owned=True)
    fd = _stream_fd(spec, index, what)
    if not is_terminal(fd):
        return _Stream(index, fd)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    made.extend((ours.detach(), theirs.detach()))
    return _Stream(index, made[-1], owned=True, console=True, terminal_fd=fd, client_fd=made[-2])


def prepare_stdio(
    stdin: StdioSpec = None, stdout: StdioSpec = None, stderr: StdioSpec = None
) -> PreparedStdio:
    """Decide console or not per stream and make every descriptor a launch needs.

    ``None`` inherits the caller's fd 0/1/2 (``/dev/null`` if it is closed); an int is a
    descriptor; a file object gives its ``fileno()``; ``PIPE`` captures (``LxProcess.stdin``/
    ``stdout``/``stderr``); ``DEVNULL`` is ``/dev/null``; ``stderr=STDOUT`` sends stderr
    wherever stdout goes. A terminal becomes a
    console stream. Raises ValueError/TypeError for a bad argument (nothing is left open).
    """
    made: list[int] = []
    try:
        if stdin == STDOUT or stdout == STDOUT:
            raise ValueError("STDOUT can only be given for stderr")
        first = _prepare_stream(stdin, 0, made)
        second = _prepare_stream(stdout, 1, made)
        if stderr == STDOUT and not isinstance(stderr, bool):
            third = _Stream(2, second.relay_fd, console=second.console, terminal_fd=second.terminal_fd)
        else:
            third = _prepare_stream(stderr, 2, made)
        control, relay_control = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        made.extend((control.detach(), relay_control.detach()))
        exit_end, relay_exit = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        made.extend((exit_end.detach(), relay_exit.detach()))
    except BaseException:
        for fd in made:
            _close(fd)
        raise
    prepared = PreparedStdio(
        streams=(first, second, third),
        control=socket.socket(fileno=made[-4]),
        exit=socket.socket(fileno=made[-2]),
        relay_control_fd=made[-3],
        relay_exit_fd=made[-1],
    )
    size = _console_size(prepared.streams)
    if size is not None:
        prepared.rows, prepared.columns = size
    return prepared


def _console_size(streams: Sequence[_Stream]) -> tuple[int, int] | None:
    for stream in streams:
        if stream.console and stream.terminal_fd is not None:
            size = window_size(stream.terminal_fd)
            if size is not None:
                return size
    return None


# An event handler gets (readable, writable) for its descriptor.
_EventHandler = Callable[[bool, bool], None]
_Want = tuple[bool, int | None, int]  # (wanted now, descriptor, poll events)


class _Pump:
    """Pending bytes on their way from one descriptor to another."""

    def __init__(self) -> None:
        self.pending = bytearray()
        self.source_done = False
        self.sink_done = False

    @property
    def room(self) -> bool:
        return not self.source_done and len(self.pending) < _PENDING_LIMIT


class LxProcess:
    """A Linux process launched through a relay (what wsl.exe holds after CreateLxProcess).

    ``pid`` is the relay's pid (in the VM's pid namespace). ``stdin``/``stdout``/``stderr`` are
    binary file objects for streams given as ``PIPE``, else None. ``returncode`` is None until
    ``wait()``/``communicate()``/``poll()`` saw the exit status and the end of the console
    output. ``console`` says which streams are terminals (relayed through a PTY).
    """

    def __init__(self, pid: int, stdio: PreparedStdio, *, args: Sequence[str] = ()) -> None:
        stdio.close_relay_ends()
        self.pid = pid
        self.args = list(args)
        self.returncode: int | None = None
        self.console = stdio.console
        self._stdio = stdio
        from pywsl.wire.channel import MessageChannel  # AF_UNIX's ancillary data: Linux only

        self._control = MessageChannel(stdio.control, name="control")
        self._exit = MessageChannel(stdio.exit, name="exit")
        self._control_lock = threading.Lock()
        self._exit_code = _EXIT_CHANNEL_CLOSED
        self._status_received = False  # ExitStatus arrived (and was echoed)
        self._exit_done = False  # the exit channel is finished with
        streams = stdio.streams
        self._winsize_fd = next(
            (s.terminal_fd for s in streams if s.console and s.terminal_fd is not None), None
        )
        self.stdin: BinaryIO | None = None
        self.stdout: BinaryIO | None = None
        self.stderr: BinaryIO | None = None
        for stream in streams:
            if stream.console or stream.client_fd is None:
                continue
            if stream.index == 0:
                self.stdin = open(stream.client_fd, "wb")  # noqa: SIM115 - owned by this object
            elif stream.index == 1:
                self.stdout = open(stream.client_fd, "rb")  # noqa: SIM115
            else:
                self.stderr = open(stream.client_fd, "rb")  # noqa: SIM115
        # Console streams: our socket end and the caller's terminal it is relayed to.
        self._console_in: int | None = None
        self._terminal_in: int | None = None
        self._console_out: list[tuple[int, int]] = []
        for stream in streams:
            if not stream.console or stream.client_fd is None or stream.terminal_fd is None:
                continue
            os.set_blocking(stream.client_fd, False)
            if stream.index == 0:
                self._console_in, self._terminal_in = stream.client_fd, stream.terminal_fd
            else:
                self._console_out.append((stream.client_fd, stream.terminal_fd))
        self._to_relay = _Pump()  # terminal → console stdin socket
        self._input_shut = False
        self._echo = _Pump()  # console stdin socket → terminal (echo when no output is a console)
        self._outputs = {sock: _Pump() for sock, _ in self._console_out}
        # PIPE capture for communicate(): open streams and finished ones, by descriptor.
        self._capturing: dict[int, bytearray] = {}
        self._captured: dict[int, bytearray] = {}
        self._input: memoryview | None = None

    @classmethod
    def start(
        cls,
        launch: Callable[[PreparedStdio], int],
        *,
        stdin: StdioSpec = None,
        stdout: StdioSpec = None,
        stderr: StdioSpec = None,
        args: Sequence[str] = (),
    ) -> LxProcess:
        """Prepare stdio, call ``launch`` with it (it sends CreateProcessUtilityVm with
        ``relay_fds`` and returns the relay pid) and return the process. Everything made here is
        closed if ``launch`` raises."""
        prepared = prepare_stdio(stdin, stdout, stderr)
        try:
            pid = launch(prepared)
        except BaseException:
            prepared.close()
            raise
        return cls(pid, prepared, args=args)

    # -- public API -----------------------------------------------------------------------------

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the Linux process: its process group, or the terminal's foreground group."""
        if self.returncode is None and not self._status_received:
            self._send_control(_SIGNAL_PROCESS, Signal=int(sig))

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def poll(self) -> int | None:
        """The exit status if the process has finished, else None (does not block)."""
        if self.returncode is None:
            self._run(deadline=time.monotonic(), capture=False, interactive=False)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Relay the console streams until the process has exited; its exit status.

        Raises ``subprocess.TimeoutExpired`` after ``timeout`` seconds (the process goes on;
        call again). Streams given as PIPE are not read here: read them, or use
        ``communicate()``.
        """
        if self.returncode is None:
            deadline = None if timeout is None else time.monotonic() + timeout
            self._run(deadline=deadline, capture=False, interactive=True)
            if self.returncode is None:
                raise _timeout_expired(self.args, timeout)
        return self.returncode

    def communicate(
        self, input: bytes | None = None, timeout: float | None = None
    ) -> tuple[bytes | None, bytes | None]:
        """Write ``input`` to a PIPE stdin (then close it), read PIPE stdout/stderr to their end
        and wait for the exit. Returns ``(stdout, stderr)``, None for streams that are not PIPE.
        """
        if input and self.stdin is None:
            raise ValueError("communicate(input=...) needs stdin=PIPE")
        if self._input is None and self.stdin is not None and not self.stdin.closed:
            self.stdin.flush()
            self._input = memoryview(bytes(input or b""))
        for stream in (self.stdout, self.stderr):
            if stream is not None and not stream.closed:
                fd = stream.fileno()
                if fd not in self._captured:
                    self._capturing.setdefault(fd, bytearray())
        deadline = None if timeout is None else time.monotonic() + timeout
        self._run(deadline=deadline, capture=True, interactive=True)
        if self.returncode is None or not self._capture_done():
            raise _timeout_expired(self.args, timeout)
        results: list[bytes | None] = []
        for stream in (self.stdout, self.stderr):
            if stream is None:
                results.append(None)
                continue
            data = self._captured.pop(stream.fileno(), bytearray()) if not stream.closed else bytearray()
            stream.close()
            results.append(bytes(data))
        return results[0], results[1]

    def close(self) -> None:
        """Close every descriptor this object holds (the Linux process is not affected)."""
        for pipe in (self.stdin, self.stdout, self.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        self._close_console()
        self._control.close()
        self._exit.close()

    def __enter__(self) -> LxProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self.stdin is not None:
                with contextlib.suppress(OSError):
                    self.stdin.close()
            if self.returncode is None and exc_type is None:
                self.wait()
        finally:
            self.close()

    def __repr__(self) -> str:
        return f"<LxProcess relay={self.pid} returncode={self.returncode}>"

    @property
    def exit_status_lost(self) -> bool:
        """True once finished without an exit status: the relay went away before reporting one
        (its distribution was terminated, or the VM stopped or was killed)."""
        return self.returncode is not None and not self._status_received

    # -- control channel -------------------------------------------------------------------------

    def _send_control(self, message: Any, **values: Any) -> None:
        with self._control_lock, contextlib.suppress(OSError, ProtocolError, RuntimeError):
            if not self._control.closed:
                self._control.send(message, **values)

    def _send_window_size(self) -> None:
        size = window_size(self._winsize_fd) if self._winsize_fd is not None else None
        if size is not None:
            self._send_control(_WINDOW_SIZE_CHANGED, Rows=size[0], Columns=size[1])

    # -- the loop --------------------------------------------------------------------------------

    def _capture_done(self) -> bool:
        return not self._capturing and (self.stdin is None or self.stdin.closed or self._input is None)

    def _outputs_done(self) -> bool:
        """Every console socket reached its end (the relay closes them after the echo)."""
        outputs = all(pump.source_done and not pump.pending for pump in self._outputs.values())
        echo = self._console_in is None or (self._echo.source_done and not self._echo.pending)
        return outputs and echo

    def _run(self, *, deadline: float | None, capture: bool, interactive: bool) -> None:
        """Copy everything until the exit handshake and the console output are over, or ``deadline``."""
        wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        received: list[int] = []
        previous: dict[int, Any] = {}
        raw = RawMode(self._terminal_in) if interactive and self._terminal_in is not None else None

        def handler(number: int, frame: FrameType | None) -> None:
            received.append(number)
            with contextlib.suppress(OSError):
                os.write(wake_write, b"\0")

        try:
            if interactive and threading.current_thread() is threading.main_thread():
                self._forward_signals(handler, previous)
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            if raw is not None:
                raw.enter()
            if interactive:
                self._send_window_size()
            self._loop(deadline, capture, wake_read, received)
        finally:
            if raw is not None:
                raw.restore()
            for number, old in previous.items():
                signal.signal(number, old)
            _close(wake_read)
            _close(wake_write)
        if self._exit_done and self._outputs_done():
            self._finish()

    def _forward_signals(self, handler: Any, previous: dict[int, Any]) -> None:
        """Catch the signals an interactive process gets forwarded (and SIGWINCH for its size)."""
        wanted: list[int] = list(FORWARDED_SIGNALS)
        if self._winsize_fd is not None:
            wanted.append(signal.SIGWINCH)
        for number in wanted:
            previous[number] = signal.signal(number, handler)

    def _finish(self) -> None:
        if self.returncode is None:
            self.returncode = self._exit_code
            self._close_console()
            self._control.close()
            self._exit.close()

    def _close_console(self) -> None:
        for stream in self._stdio.streams:
            if stream.console:
                _close(stream.client_fd)
                stream.client_fd = None
        self._console_in = None
        self._terminal_in = None
        self._console_out = []

    def _loop(self, deadline: float | None, capture: bool, wake_read: int, received: list[int]) -> None:
        while not (self._exit_done and self._outputs_done() and (not capture or self._capture_done())):
            timeout_ms: int | None = None
            if deadline is not None:
                timeout_ms = max(0, math.ceil((deadline - time.monotonic()) * 1000))
            poller = select.poll()
            for fd, events in self._interest(capture, wake_read).items():
                poller.register(fd, events)
            routes = self._routes(wake_read, received)
            for fd, events in poller.poll(timeout_ms):
                _dispatch(routes.get(fd, ()), events)
            if self._to_relay.source_done and not self._to_relay.pending and not self._input_shut:
                self._shutdown_console_input()
            if deadline is not None and time.monotonic() >= deadline:
                return

    def _interest(self, capture: bool, wake_read: int) -> dict[int, int]:
        """The poll events wanted on each descriptor now (each pump asks only for what it can take)."""
        wants: list[_Want] = [
            (True, wake_read, select.POLLIN),
            (not self._exit_done, None if self._exit_done else self._exit.fileno(), select.POLLIN),
            *self._console_interest(),
            *self._output_interest(),
            *(self._capture_interest() if capture else ()),
        ]
        interest: dict[int, int] = {}
        for wanted, fd, events in wants:
            if wanted and fd is not None:
                interest[fd] = interest.get(fd, 0) | events
        return interest

    def _console_interest(self) -> list[_Want]:
        if self._console_in is None:
            return []
        return [
            (bool(self._to_relay.room) and not self._status_received, self._terminal_in, select.POLLIN),
            (bool(self._to_relay.pending), self._console_in, select.POLLOUT),
            (bool(self._echo.room), self._console_in, select.POLLIN),
            (bool(self._echo.pending), self._terminal_in, select.POLLOUT),
        ]

    def _output_interest(self) -> list[_Want]:
        wants: list[_Want] = []
        for sock, terminal in self._console_out:
            pump = self._outputs[sock]
            wants += [(bool(pump.room), sock, select.POLLIN), (bool(pump.pending), terminal, select.POLLOUT)]
        return wants

    def _capture_interest(self) -> list[_Want]:
        feeding = self.stdin is not None and not self.stdin.closed and self._input is not None
        wants: list[_Want] = [
            (feeding, self.stdin.fileno() if feeding and self.stdin else None, select.POLLOUT)
        ]
        return wants + [(True, fd, select.POLLIN) for fd in self._capturing]

    def _routes(self, wake_read: int, received: list[int]) -> dict[int, list[_EventHandler]]:
        """Which handlers an event on each descriptor goes to, in order (each checks its own state)."""
        routes: dict[int, list[_EventHandler]] = {}

        def route(fd: int | None, handler: _EventHandler) -> None:
            if fd is not None:
                routes.setdefault(fd, []).append(handler)

        route(wake_read, lambda readable, writable: self._on_wake(wake_read, received))
        route(self._exit.fileno(), self._on_exit_channel)
        if self._console_in is not None:
            route(self._terminal_in, self._on_terminal_in)
            route(self._console_in, self._on_console_in)
        for sock, terminal in self._console_out:
            route(sock, _pump_source_handler(sock, self._outputs[sock]))
            route(terminal, _pump_sink_handler(terminal, self._outputs[sock]))
        for fd in self._capturing:
            route(fd, self._captured_handler(fd))
        if self.stdin is not None and not self.stdin.closed:
            route(self.stdin.fileno(), self._on_stdin)
        return routes

    def _on_wake(self, wake_read: int, received: list[int]) -> None:
        """A forwarded signal arrived: SIGWINCH sends the window size, the others go to the process."""
        with contextlib.suppress(OSError):
            os.read(wake_read, 256)
        while received:
            number = received.pop(0)
            if number == signal.SIGWINCH:
                self._send_window_size()
            else:
                self.send_signal(number)

    def _on_exit_channel(self, readable: bool, writable: bool) -> None:
        if readable and not self._exit_done:
            self._read_exit_status()

    def _on_terminal_in(self, readable: bool, writable: bool) -> None:
        assert self._terminal_in is not None
        if readable and self._to_relay.room and not self._status_received:
            _read_into(self._terminal_in, self._to_relay)
        if writable and self._echo.pending:
            _write_from(self._terminal_in, self._echo)

    def _on_console_in(self, readable: bool, writable: bool) -> None:
        assert self._console_in is not None
        if readable and self._echo.room:
            _read_into(self._console_in, self._echo)
        if writable and self._to_relay.pending:
            _write_from(self._console_in, self._to_relay)

    def _captured_handler(self, fd: int) -> _EventHandler:
        def handle(readable: bool, writable: bool) -> None:
            if fd in self._capturing and readable:
                self._read_captured(fd)

        return handle

    def _on_stdin(self, readable: bool, writable: bool) -> None:
        if self.stdin is not None and not self.stdin.closed and writable:
            self._write_input()

    def _shutdown_console_input(self) -> None:
        """The terminal reached end-of-file: so does the stdin socket (the relay sends VEOF)."""
        self._input_shut = True
        if self._console_in is None:
            return
        sock = socket.socket(fileno=self._console_in)
        try:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
        finally:
            sock.detach()

    def _read_captured(self, fd: int) -> None:
        try:
            data = os.read(fd, BUFFER_SIZE)
        except BlockingIOError:
            return
        if data:
            self._capturing[fd] += data
        else:
            self._captured[fd] = self._capturing.pop(fd)

    def _write_input(self) -> None:
        assert self.stdin is not None and self._input is not None
        try:
            if self._input:
                os.set_blocking(self.stdin.fileno(), False)
                written = os.write(self.stdin.fileno(), self._input[:BUFFER_SIZE])
                self._input = self._input[written:]
        except BlockingIOError:
            return
        except BrokenPipeError:
            self._input = self._input[len(self._input) :]
        if not self._input:
            self.stdin.close()

    def _read_exit_status(self) -> None:
        """ExitStatus → echo the same bytes (the relay waits for them) → the exit status."""
        self._exit_done = True
        try:
            data, _ = self._exit.receive(expect_fds=0)
            status = _EXIT_STATUS.parse(data)
            if int(status.Header.MessageType) != _EXIT_STATUS.message_type:
                return
        except (ChannelClosed, ProtocolError, OSError):
            return
        self._exit_code = int(status.ExitCode)
        self._status_received = True
        with contextlib.suppress(OSError, ProtocolError):
            self._exit.send(data)


def _dispatch(handlers: Sequence[_EventHandler], events: int) -> None:
    """One poll event to the handlers of its descriptor, as (readable, writable)."""
    readable = bool(events & (select.POLLIN | select.POLLHUP | select.POLLERR))
    writable = bool(events & (select.POLLOUT | select.POLLHUP | select.POLLERR))
    for handler in handlers:
        handler(readable, writable)


def _pump_source_handler(fd: int, pump: _Pump) -> _EventHandler:
    """Reads ``fd`` into ``pump`` while the pump has room."""

    def handle(readable: bool, writable: bool) -> None:
        if readable and pump.room:
            _read_into(fd, pump)

    return handle


def _pump_sink_handler(fd: int, pump: _Pump) -> _EventHandler:
    """Writes what ``pump`` holds to ``fd``."""

    def handle(readable: bool, writable: bool) -> None:
        if writable and pump.pending:
            _write_from(fd, pump)

    return handle


def _read_into(fd: int, pump: _Pump) -> None:
    try:
        data = os.read(fd, BUFFER_SIZE)
    except BlockingIOError:
        return
    except OSError:
        data = b""  # EIO from a hung-up terminal, a reset socket: the end of this stream
    if not data:
        pump.source_done = True
    elif not pump.sink_done:  # once the destination is gone, what comes is read and dropped
        pump.pending += data


def _write_from(fd: int, pump: _Pump) -> None:
    try:
        written = os.write(fd, pump.pending[:BUFFER_SIZE])
    except BlockingIOError:
        return
    except OSError:
        pump.pending.clear()  # nobody reads this any more: what would go there is dropped
        pump.sink_done = True
        return
    del pump.pending[:written]


def instance_terminated_error() -> WslError:
    """What wsl.exe reports when the instance a process ran in ends under it."""
    return WslError("HCS_E_TERMINATED", INSTANCE_TERMINATED, context="Wsl/Service/CreateLxProcess")
