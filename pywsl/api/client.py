"""The client side of the service: ``ILxssUserSession`` through COM, as wsl.exe sees it.

``ServiceClient`` has the methods of ``UserSession`` with the same signatures, results and
``WslError``s, and carries each call to the root service over its socket (``pywsl.api.rpc``).
Files named by path are opened here, by the caller, with the caller's own rights, and travel as
file descriptors; relative paths are made absolute against the caller's working folder.
``create_lx_process`` passes the caller's stdio and its ends of the process's control and exit
sockets, then talks to the relay directly: the service is out of the data path.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any, BinaryIO

from pywsl.api import rpc
from pywsl.api.errors import WslError, from_os_error

__all__ = ["ServiceClient"]

Distro = str | uuid.UUID | None
Progress = Callable[..., Any]


def _disconnected(path: str, what: str) -> WslError:
    return WslError("RPC_E_DISCONNECTED", f"The pywsl service at {path} {what}.")


class _Pump(threading.Thread):
    """Copies between a Python file object without a descriptor and a pipe end."""

    def __init__(self, source: Callable[[int], bytes], sink: Callable[[bytes], Any], close: int) -> None:
        super().__init__(daemon=True)
        self._source, self._sink, self._close = source, sink, close

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
            view = view[os.write(fd, view):]

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
        if isinstance(source, int):
            return self.add(source)
        if isinstance(source, str | os.PathLike):
            try:
                return self.add(os.open(source, os.O_RDONLY | os.O_CLOEXEC), owned=True)
            except OSError as error:
                raise from_os_error(error) from None
        fd = _fileno(source)
        if fd is not None:
            return self.add(fd)
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        pump = _Pump(source.read, _write_all(write_end), write_end)
        self.pumps.append(pump)
        return self.add(read_end, owned=True)

    def writable(self, target: IO[bytes] | int) -> int:
        """An fd to write ``target`` through: an fd, or a pipe drained into a stream."""
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
        self.close()
        for pump in self.pumps:
            if pump.is_alive():
                pump.join()


def _fileno(stream: IO[bytes]) -> int | None:
    try:
        return stream.fileno()
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return None


def _absolute(path: str | os.PathLike[str] | None) -> str | None:
    return None if path is None else os.path.abspath(os.fspath(path))


class ServiceClient:
    """``UserSession``'s methods, carried to the root service (``pywsl.api.service``)."""

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
            raise WslError(
                "ERROR_SERVICE_NOT_ACTIVE",
                f"The pywsl service is not running (cannot connect to {self.path}: "
                f"{error.strerror or error}). Start it with 'pywsl-service' as root, or enable "
                "pywsl.socket.",
            ) from None
        return rpc.Connection(sock)

    def _take(self) -> rpc.Connection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self._connect()

    def _give_back(self, connection: rpc.Connection) -> None:
        with self._lock:
            self._idle.append(connection)

    def call(self, method_name: str, parameters: Mapping[str, Any] | None = None, *,
             fds: Sequence[int] = (), progress: Progress | None = None) -> dict[str, Any]:
        """One request; the final reply's parameters, or the WslError the service reported."""
        method = rpc.method(f"{rpc.INTERFACE}.{method_name}")
        request: dict[str, Any] = {"method": method.full_name, "parameters": dict(parameters or {})}
        if progress is not None:
            request["more"] = True
        connection = self._take()
        try:
            answer = self._exchange(connection, request, fds, method_name, progress)
        except BaseException:
            connection.close()
            raise
        self._give_back(connection)
        return _result(answer, method_name)

    def _exchange(self, connection: rpc.Connection, request: Mapping[str, Any], fds: Sequence[int],
                  method_name: str, progress: Progress | None) -> Mapping[str, Any]:
        try:
            connection.send(request, fds)
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
        self.call("CreateInstance", {"distro": rpc.encode_distro(distro)})

    def register_distribution(
        self,
        name: str | None,
        source: str | os.PathLike[str] | BinaryIO | int,
        *,
        location: str | os.PathLike[str] | None = None,
        version: int = 2,
        run_oobe: bool = False,
        progress: Progress | None = None,
    ) -> Any:
        from pywsl.api.session import DistributionInfo

        fds = _Fds()
        try:
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
                },
                fds=fds.fds,
                progress=progress,
            )
        finally:
            fds.finish()
        return _decode(DistributionInfo, result, "distribution")

    def get_distribution_id(self, name: str, *, list_all: bool = False) -> uuid.UUID:
        result = self.call("GetDistributionId", {"name": name, "list_all": list_all})
        identifier: uuid.UUID = _decode(uuid.UUID, result, "id")
        return identifier

    def terminate_distribution(self, distro: Distro = None) -> None:
        self.call("TerminateDistribution", {"distro": rpc.encode_distro(distro)})

    def unregister_distribution(self, distro: Distro) -> None:
        self.call("UnregisterDistribution", {"distro": rpc.encode_distro(distro)})

    def configure_distribution(self, distro: Distro, *, default_uid: int | None = None,
                               flags: int | None = None) -> None:
        self.call(
            "ConfigureDistribution",
            {"distro": rpc.encode_distro(distro), "default_uid": default_uid, "flags": flags},
        )

    def get_distribution_configuration(self, distro: Distro = None) -> Any:
        from pywsl.api.session import DistributionConfiguration

        result = self.call("GetDistributionConfiguration", {"distro": rpc.encode_distro(distro)})
        return _decode(DistributionConfiguration, result, "configuration")

    def get_default_distribution(self) -> uuid.UUID:
        identifier: uuid.UUID = _decode(uuid.UUID, self.call("GetDefaultDistribution"), "id")
        return identifier

    def set_default_distribution(self, distro: Distro) -> None:
        self.call("SetDefaultDistribution", {"distro": rpc.encode_distro(distro)})

    def enumerate_distributions(self) -> list[Any]:
        from pywsl.api.session import DistributionInfo

        return _decode(list[DistributionInfo], self.call("EnumerateDistributions"), "distributions")  # type: ignore[no-any-return]

    def export_distribution(
        self,
        distro: Distro,
        target: str | os.PathLike[str] | BinaryIO | int,
        *,
        format: str = "tar",
        progress: Progress | None = None,
    ) -> None:
        fds = _Fds()
        created: str | None = None
        try:
            if isinstance(target, str | os.PathLike):
                created = os.path.abspath(os.fspath(target))
                try:
                    index = fds.add(
                        os.open(created, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666),
                        owned=True,
                    )
                except OSError as error:
                    created = None
                    raise from_os_error(error) from None
            else:
                index = fds.writable(target)
            fds.start()
            self.call(
                "ExportDistribution",
                {"distro": rpc.encode_distro(distro), "target": index, "format": format},
                fds=fds.fds,
                progress=progress,
            )
        except WslError:
            if created is not None:
                with contextlib.suppress(OSError):
                    os.unlink(created)
            raise
        finally:
            fds.finish()

    def move_distribution(self, distro: Distro, location: str | os.PathLike[str]) -> None:
        self.call("MoveDistribution", {"distro": rpc.encode_distro(distro), "location": _absolute(location)})

    def shutdown(self, force: bool = False) -> None:
        self.call("Shutdown", {"force": force})

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
