"""The client side of the service: ``ILxssUserSession`` through COM, as wsl.exe sees it.

``ServiceClient`` has the methods of ``UserSession`` with the same signatures, results and
``WslError``s, and carries each call to the root service over its socket (``pywsl.api.service.rpc``).
Files named by path are opened here, by the caller, with the caller's own rights, and travel as
file descriptors; relative paths are made absolute against the caller's working folder.
``create_lx_process`` passes the caller's stdio and its ends of the process's control and exit
sockets, then talks to the relay directly: the service is out of the data path.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import select
import socket
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any, BinaryIO

from pywsl.api.errors import WslError, error_context
from pywsl.api.service import launch_client, rpc
from pywsl.api.session import user_warnings

if TYPE_CHECKING:
    from pywsl.api.process.lx_process import LxProcess, PreparedStdio
    from pywsl.api.session.distribution_info import DistributionConfiguration, DistributionInfo

__all__ = ["ServiceClient"]

Distro = str | uuid.UUID | None
Progress = Callable[[int], Any]


def _disconnected(path: str, what: str) -> WslError:
    return WslError("RPC_E_DISCONNECTED", f"The pywsl service at {path} {what}.")


HOW_TO_START = (
    "Start it as root with 'systemctl enable --now pywsl.socket' (after "
    "'pywsl-service --install-units' and 'systemctl daemon-reload'), or run 'pywsl-service' "
    "as root in the foreground."
)
# connect() failures that mean nobody serves the socket (missing, stale, or not a socket).
_NOT_RUNNING = frozenset({errno.ENOENT, errno.ECONNREFUSED, errno.ENOTSOCK, errno.ENOTDIR})


def _unreachable(path: str, error: OSError) -> WslError:
    """The error for a socket that cannot be connected to: not running (and how to start it), or
    not reachable by this user."""
    reason = error.strerror or str(error)
    if error.errno in _NOT_RUNNING:
        return WslError(
            "ERROR_SERVICE_NOT_ACTIVE",
            f"The pywsl service is not running (cannot connect to {path}: {reason}). {HOW_TO_START}",
        )
    if error.errno in (errno.EACCES, errno.EPERM):
        return WslError("E_ACCESSDENIED", f"Cannot connect to the pywsl service at {path}: {reason}.")
    return WslError(
        "ERROR_SERVICE_NOT_ACTIVE", f"Cannot connect to the pywsl service at {path}: {reason}. {HOW_TO_START}"
    )


class _Pump(threading.Thread):
    """Copies between a Python file object without a descriptor and a pipe end."""

    def __init__(self, source: Callable[[int], bytes], sink: Callable[[bytes], Any], close: int) -> None:
        super().__init__(daemon=True)
        self._source, self._sink, self._close = source, sink, close

    def discard(self) -> None:
        """Release the pipe end of a pump that never ran."""
        with contextlib.suppress(OSError):
            os.close(self._close)

    def run(self) -> None:
        try:
            while chunk := self._source(65536):
                self._sink(chunk)
        except (OSError, ValueError):
            pass
        finally:
            with contextlib.suppress(OSError):
                os.close(self._close)


def _write_all(fd: int) -> Callable[[bytes], None]:
    def write(data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    return write


class _Fds:
    """The descriptors one request carries; owns the ones it opened."""

    def __init__(self) -> None:
        self.fds: list[int] = []
        self._owned: list[int] = []
        self.pumps: list[_Pump] = []

    def add(self, fd: int, *, owned: bool = False) -> int:
        self.fds.append(fd)
        if owned:
            self._owned.append(fd)
        return len(self.fds) - 1

    def readable(self, source: str | os.PathLike[str] | IO[bytes] | int) -> int:
        """An fd to read ``source`` from: an fd, a file opened by path, or a pipe fed from a stream."""
        if isinstance(source, bool):
            raise WslError("E_INVALIDARG", "The archive must be a path, a file object or a descriptor.")
        if isinstance(source, int):
            return self.add(source)
        if isinstance(source, str | os.PathLike):
            try:
                fd = os.open(source, os.O_RDONLY | os.O_NOCTTY | os.O_CLOEXEC)
            except OSError as error:
                code = _OPEN_ERRORS.get(error.errno or 0, "E_INVALIDARG")
                raise WslError(code, f"{os.fspath(source)}: {error.strerror}") from None
            return self.add(fd, owned=True)
        number = _fileno(source)
        if number is not None:
            return self.add(number)
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        pump = _Pump(source.read, _write_all(write_end), write_end)
        self.pumps.append(pump)
        return self.add(read_end, owned=True)

    def writable(self, target: IO[bytes] | int) -> int:
        """An fd to write ``target`` through: an fd, or a pipe drained into a stream."""
        if isinstance(target, bool):
            raise WslError("E_INVALIDARG", "The target must be a path, a file object or a descriptor.")
        if isinstance(target, int):
            return self.add(target)
        fd = _fileno(target)
        if fd is not None:
            target.flush()
            return self.add(fd)
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        pump = _Pump(lambda size: os.read(read_end, size), target.write, read_end)
        self.pumps.append(pump)
        return self.add(write_end, owned=True)

    def start(self) -> None:
        for pump in self.pumps:
            pump.start()

    def close(self) -> None:
        rpc.close_fds(self._owned)
        self._owned = []

    def finish(self) -> None:
        """Close what was opened here and wait for the pumps (closing first ends them)."""
        self.close()
        for pump in self.pumps:
            if pump.ident is None:
                pump.discard()
            else:
                pump.join()
        self.pumps = []


def _fileno(stream: IO[bytes]) -> int | None:
    try:
        return stream.fileno()
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return None


_OPEN_ERRORS = {
    errno.ENOENT: "ERROR_FILE_NOT_FOUND",
    errno.EACCES: "E_ACCESSDENIED",
    errno.EPERM: "E_ACCESSDENIED",
}
_CREATE_ERRORS = {
    errno.ENOENT: "ERROR_PATH_NOT_FOUND",
    errno.ENOTDIR: "ERROR_PATH_NOT_FOUND",
    errno.EACCES: "E_ACCESSDENIED",
    errno.EPERM: "E_ACCESSDENIED",
}


def _open_export_file(path: str) -> int:
    """Create (or truncate) the export target with the caller's rights, as the session does."""
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOCTTY | os.O_CLOEXEC, 0o666)
    except OSError as error:
        code = _CREATE_ERRORS.get(error.errno or 0, "E_INVALIDARG")
        raise WslError(code, f"{path}: {error.strerror}") from None


