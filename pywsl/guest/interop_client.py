"""The interop client: what runs inside a distribution when a host program or ``wslpath`` is called.

WSL's ``/init`` is a multi-call binary: as ``wslpath`` it translates paths, and as the binfmt
interpreter of a Windows executable it asks the interop server to start that program on Windows.
pywsl's counterpart is this module, started by the launcher script init writes into the
distribution (``interop_setup``): the host's own dynamic loader runs the host's interpreter from
a read-only, nosuid view of the host, so a distribution needs nothing but ``/bin/sh``.

``main(argv)`` takes ``[mount point, rootfs, $0, arguments...]`` from the launcher and dispatches on
``$0``:

* ``.../wslpath``: translate paths (``interop_paths.wslpath``);
* ``<path folder>/<escaped host folder>/<name>``: run the host program ``<host folder>/<name>``;
* the launcher itself: ``launch HOSTPATH [ARG...]`` runs a host program by absolute path.

Running a host program speaks WSL's interop messages on the instance's interop socket
(``$WSL_INTEROP``): ``LX_INIT_CREATE_NT_PROCESS_UTILITY_VM`` with the caller's stdin, stdout and
stderr as descriptors, ``LX_INIT_CREATE_PROCESS_RESPONSE`` (an errno), then
``LX_INIT_PROCESS_EXIT_STATUS``; signals the caller gets (Ctrl-C, window size changes, ...) go to
the host program as ``PYWSL_SIGNAL_PROCESS``. The messages are encoded here with ``struct`` (the
wire schemas would cost a tenth of a second to import); tests check the bytes against
``pywsl.wire``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import socket
import struct
import sys
from collections.abc import Sequence

from pywsl.guest import interop_paths

__all__ = [
    "DEFAULT_SOCKET",
    "PATH_FOLDER",
    "encode_create_process",
    "escape_folder",
    "main",
    "unescape_folder",
]

RUNTIME_DIR = "/run/WSL/interop"
PATH_FOLDER = RUNTIME_DIR + "/path"
LAUNCHER = RUNTIME_DIR + "/launch"
DEFAULT_SOCKET = "/run/WSL/1_interop"
CONNECT_TIMEOUT = 10.0
DISABLED_ERRNO = errno.EPERM

_HEADER = struct.Struct("<IIII")
_CREATE_NT_PROCESS_TYPE = 8  # LxInitMessageCreateProcessUtilityVm
_CREATE_PROCESS_RESPONSE_TYPE = 11
_EXIT_STATUS_TYPE = 9
_SIGNAL_PROCESS_TYPE = 204
_NT_COMMON_OFFSET = 24
_NT_BUFFER_OFFSET = 73  # Common + 49
_NT_SIZEOF = 80
_FORWARDED_SIGNALS = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGWINCH,
    signal.SIGUSR1,
    signal.SIGUSR2,
)


def escape_folder(host_folder: str) -> str:
    """The name under ``PATH_FOLDER`` that stands for a host folder (``/usr/bin`` -> ``%2Fusr%2Fbin``)."""
    return host_folder.replace("%", "%25").replace("/", "%2F")


def unescape_folder(name: str) -> str:
    return name.replace("%2F", "/").replace("%25", "%")


def encode_create_process(
    filename: str,
    cwd: str,
    arguments: Sequence[str],
    environment: Sequence[str],
    rows: int = 0,
    columns: int = 0,
) -> bytes:
    """``LX_INIT_CREATE_NT_PROCESS_UTILITY_VM`` as WSL's binfmt client writes it."""

    def z(text: str) -> bytes:
        return text.encode("utf-8", "surrogateescape") + b"\0"

    buffer = bytearray()
    filename_offset = 49 + len(buffer)
    buffer += z(filename)
    cwd_offset = 49 + len(buffer)
    buffer += z(cwd)
    environment_offset = 49 + len(buffer)
    for entry in environment:
        buffer += z(entry)
    buffer += b"\0\0"
    command_line_offset = 49 + len(buffer)
    for argument in arguments:
        buffer += z(argument)
    size = max(_NT_BUFFER_OFFSET + len(buffer), _NT_SIZEOF)
    message = bytearray(size)
    _HEADER.pack_into(message, 0, _CREATE_NT_PROCESS_TYPE, size, 0, 0)
    struct.pack_into(
        "<IIIHxxIHH?",
        message,
        _NT_COMMON_OFFSET + 24,
        filename_offset,
        cwd_offset,
        command_line_offset,
        len(arguments),
        environment_offset,
        rows,
        columns,
        False,
    )
    message[_NT_BUFFER_OFFSET : _NT_BUFFER_OFFSET + len(buffer)] = buffer
    return bytes(message)


def encode_signal(number: int) -> bytes:
    return _HEADER.pack(_SIGNAL_PROCESS_TYPE, 20, 0, 0) + struct.pack("<i", number)


