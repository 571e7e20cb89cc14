"""The interop client: what runs inside a distribution when a host program or ``wslpath`` is called.

WSL's ``/init`` is a multi-call binary: as ``wslpath`` it translates paths, and as the binfmt
interpreter of a Windows executable it asks the interop server to start that program on Windows.
pywsl's counterpart is this module, started by the launcher script init writes into the
distribution (``interop_init``): the host's own dynamic loader runs the host's interpreter from
a read-only, nosuid view of the host, so a distribution needs nothing but ``/bin/sh``.

``main(argv)`` takes ``[mount point, rootfs, $0, arguments...]`` from the launcher and dispatches on
``$0``:

* ``.../wslpath``: translate paths (``interop_paths.wslpath``);
* ``<path folder>/<escaped host folder>/<name>``: run the host program ``<host folder>/<name>``;
* the launcher itself: ``launch HOSTPATH [ARG...]`` runs a host program by absolute path.

Running a host program speaks WSL's interop messages (``interop_messages``) on the instance's
interop socket (``$WSL_INTEROP``): ``LX_INIT_CREATE_NT_PROCESS_UTILITY_VM`` with the caller's
stdin, stdout and stderr as descriptors, ``LX_INIT_CREATE_PROCESS_RESPONSE`` (an errno), then
``LX_INIT_PROCESS_EXIT_STATUS``; signals the caller gets (Ctrl-C, ...) go to the host program as
``PYWSL_SIGNAL_PROCESS``. When the caller runs in the foreground of a terminal the request asks
for a pseudoconsole (``CreatePseudoconsole``, as WSL does for a console): the server gives the
program a terminal of its own on the host, relayed to the caller's, the caller's terminal is raw
meanwhile and window size changes travel as ``LX_INIT_WINDOW_SIZE_CHANGED``.

The common case (a host program called without a terminal) is the native client's
(``interop_native.c``), which sends the same request; this module serves ``wslpath``, a caller
on a terminal, ``PYWSL_INTEROP_CLIENT=python`` and hosts without a C compiler. Neither client
translates the working folder or the environment: the host's worker does
(``interop_paths.translate_request``).

Start-up time is most of what a host program call costs, so this module and the two it imports
use only built-in modules: ``_socket`` and ``_signal`` instead of ``socket`` and ``signal`` (whose
enums cost more than the rest of the client), no ``collections``, ``typing`` or ``contextlib``.
"""

from __future__ import annotations

import _socket
import errno
import os
import select
import struct
import termios

from pywsl.guest import interop_messages as messages
from pywsl.guest import interop_paths

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal
    from collections.abc import Sequence
    from typing import Any
else:
    import _signal

__all__ = [
    "DEFAULT_SOCKET",
    "PATH_FOLDER",
    "escape_folder",
    "main",
    "unescape_folder",
]

RUNTIME_DIR = interop_paths.RUNTIME_DIR
PATH_FOLDER = interop_paths.HOST_PATH_FOLDER
LAUNCHER = interop_paths.LAUNCHER
DEFAULT_SOCKET = interop_paths.DEFAULT_SOCKET
CONNECT_TIMEOUT = 10.0
DISABLED_ERRNO = errno.EPERM
MAX_FRAME = 4096
_FORWARDED_SIGNALS = (
    _signal.SIGINT,
    _signal.SIGTERM,
    _signal.SIGHUP,
    _signal.SIGQUIT,
    _signal.SIGWINCH,
    _signal.SIGUSR1,
    _signal.SIGUSR2,
)


escape_folder = interop_paths.escape_folder
unescape_folder = interop_paths.unescape_folder


def _error(message: str) -> None:
    try:  # noqa: SIM105 (contextlib: an import the client's start-up does without)
        os.write(2, f"pywsl: {message}\n".encode(errors="replace"))
    except OSError:
        pass


def _exit_code_for(error: int) -> int:
    return 127 if error in (errno.ENOENT, errno.ENOTDIR) else 126


