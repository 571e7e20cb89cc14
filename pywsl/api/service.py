"""The pywsl service: ``wslservice.exe`` for a Linux host.

WSL's service runs as SYSTEM and hands every caller the ``ILxssUserSession`` of the caller's own
user (``LxssUserSessionFactory``: one implementation per SID, however many clients). This daemon
runs as root, listens on ``/run/pywsl/service.sock`` (0666, in a 0755 folder) or on a socket
passed by systemd (``LISTEN_FDS``), and gives every connection the ``UserSession`` of its peer
uid, taken from ``SO_PEERCRED``: a client can never name another user. Each connection gets a
thread; requests follow ``pywsl.api.rpc``.

The service keeps no state that a crash could lose: running distributions belong to the guest,
and launched processes talk to their relay directly, so ``kill -9`` of the service stops neither,
and the next call finds them.

``python -m pywsl.api.service`` (or ``pywsl-service``) runs it in the foreground;
``pywsl-service --install-units`` installs its systemd units.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import logging
import os
import re
import signal
import socket
import stat
import struct
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, NamedTuple

from pywsl.api import rpc
from pywsl.api.errors import WslError, from_os_error

log = logging.getLogger("pywsl.service")

SD_LISTEN_FDS_START = 3
_UCRED = struct.Struct("3i")
# At most this many connections at once, and per user: each one holds a thread.
MAX_CONNECTIONS = 1024
MAX_CONNECTIONS_PER_USER = 256


class PeerCredentials(NamedTuple):
    """Who is on the other end of a connection, as the kernel recorded it at ``connect()``."""

    pid: int
    uid: int
    gid: int


def peer_credentials(sock: socket.socket) -> PeerCredentials:
    """``SO_PEERCRED`` of a connected socket."""
    pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return PeerCredentials(pid, uid, gid)


class SessionFactory:
    """``LxssUserSessionFactory``: exactly one session object per uid, created on first use."""

    def __init__(self, create: Callable[[int], Any]) -> None:
        self._create = create
        self._sessions: dict[int, Any] = {}
        self._lock = threading.Lock()

    def session_for(self, uid: int) -> Any:
        with self._lock:
            session = self._sessions.get(uid)
            if session is None:
                session = self._create(uid)
                self._sessions[uid] = session
            return session


def user_session_factory() -> SessionFactory:
    """The real factory: ``UserSession(uid=N)`` acts for user N with N's credentials."""
    from pywsl.api.session import UserSession

    return SessionFactory(lambda uid: UserSession(uid=uid))


# --------------------------------------------------------------------------------------------
# Dispatch: one request against one session
# --------------------------------------------------------------------------------------------

_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def python_name(method_name: str) -> str:
    """``GetDistributionId`` -> ``get_distribution_id``, ``CreateLxProcess`` -> ``create_lx_process``."""
    return _CAMEL.sub("_", method_name).lower()


class ProgressSender:
    """Sends a long call's progress as ``"continues": true`` replies until the call returns.

    The session may report from a helper thread; once ``close()`` ran (before the final reply),
    nothing more is sent, so a late report can never land after the reply.
    """

    def __init__(self, connection: rpc.Connection) -> None:
        self._connection = connection
        self._lock = threading.Lock()
        self._open = True

    def __call__(self, value: int) -> None:
        with self._lock:
            if not self._open:
                return
            try:
                self._connection.send(rpc.reply({"progress": rpc.encode_value(value)}, continues=True))
            except (OSError, rpc.RpcError, TypeError, ValueError):
                self._open = False

    def close(self) -> None:
        with self._lock:
            self._open = False


_PROGRESS_METHODS = frozenset({"RegisterDistribution", "ExportDistribution"})


def call(session: Any, method: rpc.Method, arguments: dict[str, Any],
         progress_to: rpc.Connection | None = None) -> dict[str, Any]:
    """Run one method on ``session`` and return the reply parameters.

    ``arguments`` are already checked (``Method.decode_parameters``); fds in them belong to the
    caller, which closes them afterwards. ``progress_to``: where progress replies go, if asked.
    """
    arguments = dict(arguments)
    if method.name == "CreateLxProcess":
        # The relay gets the client's own control and exit ends; the reply is its pid.
        arguments["control_fd"] = arguments.pop("control")
        arguments["exit_fd"] = arguments.pop("exit")
        return {"pid": int(session.launch_lx_process(**arguments))}
    target = getattr(session, python_name(method.name))
    progress = ProgressSender(progress_to) if progress_to and method.name in _PROGRESS_METHODS else None
    if progress is not None:
        arguments["progress"] = progress
    try:
        result = target(**arguments)
    finally:
        if progress is not None:
            progress.close()
    if method.result is None:
        return {}
    return {method.result: rpc.encode_value(result)}


