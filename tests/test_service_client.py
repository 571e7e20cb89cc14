"""ServiceClient: UserSession's methods and errors through the service, with a scripted session."""

from __future__ import annotations

import inspect
import io
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pywsl.api.errors import WslError
from pywsl.api.service import rpc
from pywsl.api.service import server as service
from pywsl.api.service.client import ServiceClient
from pywsl.api.session.distribution_info import DistributionConfiguration, DistributionInfo
from pywsl.api.session.registry import DistributionState
from pywsl.api.session.user_session import UserSession
from pywsl.wire import schema
from pywsl.wire.channel import MessageChannel

EXIT_STATUS = schema("LX_INIT_PROCESS_EXIT_STATUS")
GUID = uuid.UUID("0b5c5d3e-1f2a-4b3c-8d4e-5f6a7b8c9d0e")
NOT_RPC = {"config", "vm_config", "close"}


def _public(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_") and name not in NOT_RPC
    }


def test_client_has_every_session_method_with_the_same_signature() -> None:
    session_methods = _public(UserSession)
    client_methods = _public(ServiceClient)
    session_methods.pop("launch_lx_process")  # the service half of create_lx_process
    client_methods.pop("call")  # the raw request
    client_methods.pop("install_builtin_distribution")  # the service's own build (builtin_service)
    assert sorted(session_methods) == sorted(client_methods)
    for name, expected in session_methods.items():
        got = client_methods[name]
        assert [(p.name, p.kind, p.default) for p in got.parameters.values()] == [
            (p.name, p.kind, p.default) for p in expected.parameters.values()
        ], name


def test_every_rpc_method_reaches_a_session_method_by_its_parameters() -> None:
    from pywsl.api.install import builtin_service

    for method in rpc.METHODS.values():
        target = "launch_lx_process" if method.name == "CreateLxProcess" else service.python_name(method.name)
        owner: Any = builtin_service if method.name == "InstallBuiltinDistribution" else UserSession
        parameters = set(inspect.signature(getattr(owner, target)).parameters)
        names = set(method.params)
        if method.name == "CreateLxProcess":
            names = (names - {"control", "exit"}) | {"control_fd", "exit_fd"}
        assert names <= parameters, (method.name, names - parameters)


class ScriptedSession:
    """Enough of a UserSession to check what crosses the socket, including a fake relay."""

    def __init__(self, uid: int) -> None:
        self.uid = uid
        self.imported = b""
        self.launches: list[dict[str, Any]] = []
        self.relays: list[threading.Thread] = []

    def _info(self) -> DistributionInfo:
        return DistributionInfo(
            id=GUID,
            name="Deb",
            state=DistributionState.RUNNING,
            version=2,
            is_default=True,
            flavor="debian",
            os_version="12",
            base_path=Path("/srv/deb"),
            default_uid=1000,
            run_oobe=False,
        )

    def _check(self, distro: Any) -> None:
        if distro not in (None, GUID, "Deb", "deb"):
            raise WslError("WSL_E_DISTRO_NOT_FOUND", context="Wsl/Service/Test")

    def enumerate_distributions(self) -> list[DistributionInfo]:
        return [self._info()]

    def get_distribution_configuration(self, distro: Any = None) -> DistributionConfiguration:
        self._check(distro)
        return DistributionConfiguration(GUID, "Deb", 2, 1000, 7, ["PATH=/bin"], Path("/srv/deb"))

    def register_distribution(
        self,
        name: str | None,
        source: int,
        *,
        location: str | None = None,
        version: int = 2,
        run_oobe: bool = False,
        progress: Any = None,
        vhd: bool = False,
        vhd_size: int | None = None,
        fixed_vhd: bool = False,
    ) -> DistributionInfo:
        chunks = []
        while chunk := os.read(source, 1 << 16):
            chunks.append(chunk)
        self.imported = b"".join(chunks)
        if progress is not None:
            progress(len(self.imported))
        if location is not None and not os.path.isabs(location):
            raise WslError("E_INVALIDARG", "relative location reached the service")
        return self._info()

    def export_distribution(
        self, distro: Any, target: int, *, format: str = "tar", progress: Any = None
    ) -> None:
        os.write(target, b"partial")
        self._check(distro)
        os.write(target, f" {format}".encode())

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
        raise WslError("ERROR_NOT_SUPPORTED", "no disks here")

    def launch_lx_process(self, **arguments: Any) -> int:
        self.launches.append(
            {
                k: v
                for k, v in arguments.items()
                if not k.endswith(("fd",)) and k not in ("stdin", "stdout", "stderr")
            }
        )
        stdin, stdout = os.dup(arguments["stdin"]), os.dup(arguments["stdout"])
        exit_channel = MessageChannel(socket.socket(fileno=os.dup(arguments["exit_fd"])), name="exit")

        def relay() -> None:
            data = b""
            while chunk := os.read(stdin, 4096):
                data += chunk
            os.write(stdout, data.upper())
            os.close(stdout)
            os.close(stdin)
            exit_channel.send(EXIT_STATUS, ExitCode=len(data))
            echo, _ = exit_channel.receive(EXIT_STATUS, timeout=10)
            assert echo.ExitCode == len(data)
            exit_channel.close()

        thread = threading.Thread(target=relay, daemon=True)
        thread.start()
        self.relays.append(thread)
        return 777