def _foreground_terminal() -> int:
    """The first of stdin, stdout, stderr that is a terminal this process is in the foreground
    of; -1 when there is none (a pipe, a file, a background job)."""
    for fd in (0, 1, 2):
        try:
            if os.isatty(fd) and os.tcgetpgrp(fd) == os.getpgrp():
                return fd
        except OSError:
            continue
    return -1


def _window_size(fd: int) -> tuple[int, int]:
    try:
        columns, rows = os.get_terminal_size(fd)
    except OSError:
        return 0, 0
    return rows, columns


class _RawMode:
    """The caller's terminal without line editing, echo or signal keys while a host program owns
    it through a pseudoconsole (restored afterwards)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.saved: list[Any] | None = None

    def enter(self) -> None:
        try:
            self.saved = termios.tcgetattr(self.fd)
            mode = termios.tcgetattr(self.fd)
        except termios.error:
            return
        mode[0] &= ~(termios.BRKINT | termios.ICRNL | termios.INPCK | termios.ISTRIP | termios.IXON)
        mode[1] &= ~termios.OPOST
        mode[2] = (mode[2] & ~(termios.CSIZE | termios.PARENB)) | termios.CS8
        mode[3] &= ~(termios.ECHO | termios.ICANON | termios.IEXTEN | termios.ISIG)
        mode[6][termios.VMIN] = 1
        mode[6][termios.VTIME] = 0
        try:
            termios.tcsetattr(self.fd, termios.TCSANOW, mode)  # keys typed ahead stay
        except termios.error:
            self.saved = None

    def leave(self) -> None:
        if self.saved is not None:
            try:  # noqa: SIM105
                termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)
            except termios.error:
                pass
            self.saved = None


def _connect(path: str) -> _socket.socket | None:
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    sock.settimeout(CONNECT_TIMEOUT)
    try:
        sock.connect(path)
    except OSError as error:
        sock.close()
        _error(f"cannot reach the interop server at {path}: {error.strerror or error}")
        return None
    return sock


def _send_request(sock: _socket.socket, request: bytes) -> bool:
    """The request with the caller's stdin, stdout and stderr; False (reported) on failure."""
    rights = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, struct.pack("3i", 0, 1, 2))]
    try:
        sent = sock.sendmsg([request], rights)
        if sent < len(request):
            sock.sendall(request[sent:])
    except OSError as error:
        # A server that refuses (interop disabled) answers without reading the request.
        if error.errno not in (errno.EPIPE, errno.ECONNRESET):
            _error(f"cannot send the request to the interop server: {error.strerror or error}")
            return False
    return True


def run_host_program(
    filename: str, arguments: Sequence[str], mount_point: str | None, rootfs: str | None
) -> int:
    """Start ``filename`` on the host through the interop socket; its exit status. The working
    folder and the environment go as they are inside: the host's worker translates them."""
    cwd = interop_paths.current_directory()
    terminal = _foreground_terminal()
    rows, columns = _window_size(terminal) if terminal >= 0 else (0, 0)
    environment = interop_paths.forwarded_environment(os.environ, mount_point, rootfs)
    request = messages.encode_create_process(
        filename, cwd, arguments, environment, rows, columns, pseudoconsole=terminal >= 0
    )
    if len(request) > messages.MAX_REQUEST_BYTES or len(arguments) > messages.MAX_ARGUMENTS:
        _error(
            f"cannot run {filename} on the host: {os.strerror(errno.E2BIG)} "
            f"(at most {messages.MAX_STRINGS_BYTES} bytes of arguments and environment)"
        )
        return 126
    path = os.environ.get("WSL_INTEROP") or DEFAULT_SOCKET
    sock = _connect(path)
    if sock is None:
        return 1
    raw = _RawMode(0)
    try:
        if not _send_request(sock, request):
            return 1
        sock.settimeout(None)
        if terminal >= 0 and os.isatty(0):
            raw.enter()
        return _Follower(sock, filename, terminal).run()
    finally:
        raw.leave()
        sock.close()