def _version() -> str:
    try:
        return importlib.metadata.version("pywsl")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def handle_request(
    session: Any, request: rpc.Request, connection: rpc.Connection | None = None
) -> dict[str, Any]:
    """The reply to one request (never raises for anything the client or the session did)."""
    try:
        if request.method == rpc.GET_INFO:
            return rpc.reply(
                {
                    "vendor": "pywsl",
                    "product": "pywsl-service",
                    "version": _version(),
                    "url": "",
                    "interfaces": ["org.varlink.service", rpc.INTERFACE],
                }
            )
        method = rpc.method(request.method)
        arguments = method.decode_parameters(request.parameters, request.fds)
        return rpc.reply(call(session, method, arguments, connection if request.more else None))
    except rpc.RpcError as error:
        return error.reply()
    except WslError as error:
        return rpc.error_reply(rpc.ERROR_WSL, error.to_dict())
    except OSError as error:
        return rpc.error_reply(rpc.ERROR_WSL, from_os_error(error).to_dict())
    except Exception as error:
        log.exception("%s failed unexpectedly", request.method)
        return rpc.error_reply(rpc.ERROR_INTERNAL, {"message": f"{type(error).__name__}: {error}"})


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


class Service:
    """Accepts connections on ``listener`` and serves each in its own thread."""

    def __init__(self, listener: socket.socket, factory: SessionFactory, *,
                 max_connections: int = MAX_CONNECTIONS,
                 max_connections_per_user: int = MAX_CONNECTIONS_PER_USER) -> None:
        self.listener = listener
        self.factory = factory
        self.max_connections = max_connections
        self.max_connections_per_user = max_connections_per_user
        self._stopping = threading.Event()
        self._count_lock = threading.Lock()
        self._connections: dict[int, int] = {}

    def serve_forever(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, _ = self.listener.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                raise
            try:
                peer = peer_credentials(sock)
            except OSError:
                sock.close()
                continue
            if not self._admit(peer.uid):
                log.warning("refusing a connection from %s: too many connections", peer)
                with contextlib.suppress(OSError):
                    sock.sendall(rpc.encode_message(rpc.error_reply(
                        rpc.ERROR_BUSY, {"message": "too many connections to the service"})))
                sock.close()
                continue
            thread = threading.Thread(target=self.serve_connection, args=(sock, peer), daemon=True)
            thread.start()

    def _admit(self, uid: int) -> bool:
        with self._count_lock:
            total = sum(self._connections.values())
            mine = self._connections.get(uid, 0)
            if total >= self.max_connections or mine >= self.max_connections_per_user:
                return False
            self._connections[uid] = mine + 1
            return True

    def _release(self, uid: int) -> None:
        with self._count_lock:
            left = self._connections.get(uid, 1) - 1
            if left > 0:
                self._connections[uid] = left
            else:
                self._connections.pop(uid, None)

    def stop(self) -> None:
        """Stop accepting (running calls finish in their threads)."""
        self._stopping.set()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)

    def serve_connection(self, sock: socket.socket, peer: PeerCredentials) -> None:
        """Answer the requests of one connection, in order, until it closes."""
        connection = rpc.Connection(sock)
        log.debug("connection from %s", peer)
        try:
            while True:
                try:
                    received = connection.receive()
                    if received is None:
                        return
                    request = rpc.parse_request(*received)
                except rpc.InvalidMessage as error:
                    log.info("bad message from %s: %s", peer, error)
                    connection.send(error.reply())
                    if error.fatal:
                        return
                    continue
                try:
                    answer = self.answer(peer.uid, request, connection)
                finally:
                    rpc.close_fds(request.fds)
                if not request.oneway:
                    connection.send(answer)
        except OSError as error:
            log.debug("connection from %s ended: %s", peer, error)
        finally:
            connection.close()
            self._release(peer.uid)

    def answer(self, uid: int, request: rpc.Request, connection: rpc.Connection | None) -> dict[str, Any]:
        """The reply to ``request`` from the session of ``uid``."""
        if request.method == rpc.GET_INFO:
            return handle_request(None, request)
        try:
            session = self.factory.session_for(uid)
        except WslError as error:
            return rpc.error_reply(rpc.ERROR_WSL, error.to_dict())
        except Exception as error:
            log.exception("cannot create the session of uid %d", uid)
            return rpc.error_reply(rpc.ERROR_INTERNAL, {"message": f"{type(error).__name__}: {error}"})
        return handle_request(session, request, connection)


# --------------------------------------------------------------------------------------------
# The listening socket
# --------------------------------------------------------------------------------------------


class ServiceSetupError(Exception):
    """The service cannot start (socket in use, unsafe folder, ...)."""