def _relay_took_over(prepared: PreparedStdio) -> bool:
    """After the service vanished mid-launch: does a relay hold the exit channel?

    The service's copies died with it and ours are closed here, so the exit channel reaches end
    of file unless the relay (or the session leader handing it on) has it.
    """
    prepared.close_relay_ends()
    return launch_client.relay_took_over(prepared.exit)


def _absolute(path: str | os.PathLike[str] | None) -> str | None:
    return None if path is None else os.path.abspath(os.fspath(path))


class ServiceClient:
    """``UserSession``'s methods, carried to the root service (``pywsl.api.service.server``)."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path or rpc.socket_path()
        self._idle: list[rpc.Connection] = []
        self._lock = threading.Lock()

    # -- plumbing ---------------------------------------------------------------------------

    def _connect(self) -> rpc.Connection:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(self.path)
        except OSError as error:
            sock.close()
            raise _unreachable(self.path, error) from None
        return rpc.Connection(sock, receive_limit=rpc.MAX_REPLY_SIZE)

    def _take(self) -> rpc.Connection:
        """An idle connection that is still open, or a new one."""
        while True:
            with self._lock:
                connection = self._idle.pop() if self._idle else None
            if connection is None:
                return self._connect()
            readable, _, _ = select.select([connection.sock], [], [], 0)
            if not readable:
                return connection
            connection.close()  # the service closed it (it restarted, for one)

    def _give_back(self, connection: rpc.Connection) -> None:
        with self._lock:
            self._idle.append(connection)

    def call(
        self,
        method_name: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        fds: Sequence[int] = (),
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """One request; the final reply's parameters, or the WslError the service reported."""
        method = rpc.method(f"{rpc.INTERFACE}.{method_name}")
        request: dict[str, Any] = {"method": method.full_name, "parameters": dict(parameters or {})}
        if progress is not None:
            request["more"] = True
        try:
            data = rpc.encode_message(request)
        except rpc.InvalidMessage as error:
            raise WslError("E_INVALIDARG", f"Cannot send {method_name} to the service: {error}") from None
        if len(fds) > rpc.MAX_FDS:
            raise WslError("E_INVALIDARG", f"{method_name} passes more than {rpc.MAX_FDS} descriptors.")
        connection = self._take()
        try:
            answer = self._exchange(connection, data, fds, method_name, progress)
        except BaseException:
            connection.close()
            raise
        self._give_back(connection)
        _emit_warnings(answer)
        return _result(answer, method_name)

    def _exchange(
        self,
        connection: rpc.Connection,
        data: bytes,
        fds: Sequence[int],
        method_name: str,
        progress: Progress | None,
    ) -> Mapping[str, Any]:
        try:
            # If the service closed at once, it may have said why first: that is read below.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                connection.send_encoded(data, fds)
            while True:
                received = connection.receive()
                if received is None:
                    raise _disconnected(self.path, f"closed the connection during {method_name}")
                answer, stray = received
                rpc.close_fds(stray)
                if answer.get("continues") is True and "error" not in answer:
                    if progress is not None:
                        progress(_progress_value(answer))
                    continue
                return answer
        except rpc.InvalidMessage as error:
            raise WslError("E_UNEXPECTED", f"Bad reply from the pywsl service: {error}") from None
        except OSError as error:
            raise _disconnected(self.path, f"failed during {method_name}: {error}") from None

    # -- ILxssUserSession -------------------------------------------------------------------

    def create_instance(self, distro: Distro = None) -> None:
        """``CreateInstance``."""
        self.call("CreateInstance", {"distro": rpc.encode_distro(distro)})

    def register_distribution(
        self,
        name: str | None,
        source: str | os.PathLike[str] | BinaryIO | IO[bytes] | int,
        *,
        location: str | os.PathLike[str] | None = None,
        version: int = 2,
        run_oobe: bool = False,
        progress: Progress | None = None,
        vhd: bool = False,
        vhd_size: int | None = None,
        fixed_vhd: bool = False,
    ) -> DistributionInfo:
        """``RegisterDistribution``: the archive is opened here, as the caller."""
        fds = _Fds()
        try:
            with error_context("RegisterDistro"):
                index = fds.readable(source)
            fds.start()
            result = self.call(
                "RegisterDistribution",
                {
                    "name": name,
                    "source": index,
                    "location": _absolute(location),
                    "version": version,
                    "run_oobe": run_oobe,
                    "vhd": vhd,
                    "vhd_size": vhd_size,
                    "fixed_vhd": fixed_vhd,
                },
                fds=fds.fds,
                progress=progress,
            )
        finally:
            fds.finish()
        from pywsl.api.session.distribution_info import DistributionInfo

        info: DistributionInfo = _decode(DistributionInfo, result, "distribution")
        return info

    def install_builtin_distribution(
        self,
        distribution: str,
        *,
        name: str | None = None,
        location: str | os.PathLike[str] | None = None,
        version: int = 2,
        progress: Callable[[int, int | None], Any] | None = None,
        on_status: Callable[[str], Any] | None = None,
        vhd_size: int | None = None,
        fixed_vhd: bool = False,
    ) -> DistributionInfo:
        """``InstallBuiltinDistribution``: the service builds the built-in `distribution` as root
        and registers it for the caller (as `name`, in `location`); `on_status` gets each step's
        message, `progress(done, total)` the step's progress."""

        def relay(value: Any) -> None:
            if not isinstance(value, dict):
                return
            status = value.get("status")
            done = value.get("done")
            total = value.get("total")
            if isinstance(status, str):
                if on_status is not None:
                    on_status(status)
            elif isinstance(done, int) and not isinstance(done, bool) and progress is not None:
                progress(done, total if isinstance(total, int) and not isinstance(total, bool) else None)

        result = self.call(
            "InstallBuiltinDistribution",
            {
                "distribution": distribution,
                "name": name,
                "location": _absolute(location),
                "version": version,
                "vhd_size": vhd_size,
                "fixed_vhd": fixed_vhd,
            },
            progress=relay,
        )
        from pywsl.api.session.distribution_info import DistributionInfo

        info: DistributionInfo = _decode(DistributionInfo, result, "distribution")
        return info

    def get_distribution_id(self, name: str, *, list_all: bool = False) -> uuid.UUID:
        """``GetDistributionId``."""
        identifier: uuid.UUID = _decode(
            uuid.UUID, self.call("GetDistributionId", {"name": name, "list_all": list_all}), "id"
        )
        return identifier

    def terminate_distribution(self, distro: Distro = None) -> None:
        """``TerminateDistribution``."""
        self.call("TerminateDistribution", {"distro": rpc.encode_distro(distro)})

    def unregister_distribution(self, distro: Distro) -> None:
        """``UnregisterDistribution``."""
        self.call("UnregisterDistribution", {"distro": rpc.encode_distro(distro)})

    def configure_distribution(
        self, distro: Distro, *, default_uid: int | None = None, flags: int | None = None
    ) -> None:
        """``ConfigureDistribution``."""
        self.call(
            "ConfigureDistribution",
            {"distro": rpc.encode_distro(distro), "default_uid": default_uid, "flags": flags},
        )

    def complete_oobe(self, distro: Distro, default_uid: int | None = None) -> None:
        """What WSL does on a successful ``OobeResult``."""
        self.call("CompleteOobe", {"distro": rpc.encode_distro(distro), "default_uid": default_uid})

    def get_distribution_configuration(self, distro: Distro = None) -> DistributionConfiguration:
        """``GetDistributionConfiguration``."""
        from pywsl.api.session.distribution_info import DistributionConfiguration

        result = self.call("GetDistributionConfiguration", {"distro": rpc.encode_distro(distro)})
        configuration: DistributionConfiguration = _decode(DistributionConfiguration, result, "configuration")
        return configuration

    def get_default_distribution(self) -> uuid.UUID:
        """``GetDefaultDistribution``."""
        identifier: uuid.UUID = _decode(uuid.UUID, self.call("GetDefaultDistribution"), "id")
        return identifier

    def set_default_distribution(self, distro: Distro) -> None:
        """``SetDefaultDistribution``."""
        self.call("SetDefaultDistribution", {"distro": rpc.encode_distro(distro)})

    def enumerate_distributions(self) -> list[DistributionInfo]:
        """``EnumerateDistributions``."""
        from pywsl.api.session.distribution_info import DistributionInfo

        result = self.call("EnumerateDistributions")
        distributions: list[DistributionInfo] = _decode(list[DistributionInfo], result, "distributions")
        return distributions

    def create_lx_process(
        self,
        distro: Distro = None,
        command_line: Sequence[str] = (),
        *,
        filename: str | None = None,
        cwd: str = "",
        username: str = "",
        login: bool = False,
        stdin: Any = None,
        stdout: Any = None,
        stderr: Any = None,
        environment: Mapping[str, str] | None = None,
        wslenv_source: Mapping[str, str] | None = None,
    ) -> LxProcess:
        """``CreateLxProcess``: stdio and the relay's control and exit ends go to the service as
        descriptors; the returned ``LxProcess`` talks to the relay directly."""
        from pywsl.api.process.lx_process import LxProcess

        source = launch_client.shared_environment(os.environ if wslenv_source is None else wslenv_source)
        arguments = [str(item) for item in command_line]

        def parameters(prepared: PreparedStdio) -> dict[str, Any]:
            return launch_client.create_lx_process_parameters(
                rpc.encode_distro(distro),
                arguments,
                filename=filename,
                cwd=cwd,
                username=username,
                login=login,
                environment=environment,
                wslenv_source=source,
                console=prepared.console,
                rows=prepared.rows,
                columns=prepared.columns,
            )

        def launch(prepared: PreparedStdio) -> int:
            try:
                result = self.call("CreateLxProcess", parameters(prepared), fds=prepared.relay_fds)
            except WslError as error:
                if error.code == "RPC_E_DISCONNECTED" and _relay_took_over(prepared):
                    return 0  # the relay runs; the service went away before it said its pid
                raise
            pid: int = _decode(int, result, "pid")
            return pid

        try:
            return LxProcess.start(
                launch,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                args=[filename] if filename and not arguments else arguments,
            )
        except (TypeError, ValueError) as error:
            raise WslError("E_INVALIDARG", str(error), context="Wsl/Service/CreateLxProcess") from None

    def export_distribution(
        self,
        distro: Distro,
        target: str | os.PathLike[str] | BinaryIO | IO[bytes] | int,
        *,
        format: str = "tar",
        progress: Progress | None = None,
    ) -> None:
        """``ExportDistribution``: a path is created here, as the caller, and removed again if the
        export fails."""
        fds = _Fds()
        created: str | None = None
        try:
            with error_context("ExportDistro"):
                if isinstance(target, str | os.PathLike):
                    path = os.path.abspath(os.fspath(target))
                    index = fds.add(_open_export_file(path), owned=True)
                    created = path
                else:
                    index = fds.writable(target)
            fds.start()
            self.call(
                "ExportDistribution",
                {"distro": rpc.encode_distro(distro), "target": index, "format": format},
                fds=fds.fds,
                progress=progress,
            )
        except BaseException:
            fds.finish()
            if created is not None:
                with contextlib.suppress(OSError):
                    os.unlink(created)
            raise
        fds.finish()

    def move_distribution(self, distro: Distro, location: str | os.PathLike[str]) -> None:
        """``MoveDistribution``."""
        self.call("MoveDistribution", {"distro": rpc.encode_distro(distro), "location": _absolute(location)})

    def shutdown(self, force: bool = False) -> None:
        """``Shutdown``."""
        self.call("Shutdown", {"force": force})

    def set_version(self, distro: Distro, version: int) -> None:
        """``SetVersion``."""
        self.call("SetVersion", {"distro": rpc.encode_distro(distro), "version": version})

    def set_sparse(self, distro: Distro, sparse: bool, *, allow_unsafe: bool = False) -> None:
        """``SetSparse``."""
        self.call(
            "SetSparse", {"distro": rpc.encode_distro(distro), "sparse": sparse, "allow_unsafe": allow_unsafe}
        )

    def resize_distribution(self, distro: Distro, new_size: int, *, output: Any = None) -> None:
        """``ResizeDistribution``: tool output goes to ``output`` (a descriptor or binary file)."""
        fds = _Fds()
        try:
            index = None if output is None else fds.writable(output)
            fds.start()
            self.call(
                "ResizeDistribution",
                {"distro": rpc.encode_distro(distro), "new_size": new_size, "output": index},
                fds=fds.fds,
            )
        finally:
            fds.finish()

    def import_distribution_inplace(self, name: str, vhd_path: str | os.PathLike[str]) -> uuid.UUID:
        """``ImportDistributionInplace``."""
        result = self.call("ImportDistributionInplace", {"name": name, "vhd_path": _absolute(vhd_path)})
        identifier: uuid.UUID = _decode(uuid.UUID, result, "id")
        return identifier

    def attach_disk(self, disk: str, *, vhd: bool = False) -> None:
        """``AttachDisk``."""
        self.call("AttachDisk", {"disk": disk, "vhd": vhd})

    def detach_disk(self, disk: str | None = None) -> None:
        """``DetachDisk``."""
        self.call("DetachDisk", {"disk": disk})

    def mount_disk(
        self,
        disk: str,
        *,
        vhd: bool = False,
        partition: int = 0,
        name: str | None = None,
        fs_type: str | None = None,
        options: str | None = None,
    ) -> str:
        """``MountDisk``: the mount name."""
        result = self.call(
            "MountDisk",
            {
                "disk": disk,
                "vhd": vhd,
                "partition": partition,
                "name": name,
                "fs_type": fs_type,
                "options": options,
            },
        )
        mount_name: str = _decode(str, result, "name")
        return mount_name

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _progress_value(answer: Mapping[str, Any]) -> Any:
    parameters = answer.get("parameters")
    return parameters.get("progress") if isinstance(parameters, dict) else None