class _Follower:
    """Wait for the response and the exit status; forward signals and window sizes meanwhile."""

    def __init__(self, sock: _socket.socket, filename: str, terminal: int) -> None:
        self.sock = sock
        self.filename = filename
        self.terminal = terminal
        self.started = False

    def run(self) -> int:
        wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        _signal.set_wakeup_fd(wake_write)
        for number in _FORWARDED_SIGNALS:
            _signal.signal(number, _ignore)
        while True:
            try:
                ready, _, _ = select.select([self.sock.fileno(), wake_read], [], [])
            except InterruptedError:
                continue
            if wake_read in ready:
                self._forward(wake_read)
            if self.sock.fileno() in ready:
                code = self._receive()
                if code is not None:
                    return code

    def _forward(self, wake_read: int) -> None:
        try:
            numbers = os.read(wake_read, 64)
        except BlockingIOError:
            return
        for received in numbers:
            if received == _signal.SIGWINCH and self.terminal >= 0:
                message = messages.encode_window_size(*_window_size(self.terminal))
            else:
                message = messages.encode_signal(received)
            try:  # noqa: SIM105
                self.sock.sendall(message)
            except OSError:
                pass

    def _receive(self) -> int | None:
        """Handle one frame from the server: the exit code once the program is done, else None."""
        message = _receive_frame(self.sock)
        message_type = messages.HEADER.unpack_from(message)[0] if message else -1
        if message_type == messages.CREATE_PROCESS_RESPONSE and not self.started:
            result = messages.int32_at_16(message)
            if result == DISABLED_ERRNO:
                _error("interop with the host is disabled in this distribution ([interop] enabled=false)")
                return 1
            if result != 0:
                _error(f"cannot run {self.filename} on the host: {os.strerror(result)}")
                return _exit_code_for(result)
            self.started = True
            return None
        if message_type == messages.EXIT_STATUS and self.started:
            return messages.int32_at_16(message)
        _error("the interop server closed the connection")
        return 1


def _ignore(_number: int, _frame: object) -> None:
    return None


def _receive_frame(sock: _socket.socket) -> bytes:
    """One whole frame; b"" when the server closed the connection or sent something invalid."""
    header = _receive_exact(sock, messages.HEADER.size)
    if len(header) < messages.HEADER.size:
        return b""
    try:
        _type, size = messages.frame_size(header, MAX_FRAME)
    except messages.MalformedMessage:
        return b""
    rest = _receive_exact(sock, size - messages.HEADER.size)
    if len(rest) < size - messages.HEADER.size:
        return b""
    return header + rest


def _receive_exact(sock: _socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        try:
            chunk = sock.recv(size - len(data))
        except InterruptedError:
            continue
        except OSError:
            return data
        if not chunk:
            return data
        data += chunk
    return data


def _wslpath(rest: list[str], mount_point: str | None, rootfs: str | None) -> int:
    code, out, err = interop_paths.wslpath(
        rest, cwd=interop_paths.current_directory(), mount_point=mount_point, rootfs=rootfs
    )
    for fd, text in ((1, out), (2, err)):
        if text:
            try:
                os.write(fd, text.encode("utf-8", "surrogateescape"))
            except OSError:
                return 1
    return code


def main(argv: Sequence[str]) -> int:
    arguments = list(argv)
    if len(arguments) < 3:
        _error("usage: launch HOSTPATH [ARGUMENT...]")
        return 1
    mount_point = arguments[0] or None
    rootfs = arguments[1] or None
    invoked = arguments[2]
    rest = arguments[3:]
    name = os.path.basename(invoked)
    if name == "wslpath":
        return _wslpath(rest, mount_point, rootfs)
    folder = os.path.dirname(invoked)
    if folder.startswith(PATH_FOLDER + "/"):
        host_folder = unescape_folder(folder[len(PATH_FOLDER) + 1 :])
        return run_host_program(os.path.join(host_folder, name), rest, mount_point, rootfs)
    if not rest or not rest[0].startswith("/"):
        _error("usage: launch HOSTPATH [ARGUMENT...] (HOSTPATH: an absolute path of the host)")
        return 1
    return run_host_program(rest[0], rest[1:], mount_point, rootfs)