Running = tuple[ServiceClient, dict[int, ScriptedSession]]


@pytest.fixture
def running() -> Iterator[Running]:
    folder = Path(tempfile.mkdtemp(prefix="pywsl-client-"))
    sessions: dict[int, ScriptedSession] = {}

    def create(uid: int) -> ScriptedSession:
        sessions[uid] = ScriptedSession(uid)
        return sessions[uid]

    listener = service.bind_listener(str(folder / "s.sock"))
    server = service.Service(listener, service.SessionFactory(create))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    client = ServiceClient(str(folder / "s.sock"))
    yield client, sessions
    client.close()
    server.stop()
    listener.close()
    thread.join(5)
    shutil.rmtree(folder)


def test_results_are_the_session_dataclasses(running: Running) -> None:
    client, _ = running
    [info] = client.enumerate_distributions()
    assert isinstance(info, DistributionInfo)
    assert info.state is DistributionState.RUNNING and info.base_path == Path("/srv/deb")
    configuration = client.get_distribution_configuration("Deb")
    expected = DistributionConfiguration(GUID, "Deb", 2, 1000, 7, ["PATH=/bin"], Path("/srv/deb"))
    assert configuration == expected
    with pytest.raises(WslError) as caught:
        client.get_distribution_configuration(uuid.uuid4())
    assert (caught.value.code, caught.value.context) == ("WSL_E_DISTRO_NOT_FOUND", "Wsl/Service/Test")
    with pytest.raises(WslError) as caught:
        client.mount_disk("/dev/sdz")
    assert caught.value.code == "ERROR_NOT_SUPPORTED"


