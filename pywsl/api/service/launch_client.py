"""A user's warm launch through the root service, as one request, without the service client.

`ServiceClient` (`client.py`) serves every method of the service: connection pools, threads,
progress, cancellation and the value codecs, which load `json`, `socket`, `uuid`, `typing` and
`pathlib`, and it asks `GetDistributionId` before `CreateLxProcess`. A script's `pywsl -d D --
cmd`, run by a user whose standard streams are no terminals, needs one `CreateLxProcess` request
with the distribution by name (`rpc.py`: `{"name": ...}`): the same parameters `ServiceClient`
sends, the caller's descriptors 0, 1 and 2 and the relay's control and exit ends. The reply's pid
means the process runs; it is then waited for as root's quick launch waits (`QuickProcess`).

`launch` returns None, having run nothing, when that does not fit: root (the launch runs
in-process), a terminal or a closed standard stream, no service listening, a request that
cannot be encoded, or an error reply (the full path then sends the calls again and reports the
error exactly as every other verb does). When the service goes away without a reply, the relay
may already hold the exit channel: the process is then waited for, as `ServiceClient` does it.
"""

from __future__ import annotations

import _socket
import os
import select
import struct
import sys
import time

from pywsl.api import lean_json
from pywsl.api.process.launch_request import parse_wslenv
from pywsl.api.process.quick_process import QuickProcess, plain_streams
from pywsl.api.session.gui_share import GUI_VARIABLES
from pywsl.api.session.path_rules import service_socket
from pywsl.wire.launch_link import connect_unix, socket_pair

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = [
    "METHOD",
    "RELAY_GRACE_SECONDS",
    "create_lx_process_parameters",
    "launch",
    "relay_took_over",
    "shared_environment",
]

METHOD = "io.pywsl.UserSession.CreateLxProcess"
MAX_REQUEST_SIZE = 1024 * 1024  # rpc_framing.MAX_MESSAGE_SIZE: the service refuses more
MAX_REPLY_SIZE = 64 * 1024 * 1024  # rpc_framing.MAX_REPLY_SIZE
RELAY_GRACE_SECONDS = 1.0  # as `ServiceClient`: how long a relay that took over may take to show
_CHUNK = 64 * 1024
_ANCILLARY_SIZE = _socket.CMSG_SPACE(16 * 4)


def launch(
    distribution: str | None,
    command_line: Sequence[str],
    *,
    filename: str | None,
    cwd: str,
    username: str,
    environ: Mapping[str, str],
) -> QuickProcess | None:
    """Start the process (shell mode when `filename` is None) in `distribution` (None: the default
    one) through the service, on this process's std streams; None when the full path must do it."""
    if sys.platform != "linux" or os.geteuid() == 0 or not plain_streams():
        return None
    request = _request(distribution, command_line, filename, cwd, username, environ)
    if request is None:
        return None
    try:
        sock = connect_unix(service_socket(environ))
    except OSError:
        return None
    if sock is None:
        return None
    control, relay_control = socket_pair()
    exit_end, relay_exit = socket_pair()
    try:
        try:
            _send(sock, request, [0, 1, 2, relay_control.fileno(), relay_exit.fileno()])
        finally:
            relay_control.close()
            relay_exit.close()
        reply = _reply(sock)
    except OSError:
        reply = None
    finally:
        sock.close()
    if reply is None and not relay_took_over(exit_end):
        reply = {}  # the service went away, and no relay holds the exit channel: nothing runs
    if reply is not None and not _started(reply):
        control.close()
        exit_end.close()
        return None
    warnings = reply.get("warnings") if reply is not None else None
    texts = [text for text in warnings if isinstance(text, str)] if isinstance(warnings, list) else []
    return QuickProcess(control, exit_end, texts, distribution)


def _request(
    distribution: str | None,
    command_line: Sequence[str],
    filename: str | None,
    cwd: str,
    username: str,
    environ: Mapping[str, str],
) -> bytes | None:
    """The request as `ServiceClient.create_lx_process` sends it; None when it cannot be encoded."""
    parameters = create_lx_process_parameters(
        None if distribution is None else {"name": distribution},
        command_line,
        filename=filename,
        cwd=cwd,
        username=username,
        login=False,
        environment=None,
        wslenv_source=shared_environment(environ),
        console=(False, False, False),
        rows=0,
        columns=0,
    )
    try:
        data = lean_json.dumps({"method": METHOD, "parameters": parameters}).encode("utf-8") + b"\0"
    except (ValueError, UnicodeEncodeError):
        return None  # the full path reports what cannot be sent
    return data if len(data) <= MAX_REQUEST_SIZE else None