def systemd_listener(environ: Mapping[str, str] | None = None) -> socket.socket | None:
    """The socket systemd passed (socket activation), or None when not started that way."""
    env = os.environ if environ is None else environ
    if env.get("LISTEN_PID") != str(os.getpid()):
        return None
    try:
        count = int(env.get("LISTEN_FDS", "0"))
    except ValueError:
        raise ServiceSetupError(f"LISTEN_FDS is not a number: {env.get('LISTEN_FDS')!r}") from None
    if count != 1:
        raise ServiceSetupError(f"expected exactly one socket from systemd, got {count}")
    sock = socket.socket(fileno=SD_LISTEN_FDS_START)
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        raise ServiceSetupError("the socket systemd passed is not a Unix stream socket")
    sock.set_inheritable(False)
    if environ is None:
        for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            os.environ.pop(name, None)
    return sock


def _prepare_folder(folder: Path) -> None:
    """Create the socket's folder (0755); refuse one that others could swap things in."""
    if not folder.exists():
        folder.mkdir(mode=0o755, parents=True)
        os.chmod(folder, 0o755)
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode):
        raise ServiceSetupError(f"{folder} is not a directory")
    if info.st_uid != os.geteuid() or (info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX):
        raise ServiceSetupError(f"{folder} is writable by other users; refusing to put the socket there")


def bind_listener(path: str) -> socket.socket:
    """Listen on ``path`` (0666): replaces a stale socket, refuses when a service answers there."""
    target = Path(path)
    _prepare_folder(target.parent)
    try:
        info = os.lstat(target)
    except FileNotFoundError:
        info = None
    if info is not None:
        if not stat.S_ISSOCK(info.st_mode):
            raise ServiceSetupError(f"{target} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(target))
        except OSError:
            pass
        else:
            raise ServiceSetupError(f"a service is already listening on {target}")
        finally:
            probe.close()
    staging = target.with_name(f".{target.name}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(staging)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(staging))
        os.chmod(staging, 0o666)
        sock.listen(128)
        os.rename(staging, target)
    except BaseException:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staging)
        raise
    return sock


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signum)


def run(listener: socket.socket, factory: SessionFactory, *, ready: Callable[[], None] | None = None) -> None:
    """Serve until SIGTERM or SIGINT (call from the main thread)."""
    service = Service(listener, factory)
    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        if ready is not None:
            ready()
        service.serve_forever()
    except _Stop:
        log.info("stopping")
    finally:
        service.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pywsl-service",
        description="The pywsl service: gives every local user their own WSL user session.",
    )
    parser.add_argument(
        "--socket",
        default=None,
        help=f"socket to listen on (default: ${rpc.SOCKET_ENVIRONMENT_VARIABLE} or {rpc.DEFAULT_SOCKET}); "
        "ignored under systemd socket activation",
    )
    parser.add_argument("--install-units", action="store_true", help="install the systemd units and exit")
    parser.add_argument("--uninstall-units", action="store_true", help="remove the systemd units and exit")
    parser.add_argument(
        "--prefix", default=None, help="folder for --install-units (default: /etc/systemd/system)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every connection")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if arguments.verbose else logging.INFO,
        format="pywsl-service: %(message)s",
        stream=sys.stderr,
    )
    if arguments.install_units or arguments.uninstall_units:
        from pywsl.api import service_install

        return service_install.run(
            uninstall=arguments.uninstall_units, prefix=arguments.prefix, executable=sys.executable
        )
    if arguments.prefix is not None:
        print("pywsl-service: --prefix only goes with --install-units", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("pywsl-service: must run as root (it acts for every user)", file=sys.stderr)
        return 1
    path = arguments.socket or rpc.socket_path()
    try:
        activated = systemd_listener()  # systemd owns (and removes) a socket it passed
        listener = activated or bind_listener(path)
        bound = None if activated else os.stat(path).st_ino
    except (ServiceSetupError, OSError) as error:
        print(f"pywsl-service: {error}", file=sys.stderr)
        return 1
    try:
        factory = user_session_factory()
    except ImportError as error:
        print(f"pywsl-service: the user session is not available: {error}", file=sys.stderr)
        return 1
    log.info("listening on %s", "the socket systemd passed" if activated else path)
    try:
        run(listener, factory)
    finally:
        listener.close()
        if bound is not None:
            _remove_socket(path, bound)
    return 0


def _remove_socket(path: str, inode: int) -> None:
    """Remove the socket this service bound (not one a newer service put there since)."""
    with contextlib.suppress(OSError):
        if os.lstat(path).st_ino == inode:
            os.unlink(path)


if __name__ == "__main__":
    sys.exit(main())