def test_register_opens_the_archive_as_the_caller(
    running: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, sessions = running
    archive = tmp_path / "a.tar"
    archive.write_bytes(b"archive bytes")
    monkeypatch.chdir(tmp_path)
    seen: list[int] = []
    info = client.register_distribution("Deb", "a.tar", location="relative/place", progress=seen.append)
    assert info.id == GUID
    assert sessions[os.getuid()].imported == b"archive bytes"
    assert seen == [13]
    # A file object without a descriptor is fed through a pipe.
    client.register_distribution("Deb", io.BytesIO(b"from memory"))
    assert sessions[os.getuid()].imported == b"from memory"
    with pytest.raises(WslError) as caught:
        client.register_distribution("Deb", tmp_path / "missing.tar")
    assert caught.value.code == "ERROR_FILE_NOT_FOUND"
    assert caught.value.context == "Wsl/Service/RegisterDistro"
    assert "missing.tar" in caught.value.message


def test_export_writes_through_a_descriptor_and_cleans_up_on_failure(
    running: Running, tmp_path: Path
) -> None:
    client, _ = running
    target = tmp_path / "out.tar"
    client.export_distribution("Deb", target, format="tar.xz")
    assert target.read_bytes() == b"partial tar.xz"
    memory = io.BytesIO()
    client.export_distribution(None, memory)
    assert memory.getvalue() == b"partial tar"
    failed = tmp_path / "failed.tar"
    with pytest.raises(WslError):
        client.export_distribution("Other", failed)
    assert not failed.exists()
    with pytest.raises(WslError) as caught:
        client.export_distribution("Deb", tmp_path / "no" / "such" / "folder.tar")
    assert caught.value.code == "ERROR_PATH_NOT_FOUND"


def test_create_lx_process_talks_to_the_relay_directly(running: Running) -> None:
    client, sessions = running
    process = client.create_lx_process(
        "Deb",
        ["cat"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        environment={"A": "1"},
        wslenv_source={"WSLENV": "SHARED", "SHARED": "yes", "SECRET": "no", "TERM": "xterm"},
    )
    assert process.pid == 777
    out, err = process.communicate(b"through the pipe")
    assert (out, err) == (b"THROUGH THE PIPE", None)
    assert process.returncode == len(b"through the pipe")
    [launch] = sessions[os.getuid()].launches
    assert launch["command_line"] == ["cat"] and launch["environment"] == {"A": "1"}
    assert launch["wslenv_source"] == {"WSLENV": "SHARED", "SHARED": "yes", "TERM": "xterm"}
    assert launch["console"] == (False, False, False)
    for thread in sessions[os.getuid()].relays:
        thread.join(5)
    with pytest.raises(WslError) as caught:
        client.create_lx_process("Deb", ["x"], stdin=-5)
    assert caught.value.code == "E_INVALIDARG"


def test_connections_are_reused(running: Running) -> None:
    client, _ = running
    client.enumerate_distributions()
    first = client._idle[0]
    client.enumerate_distributions()
    assert client._idle == [first]


def _one_shot_service(path: str, handle: Any) -> threading.Thread:
    """A service that takes one request (with its fds), passes it to ``handle`` and hangs up."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen()

    def serve() -> None:
        sock, _ = listener.accept()
        listener.close()
        connection = rpc.Connection(sock)
        received = connection.receive()
        assert received is not None
        handle(*received)
        connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_a_launch_survives_a_service_that_dies_before_replying(tmp_path: Path) -> None:
    relays: list[threading.Thread] = []

    def hand_to_relay(message: dict[str, Any], fds: list[int]) -> None:
        # The relay got its copies before the service vanished without a reply.
        stdout, exit_fd = os.dup(fds[1]), os.dup(fds[4])
        rpc.close_fds(fds)

        def relay() -> None:
            time.sleep(0.2)
            os.write(stdout, b"finished anyway\n")
            os.close(stdout)
            channel = MessageChannel(socket.socket(fileno=exit_fd), name="exit")
            channel.send(EXIT_STATUS, ExitCode=5)
            channel.receive(EXIT_STATUS, timeout=10)
            channel.close()

        relays.append(threading.Thread(target=relay, daemon=True))
        relays[-1].start()

    path = str(tmp_path / "dies.sock")
    server = _one_shot_service(path, hand_to_relay)
    process = ServiceClient(path).create_lx_process(
        "Deb", ["x"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE
    )
    server.join(5)
    assert process.pid == 0
    assert process.communicate() == (b"finished anyway\n", None)
    assert process.returncode == 5
    relays[0].join(5)


def test_a_launch_the_service_dropped_is_an_error(tmp_path: Path) -> None:
    path = str(tmp_path / "drops.sock")
    server = _one_shot_service(path, lambda message, fds: rpc.close_fds(fds))
    started = time.monotonic()
    with pytest.raises(WslError) as caught:
        ServiceClient(path).create_lx_process("Deb", ["x"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    assert caught.value.code == "RPC_E_DISCONNECTED"
    assert time.monotonic() - started < 5  # at once: not after a launch or read timeout
    server.join(5)


def test_a_connection_the_service_closed_is_not_reused(running: Running, tmp_path: Path) -> None:
    client, _ = running
    client.enumerate_distributions()
    [stale] = client._idle
    stale.sock.shutdown(socket.SHUT_RDWR)
    assert client.enumerate_distributions()[0].id == GUID
    assert client._idle and client._idle[0] is not stale


def test_a_request_too_large_to_send_is_refused_here(running: Running) -> None:
    client, _ = running
    with pytest.raises(WslError) as caught:
        client.get_distribution_id("x" * rpc.MAX_MESSAGE_SIZE)
    assert caught.value.code == "E_INVALIDARG"
    assert "exceeds" in caught.value.message
    assert client.enumerate_distributions()[0].id == GUID