def _emit_warnings(answer: Mapping[str, Any]) -> None:
    """The warnings the service collected for the user, emitted again on this side."""
    warnings = answer.get("warnings")
    if isinstance(warnings, list):
        for text in warnings:
            if isinstance(text, str):
                user_warnings.emit(text)


def _result(answer: Mapping[str, Any], method_name: str) -> dict[str, Any]:
    parameters = answer.get("parameters", {})
    if not isinstance(parameters, dict):
        raise WslError("E_UNEXPECTED", f"Bad reply from the pywsl service to {method_name}.")
    error = answer.get("error")
    if error is None:
        return parameters
    if error == rpc.ERROR_WSL:
        try:
            raise WslError.from_dict(parameters)
        except ValueError:
            pass
    if error in (rpc.ERROR_INVALID_PARAMETER, rpc.ERROR_METHOD_NOT_FOUND, rpc.ERROR_INVALID_MESSAGE):
        detail = parameters.get("message") or parameters.get("method") or error
        raise WslError("E_INVALIDARG", f"The pywsl service refused {method_name}: {detail}")
    if error == rpc.ERROR_BUSY:
        raise WslError("E_FAIL", f"The pywsl service refused {method_name}: {parameters.get('message')}")
    raise WslError(
        "E_UNEXPECTED", f"The pywsl service failed in {method_name}: {parameters.get('message', error)}"
    )


def _decode(annotation: Any, result: Mapping[str, Any], key: str) -> Any:
    if key not in result:
        raise WslError("E_UNEXPECTED", f"The pywsl service's reply has no {key!r}.")
    try:
        return rpc.decode_value(annotation, result[key])
    except ValueError as error:
        raise WslError("E_UNEXPECTED", f"Bad reply from the pywsl service: {error}") from None