def shared_environment(source: Mapping[str, str]) -> dict[str, str]:
    """What the session needs of the caller's environment: TERM, PATH (interop's host PATH), the
    display variables (GUI sockets), WSLENV and what WSLENV names."""
    wanted = {"TERM", "WSLENV", "PATH", *GUI_VARIABLES, *parse_wslenv(source.get("WSLENV", ""))}
    return {name: value for name, value in source.items() if name in wanted}


def create_lx_process_parameters(
    distro: object,
    command_line: Sequence[str],
    *,
    filename: str | None,
    cwd: str,
    username: str,
    login: bool,
    environment: Mapping[str, str] | None,
    wslenv_source: dict[str, str],
    console: Sequence[bool],
    rows: int,
    columns: int,
) -> dict[str, object]:
    """`CreateLxProcess`'s parameters (`rpc.py`): `distro` encoded already, the descriptors at
    their fixed places (stdin, stdout, stderr, control, exit: 0 to 4)."""
    return {
        "distro": distro,
        "command_line": [str(item) for item in command_line],
        "filename": filename,
        "cwd": cwd,
        "username": username,
        "login": login,
        "environment": None if environment is None else dict(environment),
        "wslenv_source": wslenv_source,
        "stdin": 0,
        "stdout": 1,
        "stderr": 2,
        "control": 3,
        "exit": 4,
        "console": list(console),
        "rows": rows,
        "columns": columns,
    }


def _send(sock: _socket.socket, data: bytes, fds: list[int]) -> None:
    ancillary = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))]
    view = memoryview(data)
    sent = 0
    while sent < len(view):
        try:
            sent += sock.sendmsg([view[sent:]], ancillary, _socket.MSG_NOSIGNAL)
        except BlockingIOError:
            _wait(sock, select.POLLOUT)
            continue
        ancillary = []


def _reply(sock: _socket.socket) -> dict[str, object] | None:
    """The service's reply (its first message: this request is the only one), None when it went
    away first. Descriptors never come with a reply; any that do are closed."""
    data = b""
    while b"\0" not in data:
        try:
            chunk, ancillary, _flags, _ = sock.recvmsg(
                64 * 1024, _socket.CMSG_SPACE(16 * 4), _socket.MSG_CMSG_CLOEXEC
            )
        except BlockingIOError:
            _wait(sock, select.POLLIN)
            continue
        except ConnectionResetError:
            return None
        for level, kind, payload in ancillary:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                for fd in struct.unpack(f"{len(payload) // 4}i", payload[: len(payload) - len(payload) % 4]):
                    os.close(fd)
        if not chunk:
            return None
        data += chunk
        if len(data) > MAX_REPLY_SIZE:
            return {}
    try:
        reply = lean_json.loads(data[: data.index(b"\0")].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return {}
    return reply if isinstance(reply, dict) else {}


def _started(reply: dict[str, object]) -> bool:
    """A success: the relay's pid came back (an error reply, or anything else, means no process)."""
    parameters = reply.get("parameters")
    return "error" not in reply and isinstance(parameters, dict) and type(parameters.get("pid")) is int


def relay_took_over(exit_end: _socket.socket) -> bool:
    """After the service vanished: does a relay hold the exit channel (as `ServiceClient` asks)?
    Every other copy of its far end is closed by now, so without a relay it reaches end of file."""
    poller = select.poll()
    poller.register(exit_end.fileno(), select.POLLIN | select.POLLHUP)
    deadline = time.monotonic() + RELAY_GRACE_SECONDS
    while (remaining := deadline - time.monotonic()) > 0:
        if poller.poll(int(remaining * 1000) + 1):
            try:
                return bool(exit_end.recv(1, _socket.MSG_PEEK | _socket.MSG_DONTWAIT))
            except BlockingIOError:
                continue
            except OSError:
                return False
    return True


def _wait(sock: _socket.socket, events: int) -> None:
    poller = select.poll()
    poller.register(sock.fileno(), events)
    poller.poll()