def _receive_message(sock: socket.socket) -> tuple[int, bytes]:
    """One frame: (type, whole message); (-1, b"") when the server closed the connection."""
    header = _receive_exact(sock, _HEADER.size)
    if len(header) < _HEADER.size:
        return -1, b""
    message_type, size, _transaction, _step = _HEADER.unpack(header)
    if not _HEADER.size <= size <= 4096:
        return -1, b""
    rest = _receive_exact(sock, size - _HEADER.size)
    if len(rest) < size - _HEADER.size:
        return -1, b""
    return message_type, header + rest


def _receive_exact(sock: socket.socket, size: int) -> bytes:
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


def _error(message: str) -> None:
    with contextlib.suppress(OSError):
        os.write(2, f"pywsl: {message}\n".encode(errors="replace"))


def _exit_code_for(error: int) -> int:
    return 127 if error in (errno.ENOENT, errno.ENOTDIR) else 126


def _host_environment(mount_point: str | None, rootfs: str | None) -> list[str]:
    """What the host program gets from the caller: TERM, the host PATH folders the caller's PATH
    holds, and the variables ``WSLENV`` shares (translated back to host paths)."""
    result: dict[str, str] = {}
    prefix = PATH_FOLDER + "/"
    host_path = [
        unescape_folder(item[len(prefix) :])
        for item in os.environ.get("PATH", "").split(":")
        if item.startswith(prefix)
    ]
    if host_path:
        result["PATH"] = ":".join(host_path)
    if "TERM" in os.environ:
        result["TERM"] = os.environ["TERM"]
    result.update(interop_paths.translate_environment_out(os.environ, mount_point, rootfs))
    return [f"{name}={value}" for name, value in result.items()]


def _window_size() -> tuple[int, int]:
    for fd in (0, 1, 2):
        try:
            columns, rows = os.get_terminal_size(fd)
            return rows, columns
        except OSError:
            continue
    return 0, 0


def run_host_program(
    filename: str, arguments: Sequence[str], mount_point: str | None, rootfs: str | None
) -> int:
    """Start ``filename`` on the host through the interop socket; its exit status."""
    try:
        cwd = interop_paths.inside_to_host(interop_paths.current_directory(), mount_point, rootfs)
    except interop_paths.TranslationError:
        cwd = ""  # the host program starts in the owner's home
    rows, columns = _window_size()
    environment = _host_environment(mount_point, rootfs)
    request = encode_create_process(filename, cwd, arguments, environment, rows, columns)
    path = os.environ.get("WSL_INTEROP") or DEFAULT_SOCKET
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(CONNECT_TIMEOUT)
        try:
            sock.connect(path)
        except OSError as error:
            _error(f"cannot reach the interop server at {path}: {error.strerror or error}")
            return 1
        try:
            socket.send_fds(sock, [request], [0, 1, 2])
        except OSError as error:
            # A server that refuses (interop disabled) answers without reading the request.
            if error.errno not in (errno.EPIPE, errno.ECONNRESET):
                _error(f"cannot reach the interop server at {path}: {error.strerror or error}")
                return 1
        sock.settimeout(None)
        return _follow(sock, filename)
    finally:
        sock.close()


def _follow(sock: socket.socket, filename: str) -> int:
    """Wait for the response and the exit status, forwarding signals meanwhile."""
    wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_write)
    for number in _FORWARDED_SIGNALS:
        signal.signal(number, lambda *_: None)
    started = False
    while True:
        try:
            ready, _, _ = select.select([sock.fileno(), wake_read], [], [])
        except InterruptedError:
            continue
        if wake_read in ready:
            try:
                numbers = os.read(wake_read, 64)
            except BlockingIOError:
                numbers = b""
            for received in list(numbers):
                with contextlib.suppress(OSError):
                    sock.sendall(encode_signal(received))
        if sock.fileno() not in ready:
            continue
        message_type, message = _receive_message(sock)
        if message_type == _CREATE_PROCESS_RESPONSE_TYPE and not started:
            result = struct.unpack_from("<i", message, 16)[0]
            if result == DISABLED_ERRNO:
                _error("interop with the host is disabled in this distribution ([interop] enabled=false)")
                return 1
            if result != 0:
                _error(f"cannot run {filename} on the host: {os.strerror(result)}")
                return _exit_code_for(result)
            started = True
        elif message_type == _EXIT_STATUS_TYPE and started:
            code: int = struct.unpack_from("<i", message, 16)[0]
            return code
        else:
            _error("the interop server closed the connection")
            return 1


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if len(arguments) < 3:
        _error("usage: launch HOSTPATH [ARGUMENT...]")
        return 1
    mount_point = arguments[0] or None
    rootfs = arguments[1] or None
    invoked = arguments[2]
    rest = arguments[3:]
    name = os.path.basename(invoked)
    if name == "wslpath":
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
    folder = os.path.dirname(invoked)
    if folder.startswith(PATH_FOLDER + "/"):
        host_folder = unescape_folder(folder[len(PATH_FOLDER) + 1 :])
        return run_host_program(os.path.join(host_folder, name), rest, mount_point, rootfs)
    if not rest or not rest[0].startswith("/"):
        _error("usage: launch HOSTPATH [ARGUMENT...] (HOSTPATH: an absolute path of the host)")
        return 1
    return run_host_program(rest[0], rest[1:], mount_point, rootfs)
