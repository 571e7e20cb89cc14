"""The pywsl service: ``wslservice.exe`` for a Linux host.

WSL's service runs as SYSTEM and hands every caller the ``ILxssUserSession`` of the caller's own
user (``LxssUserSessionFactory``: one implementation per SID, however many clients). This daemon
runs as root, listens on ``/run/pywsl/service.sock`` (0666, in a 0755 folder) or on a socket
passed by systemd (``LISTEN_FDS``), and gives every connection the ``UserSession`` of its peer
uid, taken from ``SO_PEERCRED``: a client can never name another user. Requests follow
``pywsl.api.service.rpc``.

Load is bounded (``service_loop``, ``service_limits``): one thread watches every connection, so
an idle connection costs a descriptor, not a thread; at most ``MAX_WORKERS`` requests run at once
(``MAX_WORKERS_PER_USER`` per user, users served in turn); at most ``MAX_CONNECTIONS``
connections are held (``MAX_CONNECTIONS_PER_USER`` per user). A uid inside a user's VM id range
(any id a distribution's root can switch to) counts as that user, and is refused every method
but ``GetInfo``. Any failure inside a request becomes an error reply; ``accept()`` failures pause
accepting briefly, never end the service. At start the service raises its ``RLIMIT_NOFILE`` soft
limit to the hard limit. A client that closes its connection cancels the request it waits for
(``pywsl.api.cancellation``).

The service keeps no state that a crash could lose: running distributions belong to the guest,
and launched processes talk to their relay directly, so ``kill -9`` of the service stops neither,
and the next call finds them.

``python -m pywsl.api.service.server`` (or ``pywsl-service``) runs it in the foreground;
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
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

if sys.platform == "win32":  # before the Linux-only modules below are imported
    raise SystemExit(
        "pywsl-service: the pywsl service runs on Linux only. On Windows, `pywsl` and "
        "`pywsl.connect()` use the installed WslService."
    )

from pywsl.api.cancellation import CancelToken, cancel_scope
from pywsl.api.errors import WslError, from_os_error
from pywsl.api.service import rpc
from pywsl.api.service.limits import (
    MAX_CONNECTIONS,
    MAX_CONNECTIONS_PER_USER,
    MAX_WORKERS,
    MAX_WORKERS_PER_USER,
    ConnectionLimits,
    RangeOwners,
    WorkerLimits,
    raise_descriptor_limit,
)
from pywsl.api.service.loop import ClientConnection, PeerCredentials, ServiceLoop, peer_credentials
from pywsl.api.session import user_warnings

__all__ = [
    "MAX_CONNECTIONS",
    "MAX_CONNECTIONS_PER_USER",
    "MAX_WORKERS",
    "MAX_WORKERS_PER_USER",
    "PeerCredentials",
    "Service",
    "ServiceSetupError",
    "SessionFactory",
    "bind_listener",
    "call",
    "handle_request",
    "main",
    "peer_credentials",
    "python_name",
    "run",
    "send_reply",
    "systemd_listener",
    "user_session_factory",
]

log = logging.getLogger("pywsl.service")

SD_LISTEN_FDS_START = 3


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
    from pywsl.api.session.user_session import UserSession

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

    def __call__(self, value: Any) -> None:
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


def call(
    session: Any, method: rpc.Method, arguments: dict[str, Any], progress_to: rpc.Connection | None = None
) -> dict[str, Any]:
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
    if method.name == "InstallBuiltinDistribution":
        return {"distribution": rpc.encode_value(_install_builtin(session, arguments, progress_to))}
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


def _install_builtin(session: Any, arguments: dict[str, Any], progress_to: rpc.Connection | None) -> Any:
    """``InstallBuiltinDistribution``: the service's own build, then the session's import."""
    from pywsl.api.install.builtin_service import install_builtin_distribution

    progress = ProgressSender(progress_to) if progress_to else None
    try:
        return install_builtin_distribution(session, progress=progress, **arguments)
    finally:
        if progress is not None:
            progress.close()


def _version() -> str:
    try:
        return importlib.metadata.version("pywsl")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def handle_request(
    session: Any, request: rpc.Request, connection: rpc.Connection | None = None
) -> dict[str, Any]:
    """The reply to one request (never raises for anything the client or the session did).

    The warnings the call emitted for the user (``user_warnings``) go with the reply, success or
    failure, as ``"warnings": [str, ...]``.
    """
    warnings: list[str] = []
    with user_warnings.collecting(warnings.append):
        answer = _answer(session, request, connection)
    if warnings:
        answer["warnings"] = warnings
    return answer


def _answer(session: Any, request: rpc.Request, connection: rpc.Connection | None) -> dict[str, Any]:
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
    """Accepts connections on ``listener`` and answers their requests (``service_loop``).

    Limits count by owner: a peer uid inside a user's VM id range counts as that user
    (``service_limits.RangeOwners``). Such a peer gets ``E_ACCESSDENIED`` for every method but
    ``GetInfo``: only host users have sessions, and a distribution reaches its owner's session
    through the id mapped to the owner.
    """

    def __init__(
        self,
        listener: socket.socket,
        factory: SessionFactory,
        *,
        max_connections: int = MAX_CONNECTIONS,
        max_connections_per_user: int = MAX_CONNECTIONS_PER_USER,
        max_workers: int = MAX_WORKERS,
        max_workers_per_user: int = MAX_WORKERS_PER_USER,
        owners: RangeOwners | None = None,
    ) -> None:
        self.listener = listener
        self.factory = factory
        self.limits = ConnectionLimits(max_connections, max_connections_per_user)
        self.owners = owners or RangeOwners()
        self._loop = ServiceLoop(
            listener,
            self.serve_message,
            connections=self.limits,
            workers=WorkerLimits(max_workers, max_workers_per_user),
            owners=self.owners,
        )

    def serve_forever(self) -> None:
        self._loop.run()

    def stop(self) -> None:
        """Stop accepting (running calls finish in their threads)."""
        self._loop.stop()

    def serve_message(
        self, client: ClientConnection, data: bytes, fds: list[int], token: CancelToken
    ) -> None:
        """Answer one message of ``client`` (in a worker thread; the loop closes ``fds``)."""
        connection = client.connection
        try:
            request = rpc.parse_request(rpc.decode_message(data), fds)
        except rpc.InvalidMessage as error:
            log.info("bad message from %s: %s", client.peer, error)
            send_reply(connection, error.reply())
            return
        if request.oneway:
            token = CancelToken()  # nobody waits for it: going away does not cancel it
        elif token.cancelled:
            log.debug("%s from %s: the client went away before it started", request.method, client.peer)
            return
        with cancel_scope(token):
            if client.owner != client.peer.uid and request.method != rpc.GET_INFO:
                answer = rpc.error_reply(
                    rpc.ERROR_WSL,
                    WslError(
                        "E_ACCESSDENIED",
                        f"uid {client.peer.uid} belongs to the id range of the VM of uid {client.owner}; "
                        "the pywsl service serves host users only.",
                    ).to_dict(),
                )
            else:
                answer = self.answer(client.peer.uid, request, connection)
        if not request.oneway:
            send_reply(connection, answer)

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


def send_reply(connection: rpc.Connection, answer: dict[str, Any]) -> None:
    """Send ``answer``; one that cannot be encoded or is too large becomes an InternalError reply."""
    try:
        data = rpc.encode_message(answer, limit=connection.send_limit)
    except rpc.InvalidMessage as error:
        log.error("cannot send a reply: %s", error)
        data = rpc.encode_message(
            rpc.error_reply(rpc.ERROR_INTERNAL, {"message": f"the service cannot send its reply: {error}"})
        )
    connection.send_encoded(data)


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
        help=f"socket to listen on (default: ${rpc.SOCKET_ENVIRONMENT_VARIABLE}, else {rpc.SOCKET_NAME} in "
        f"$PYWSL_RUNTIME_ROOT, else {rpc.DEFAULT_SOCKET}); ignored under systemd socket activation; "
        "with --install-units, the socket the units listen on",
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
        from pywsl.api.service import units as service_install

        return service_install.run(
            uninstall=arguments.uninstall_units,
            prefix=arguments.prefix,
            executable=sys.executable,
            socket_path=arguments.socket,
        )
    if arguments.prefix is not None:
        print("pywsl-service: --prefix only goes with --install-units", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("pywsl-service: must run as root (it acts for every user)", file=sys.stderr)
        return 1
    path = arguments.socket or rpc.socket_path()
    soft, hard = raise_descriptor_limit()
    log.debug("descriptor limit %d (hard %d)", soft, hard)
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
