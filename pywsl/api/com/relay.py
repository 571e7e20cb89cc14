"""The client side of a WSL2 process started over COM: what wsl.exe does with the five sockets.

`CreateLxProcess` returns socket handles connected to the Linux relay: stdin, stdout, stderr,
the terminal-control channel and the interop channel (wsl-reference §4.3 step 9). wsl.exe
copies its stdin to [0] and [1]/[2] to its stdout/stderr, sends `WindowSizeChanged` on [3]
whenever the console is resized, and reads [4]: `ExitStatus` is echoed back byte for byte (the
relay waits for the echo, then shuts the output sockets) and its `ExitCode` is the result.

`ComProcess` does the same with threads and blocking socket calls only (no `sendmsg`, no
`poll`: both exist on Windows' sockets), and offers the `LxProcess` interface: `wait()`,
`poll()`, `communicate()`, `returncode`, `stdin`/`stdout`/`stderr` for streams given as `PIPE`.
A request from a Linux process to start a host program arrives on [4] too; this client answers it
with `ENOSYS` (host programs are not launched over COM here).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import struct
import subprocess
import threading
from collections.abc import Callable, Sequence
from typing import IO, Any, BinaryIO

from pywsl.api.errors import WslError
from pywsl.wire import schema

__all__ = ["ComProcess", "StdioTarget", "read_message"]

BUFFER_SIZE = 64 * 1024
HEADER_SIZE = 16
MAX_MESSAGE_SIZE = 1 << 20
WINDOW_POLL_SECONDS = 0.25
EXIT_CHANNEL_CLOSED = 1  # wsl.exe's exit status when [4] closes without an ExitStatus
_HEADER = struct.Struct("<IIII")

_EXIT_STATUS = schema("LX_INIT_PROCESS_EXIT_STATUS")
_WINDOW_SIZE_CHANGED = schema("LX_INIT_WINDOW_SIZE_CHANGED")
_CREATE_NT_PROCESS = schema("LX_INIT_CREATE_NT_PROCESS_UTILITY_VM")
_CREATE_PROCESS_RESPONSE = schema("LX_INIT_CREATE_PROCESS_RESPONSE")

# A std stream of the caller: None = this process's own fd 0/1/2, an fd, a file object, PIPE,
# DEVNULL, or STDOUT (stderr only).
StdioTarget = int | IO[Any] | None


def _receive_exact(sock: socket.socket, size: int) -> bytes | None:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return bytes(data)


def read_message(sock: socket.socket) -> bytes | None:
    """One whole message (header + body) from a channel; None at its end."""
    header = _receive_exact(sock, HEADER_SIZE)
    if header is None:
        return None
    size = _HEADER.unpack(header)[1]
    if not HEADER_SIZE <= size <= MAX_MESSAGE_SIZE:
        return None
    body = _receive_exact(sock, size - HEADER_SIZE)
    return None if body is None else header + body


def _fd_of(spec: StdioTarget, index: int, what: str) -> int:
    if spec is None:
        return index
    if isinstance(spec, bool):
        raise TypeError(f"{what}: expected a file descriptor, a file object, None, PIPE or DEVNULL")
    if isinstance(spec, int):
        if spec < 0:
            raise ValueError(f"{what}: {spec} is not a file descriptor, PIPE or DEVNULL")
        return spec
    try:
        return spec.fileno()
    except (AttributeError, OSError, ValueError) as error:
        raise ValueError(f"{what}: the file object has no file descriptor ({error})") from None


class ComProcess:
    """A Linux process of a WSL2 distribution, relayed over the service's sockets.

    `sockets` are stdin, stdout, stderr, control and interop, in `CreateLxProcess` order; the
    object owns them. `console_size` gives the console's (columns, rows), or None when no stream
    is a console; it is followed while the process runs. `restore_console` puts back the console
    mode the caller changed for the process: called once, when the process is over or closed.
    """

    def __init__(
        self,
        sockets: Sequence[socket.socket],
        *,
        stdin: StdioTarget = None,
        stdout: StdioTarget = None,
        stderr: StdioTarget = None,
        args: Sequence[str] = (),
        console_size: Callable[[], tuple[int, int] | None] | None = None,
        restore_console: Callable[[], None] | None = None,
        distribution_id: Any = None,
        instance_id: Any = None,
    ) -> None:
        if len(sockets) != 5:
            raise ValueError("a WSL2 process has five sockets")
        if stdin == subprocess.STDOUT or stdout == subprocess.STDOUT:
            raise ValueError("STDOUT can only be given for stderr")
        self._sockets = list(sockets)
        self.args = list(args)
        self.pid = 0  # the Linux relay's pid is not reported over COM
        self.distribution_id = distribution_id
        self.instance_id = instance_id
        self.returncode: int | None = None
        self.stdin: BinaryIO | None = None
        self.stdout: BinaryIO | None = None
        self.stderr: BinaryIO | None = None
        self._exit_code = EXIT_CHANNEL_CLOSED
        self._status_received = False
        self._finished = threading.Event()  # the exit handshake is over
        self._stop = threading.Event()  # stop following the window size
        self._control_lock = threading.Lock()
        self._console_size = console_size
        self._restore_console = restore_console
        self._threads: list[threading.Thread] = []
        self._made: list[int] = []  # descriptors made here (pipes, /dev/null)
        self._captured: dict[int, bytearray] = {}
        self._pipe_writers: dict[int, int] = {}
        self._outputs: list[tuple[str, socket.socket, int | None, bool]] = []
        try:
            self._start_input(stdin)
            stdout_fd = self._start_output(1, stdout, None)
            self._start_output(2, stderr, stdout_fd)
        except BaseException:
            self.close()
            raise
        for what, sock, target, owned in self._outputs:
            self._spawn(self._copy_out, what, sock, target, owned)
        self._spawn(self._serve_interop, "interop")
        if console_size is not None:
            self._spawn(self._follow_window_size, "window-size")

    # -- streams -------------------------------------------------------------------------------

    def _spawn(self, target: Callable[..., None], name: str, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=f"pywsl-com-{name}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _start_input(self, spec: StdioTarget) -> None:
        sock = self._sockets[0]
        if spec == subprocess.DEVNULL and not isinstance(spec, bool):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
            return
        if spec == subprocess.PIPE and not isinstance(spec, bool):
            self.stdin = _SocketWriter(sock).buffered()
            return
        fd = _fd_of(spec, 0, "stdin")
        # Not joined: a console read may block after the process is gone (wsl.exe's stdin thread
        # is cancelled by its exit event; a daemon thread is dropped at exit).
        threading.Thread(target=self._copy_in, args=(fd, sock), name="pywsl-com-stdin", daemon=True).start()

    def _start_output(self, index: int, spec: StdioTarget, stdout_fd: int | None) -> int | None:
        sock = self._sockets[index]
        what = ("stdin", "stdout", "stderr")[index]
        target: int | None
        if spec == subprocess.STDOUT and not isinstance(spec, bool):
            target = stdout_fd
        elif spec == subprocess.DEVNULL and not isinstance(spec, bool):
            target = None
        elif spec == subprocess.PIPE and not isinstance(spec, bool):
            read_end, write_end = os.pipe()
            self._made.extend((read_end, write_end))
            reader = open(read_end, "rb")  # noqa: SIM115 - owned by this object
            self._made.remove(read_end)
            if index == 1:
                self.stdout = reader
            else:
                self.stderr = reader
            target = write_end
        else:
            target = _fd_of(spec, index, what)
        owned = target is not None and target in self._made
        if owned:
            assert target is not None
            self._pipe_writers[target] = self._pipe_writers.get(target, 0) + 1
        self._outputs.append((what, sock, target, owned))
        return target

    def _copy_in(self, fd: int, sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while not self._finished.is_set():
                data = os.read(fd, BUFFER_SIZE)
                if not data:
                    break
                sock.sendall(data)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)

    def _copy_out(self, sock: socket.socket, fd: int | None, owned: bool) -> None:
        writable = fd is not None
        try:
            while True:
                try:
                    data = sock.recv(BUFFER_SIZE)
                except OSError:
                    break
                if not data:
                    break
                view = memoryview(data)
                while writable and fd is not None and view:
                    try:
                        view = view[os.write(fd, view) :]
                    except OSError:
                        writable = False  # nobody reads it any more: the rest is dropped
        finally:
            if owned and fd is not None:
                self._release_pipe(fd)

    def _release_pipe(self, fd: int) -> None:
        """The last writer of a PIPE closes its write end (stderr=STDOUT shares stdout's)."""
        with self._control_lock:
            self._pipe_writers[fd] -= 1
            if self._pipe_writers[fd] == 0 and fd in self._made:
                self._made.remove(fd)
                with contextlib.suppress(OSError):
                    os.close(fd)

    # -- control and interop ---------------------------------------------------------------------

    def _send_control(self, data: bytes) -> None:
        with self._control_lock, contextlib.suppress(OSError):
            self._sockets[3].sendall(data)

    def _follow_window_size(self) -> None:
        assert self._console_size is not None
        last: tuple[int, int] | None = None
        while True:
            size = self._console_size()
            if size is not None and size != last:
                last = size
                columns, rows = size
                self._send_control(_WINDOW_SIZE_CHANGED.build(Rows=rows, Columns=columns))
            if self._stop.wait(WINDOW_POLL_SECONDS):
                return

    def _serve_interop(self) -> None:
        sock = self._sockets[4]
        try:
            while True:
                try:
                    data = read_message(sock)
                except OSError:
                    data = None
                if data is None:
                    return
                kind = _HEADER.unpack_from(data)[0]
                if kind == _EXIT_STATUS.message_type:
                    status = _EXIT_STATUS.parse(data)
                    self._exit_code = int(status.ExitCode)
                    self._status_received = True
                    with contextlib.suppress(OSError):
                        sock.sendall(data)  # the echo the relay waits for
                    return
                if kind == _CREATE_NT_PROCESS.message_type:
                    with contextlib.suppress(OSError):
                        sock.sendall(
                            _CREATE_PROCESS_RESPONSE.build(Result=errno.ENOSYS, SignalPipeId=0, Flags=0)
                        )
        finally:
            self._stop.set()
            self._finished.set()

    # -- the LxProcess interface -----------------------------------------------------------------

    @property
    def exit_status_lost(self) -> bool:
        return self.returncode is not None and not self._status_received

    def poll(self) -> int | None:
        return self.returncode if self._try_finish(0) else None

    def wait(self, timeout: float | None = None) -> int:
        if not self._try_finish(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        assert self.returncode is not None
        return self.returncode

    def _try_finish(self, timeout: float | None) -> bool:
        if self.returncode is not None:
            return True
        if not self._finished.wait(timeout):
            return False
        for thread in self._threads:  # the relay shuts the output sockets after the echo
            thread.join(timeout)
            if thread.is_alive():
                return False
        self.returncode = self._exit_code
        self._console_restored()
        return True

    def _console_restored(self) -> None:
        with self._control_lock:
            restore, self._restore_console = self._restore_console, None
        if restore is not None:
            restore()

    def communicate(
        self, input: bytes | None = None, timeout: float | None = None
    ) -> tuple[bytes | None, bytes | None]:
        if input and self.stdin is None:
            raise ValueError("communicate(input=...) needs stdin=PIPE")
        readers: list[threading.Thread] = []
        for stream in (self.stdout, self.stderr):
            if stream is not None and not stream.closed and stream.fileno() not in self._captured:
                buffer = self._captured.setdefault(stream.fileno(), bytearray())
                reader = threading.Thread(target=_drain, args=(stream, buffer), daemon=True)
                reader.start()
                readers.append(reader)
        if self.stdin is not None and not self.stdin.closed:
            with contextlib.suppress(BrokenPipeError, OSError):
                if input:
                    self.stdin.write(input)
            with contextlib.suppress(OSError):
                self.stdin.close()
        self.wait(timeout)
        for reader in readers:
            reader.join(timeout)
            if reader.is_alive():
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
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
        """Close every socket and descriptor held (the Linux process is not affected)."""
        self._stop.set()
        self._console_restored()
        for stream in (self.stdin, self.stdout, self.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        for sock in self._sockets:
            sock.close()
        for fd in self._made:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._made = []

    def __enter__(self) -> ComProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            if self.stdin is not None:
                with contextlib.suppress(OSError):
                    self.stdin.close()
            if self.returncode is None and exc_info[0] is None:
                self.wait()
        finally:
            self.close()

    def __repr__(self) -> str:
        return f"<ComProcess returncode={self.returncode}>"


def _drain(stream: BinaryIO, buffer: bytearray) -> None:
    with contextlib.suppress(OSError, ValueError):
        while chunk := stream.read1(BUFFER_SIZE) if hasattr(stream, "read1") else stream.read(BUFFER_SIZE):
            buffer += chunk


class _SocketWriter:
    """stdin=PIPE: a binary writer on socket [0]; closing it ends the process's input."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def buffered(self) -> BinaryIO:
        import io

        sock = self._sock

        class Raw(io.RawIOBase):
            def writable(self) -> bool:
                return True

            def write(self, data: Any) -> int:
                sock.sendall(data)
                return len(data)

            def close(self) -> None:
                if not self.closed:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_WR)
                super().close()

        return io.BufferedWriter(Raw())


def instance_terminated_error() -> WslError:
    """What wsl.exe reports when the channel closed without an exit status."""
    return WslError(
        "HCS_E_TERMINATED",
        "The Windows Subsystem for Linux instance has terminated.",
        context="Wsl/Service/CreateLxProcess",
    )
