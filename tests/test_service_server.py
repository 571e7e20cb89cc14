"""The service's transport and dispatch, with a small recording session in place of UserSession."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
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
from pywsl.api.service import units as service_install
from pywsl.api.service.client import ServiceClient
from pywsl.api.session.distribution_info import DistributionInfo
from pywsl.api.session.registry import DistributionState

ALPHA = uuid.UUID("11111111-2222-3333-4444-555555555555")


def info(identifier: uuid.UUID, name: str, base_path: str) -> DistributionInfo:
    return DistributionInfo(
        id=identifier,
        name=name,
        state=DistributionState.INSTALLED,
        version=2,
        is_default=True,
        flavor="debian",
        os_version="12",
        base_path=Path(base_path),
        default_uid=1000,
        run_oobe=False,
    )


class RecordingSession:
    """Answers like a UserSession that knows one distribution, "Alpha"."""

    def __init__(self, uid: int) -> None:
        self.uid = uid
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.received: bytes = b""

    def _find(self, distro: str | uuid.UUID | None) -> uuid.UUID:
        if distro is None or distro == ALPHA or (isinstance(distro, str) and distro.casefold() == "alpha"):
            return ALPHA
        raise WslError("WSL_E_DISTRO_NOT_FOUND")

    def get_distribution_id(self, name: str, *, list_all: bool = False) -> uuid.UUID:
        self.calls.append(("get_distribution_id", {"name": name, "list_all": list_all}))
        if not name:
            raise WslError("E_INVALIDARG")
        return self._find(name)

    def terminate_distribution(self, distro: str | uuid.UUID | None = None) -> None:
        self.calls.append(("terminate_distribution", {"distro": distro}))
        self._find(distro)

    def get_default_distribution(self) -> uuid.UUID:
        return ALPHA

    def shutdown(self, force: bool = False) -> None:
        self.calls.append(("shutdown", {"force": force}))
        if force:
            raise RuntimeError("a bug in the session")

    def enumerate_distributions(self) -> list[DistributionInfo]:
        return [info(ALPHA, "Alpha", "/srv/alpha")]

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
        while chunk := os.read(source, 65536):
            chunks.append(chunk)
            if progress is not None:
                progress(sum(map(len, chunks)))
        self.received = b"".join(chunks)
        self.calls.append(("register_distribution", {"name": name, "location": location}))
        if self.received == b"bad archive":
            raise WslError("WSL_E_IMPORT_FAILED", "tar: this does not look like a tar archive")
        return info(uuid.UUID(int=len(self.received)), name or "Default", location or "/default")

    def export_distribution(
        self, distro: str | uuid.UUID | None, target: int, *, format: str = "tar", progress: Any = None
    ) -> None:
        self._find(distro)
        os.write(target, f"archive in {format}".encode())

    def move_distribution(self, distro: str | uuid.UUID | None, location: str) -> None:
        self.calls.append(("move_distribution", {"distro": distro, "location": location}))

    def launch_lx_process(self, **arguments: Any) -> int:
        self.calls.append(("launch_lx_process", arguments))
        os.write(arguments["stdout"], b"hello from the relay\n")
        os.write(arguments["exit_fd"], b"exit")
        return 4242


class Harness:
    def __init__(self, folder: Path) -> None:
        self.path = str(folder / "service.sock")
        self.sessions: dict[int, RecordingSession] = {}
        self.created: list[int] = []

        def create(uid: int) -> RecordingSession:
            self.created.append(uid)
            if uid == 4:
                raise WslError("WSL_E_USER_NOT_FOUND", "no such user")
            self.sessions[uid] = RecordingSession(uid)
            return self.sessions[uid]

        self.listener = service.bind_listener(self.path)
        self.service = service.Service(self.listener, service.SessionFactory(create))
        self.thread = threading.Thread(target=self.service.serve_forever, daemon=True)
        self.thread.start()

    def raw(self) -> rpc.Connection:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(self.path)
        return rpc.Connection(sock)

    def ask(self, connection: rpc.Connection, message: dict[str, Any], fds: list[int] | None = None) -> Any:
        connection.send(message, fds or [])
        received = connection.receive()
        assert received is not None
        return received[0]

    def stop(self) -> None:
        self.service.stop()
        self.listener.close()
        self.thread.join(5)


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A folder every user can reach (pytest's own temporary folders are private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="pywsl-service-"))
    os.chmod(folder, 0o755)
    yield folder
    shutil.rmtree(folder)


@pytest.fixture
def harness(public_dir: Path) -> Iterator[Harness]:
    running = Harness(public_dir)
    yield running
    running.stop()


def test_calls_reach_the_callers_session(harness: Harness) -> None:
    client = ServiceClient(harness.path)
    assert client.get_distribution_id("ALPHA") == ALPHA
    client.terminate_distribution(ALPHA)
    assert client.get_default_distribution() == ALPHA
    session = harness.sessions[os.getuid()]
    assert session.calls == [
        ("get_distribution_id", {"name": "ALPHA", "list_all": False}),
        ("terminate_distribution", {"distro": ALPHA}),
    ]
    client.close()


def test_session_errors_come_back_as_the_same_wsl_error(harness: Harness) -> None:
    with ServiceClient(harness.path) as client:
        with pytest.raises(WslError) as caught:
            client.terminate_distribution("Beta")
        assert caught.value.code == "WSL_E_DISTRO_NOT_FOUND"
        assert caught.value.hresult == 0x80040302
        with pytest.raises(WslError) as caught:
            client.get_distribution_id("")
        assert caught.value.code == "E_INVALIDARG"
        # The connection that carried the errors is still in use.
        assert client.get_distribution_id("alpha") == ALPHA


def test_a_bug_in_the_session_is_an_error_reply_not_a_crash(harness: Harness) -> None:
    with ServiceClient(harness.path) as client:
        with pytest.raises(WslError, match="a bug in the session") as caught:
            client.shutdown(force=True)
        assert caught.value.code == "E_UNEXPECTED"
        client.shutdown()


def test_one_session_per_uid_for_every_connection(harness: Harness) -> None:
    clients = [ServiceClient(harness.path) for _ in range(8)]
    threads = [threading.Thread(target=c.get_distribution_id, args=("alpha",)) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert harness.created == [os.getuid()]
    assert len(harness.sessions[os.getuid()].calls) == 8
    for client in clients:
        client.close()


def _call_as(uid: int, path: str, message: dict[str, Any]) -> dict[str, Any]:
    """Fork, drop to ``uid``, make one raw call; the child's answer comes back through a pipe."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        status = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(path)
            sock.sendall(rpc.encode_message(message))
            data = b""
            while not data.endswith(b"\0"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
            os.write(write_end, data)
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    data = b""
    while chunk := os.read(read_end, 65536):
        data += chunk
    os.close(read_end)
    os.waitpid(pid, 0)
    return rpc.decode_message(data.rstrip(b"\0"))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as other users")
def test_the_peer_uid_picks_the_session_and_cannot_be_named(harness: Harness) -> None:
    request = {
        "method": "io.pywsl.UserSession.GetDistributionId",
        "parameters": {"name": "alpha"},
    }
    assert _call_as(65534, harness.path, request) == {"parameters": {"id": str(ALPHA)}}
    # A client that tries to name a user gets an error, not that user's session.
    spoof = {"method": request["method"], "parameters": {"name": "alpha", "uid": 0}}
    answer = _call_as(65533, harness.path, spoof)
    assert answer["error"] == "org.varlink.service.InvalidParameter"
    assert answer["parameters"]["parameter"] == "uid"
    assert sorted(harness.sessions) == [65533, 65534]
    assert harness.sessions[65534].calls == [("get_distribution_id", {"name": "alpha", "list_all": False})]
    assert harness.sessions[65533].calls == []
    # A session that cannot be created is an error for that caller only.
    answer = _call_as(4, harness.path, request)
    assert answer["error"] == "io.pywsl.WslError"
    assert answer["parameters"]["code"] == "WSL_E_USER_NOT_FOUND"


def test_garbage_gets_clear_errors_and_the_service_stays_up(harness: Harness) -> None:
    connection = harness.raw()
    connection.sock.sendall(b"{not json\0")
    answer = connection.receive()
    assert answer is not None and answer[0]["error"] == "io.pywsl.InvalidMessage"
    assert "not valid JSON" in answer[0]["parameters"]["message"]
    assert harness.ask(connection, {"no": "method"})["error"] == "io.pywsl.InvalidMessage"
    assert harness.ask(connection, {"method": "io.pywsl.UserSession.Format"}) == {
        "error": "org.varlink.service.MethodNotFound",
        "parameters": {"method": "io.pywsl.UserSession.Format"},
    }
    answer = harness.ask(
        connection, {"method": "io.pywsl.UserSession.GetDistributionId", "parameters": {"name": 5}}
    )
    assert answer["error"] == "org.varlink.service.InvalidParameter"
    assert answer["parameters"]["parameter"] == "name"
    answer = harness.ask(
        connection, {"method": "io.pywsl.UserSession.GetDistributionId", "parameters": {"name": "alpha"}}
    )
    assert answer == {"parameters": {"id": str(ALPHA)}}
    connection.close()

    # A message without an end is refused and that connection closed; others carry on.
    flood = harness.raw()
    with contextlib.suppress(OSError):
        flood.sock.sendall(b"[" * (rpc.MAX_MESSAGE_SIZE + 10))
    reply = flood.receive()
    assert reply is not None and "exceeds" in reply[0]["parameters"]["message"]
    assert flood.receive() is None
    flood.close()
    with ServiceClient(harness.path) as client:
        assert client.get_distribution_id("alpha") == ALPHA


def test_peer_vanishing_mid_message_does_not_hurt(harness: Harness) -> None:
    for _ in range(3):
        connection = harness.raw()
        connection.sock.sendall(b'{"method": "io.pywsl.UserSession.Shutdown", "param')
        connection.close()
    with ServiceClient(harness.path) as client:
        client.shutdown()


def test_get_info(harness: Harness) -> None:
    connection = harness.raw()
    answer = harness.ask(connection, {"method": "org.varlink.service.GetInfo"})
    assert answer["parameters"]["interfaces"] == ["org.varlink.service", "io.pywsl.UserSession"]
    connection.close()


def test_oneway_requests_get_no_reply(harness: Harness) -> None:
    connection = harness.raw()
    connection.send({"method": "io.pywsl.UserSession.Shutdown", "oneway": True})
    answer = harness.ask(connection, {"method": "io.pywsl.UserSession.GetDefaultDistribution"})
    assert answer == {"parameters": {"id": str(ALPHA)}}
    assert ("shutdown", {"force": False}) in harness.sessions[os.getuid()].calls
    connection.close()


def test_register_streams_the_archive_as_a_descriptor(harness: Harness, tmp_path: Path) -> None:
    archive = tmp_path / "rootfs.tar"
    archive.write_bytes(b"t" * 300000)
    client = ServiceClient(harness.path)
    result = client.call(
        "RegisterDistribution",
        {"name": "Mine", "source": 0, "location": "/srv/mine"},
        fds=[os.open(archive, os.O_RDONLY)],
    )
    session = harness.sessions[os.getuid()]
    assert session.received == archive.read_bytes()
    assert result["distribution"]["id"] == str(uuid.UUID(int=300000))
    assert result["distribution"]["base_path"] == "/srv/mine"
    assert result["distribution"]["state"] == DistributionState.INSTALLED.value

    progress: list[Any] = []
    read_end, write_end = os.pipe()

    def write_and_close() -> None:
        os.write(write_end, b"bad archive")
        os.close(write_end)

    writer = threading.Thread(target=write_and_close)
    writer.start()
    with pytest.raises(WslError) as caught:
        client.call(
            "RegisterDistribution", {"name": "Bad", "source": 0}, fds=[read_end], progress=progress.append
        )
    writer.join()
    os.close(read_end)
    assert caught.value.code == "WSL_E_IMPORT_FAILED"
    assert "tar" in caught.value.message
    assert progress == [11]
    client.close()


def test_every_received_descriptor_is_closed_after_the_call(harness: Harness) -> None:
    client = ServiceClient(harness.path)
    read_end, write_end = os.pipe()
    client.call("ExportDistribution", {"distro": None, "target": 0, "format": "xz"}, fds=[write_end])
    with pytest.raises(WslError):
        client.call("ExportDistribution", {"distro": {"name": "nope"}, "target": 0}, fds=[write_end])
    # An unused descriptor and one given to a refused request are closed too.
    client.call("Shutdown", {}, fds=[write_end])
    with pytest.raises(WslError, match="file descriptor index 3"):
        client.call("ExportDistribution", {"target": 3}, fds=[write_end])
    os.close(write_end)
    assert os.read(read_end, 100) == b"archive in xz"
    assert os.read(read_end, 100) == b"", "the service kept a copy of the pipe"
    os.close(read_end)
    client.close()


def test_create_lx_process_hands_the_fds_on_and_replies_the_relay_pid(harness: Harness) -> None:
    out_read, out_write = os.pipe()
    control_client, control_relay = socket.socketpair()
    exit_client, exit_relay = socket.socketpair()
    parameters = {
        "distro": {"name": "alpha"},
        "command_line": ["echo", "hi"],
        "stdin": 0,
        "stdout": 1,
        "stderr": 1,
        "control": 2,
        "exit": 3,
        "console": [False, False, False],
        "rows": 0,
        "columns": 0,
    }
    with ServiceClient(harness.path) as client:
        result = client.call(
            "CreateLxProcess",
            parameters,
            fds=[0, out_write, control_relay.fileno(), exit_relay.fileno()],
        )
    assert result == {"pid": 4242}
    os.close(out_write)
    control_relay.close()
    exit_relay.close()
    assert os.read(out_read, 100) == b"hello from the relay\n"
    assert os.read(out_read, 100) == b""
    assert exit_client.recv(10) == b"exit"
    assert exit_client.recv(10) == b"", "the service closed its copy of the exit socket"
    name, arguments = harness.sessions[os.getuid()].calls[-1]
    assert name == "launch_lx_process"
    assert arguments["distro"] == "alpha" and arguments["command_line"] == ["echo", "hi"]
    os.close(out_read)
    control_client.close()
    exit_client.close()


def test_client_reports_a_missing_service(tmp_path: Path) -> None:
    client = ServiceClient(str(tmp_path / "none.sock"))
    with pytest.raises(WslError) as caught:
        client.get_default_distribution()
    assert caught.value.code == "ERROR_SERVICE_NOT_ACTIVE"
    assert "none.sock" in caught.value.message


def test_client_reports_a_service_that_dies_mid_call(tmp_path: Path) -> None:
    path = str(tmp_path / "dying.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen()

    def accept_and_drop() -> None:
        sock, _ = listener.accept()
        sock.recv(65536)
        sock.close()

    thread = threading.Thread(target=accept_and_drop)
    thread.start()
    with pytest.raises(WslError) as caught:
        ServiceClient(path).shutdown()
    thread.join()
    listener.close()
    assert caught.value.code == "RPC_E_DISCONNECTED"


def test_bind_listener_socket_modes_and_stale_sockets(tmp_path: Path) -> None:
    folder = tmp_path / "run" / "pywsl"
    path = folder / "service.sock"
    listener = service.bind_listener(str(path))
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o755
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o666
    with pytest.raises(service.ServiceSetupError, match="already listening"):
        service.bind_listener(str(path))
    listener.close()
    # The socket of a dead service is replaced.
    listener = service.bind_listener(str(path))
    listener.close()
    path.unlink()
    path.write_text("not a socket")
    with pytest.raises(service.ServiceSetupError, match="not a socket"):
        service.bind_listener(str(path))
    os.chmod(folder, 0o777)
    path.unlink()
    with pytest.raises(service.ServiceSetupError, match="writable by other users"):
        service.bind_listener(str(path))
    assert sorted(os.listdir(folder)) == []


def test_systemd_socket_activation(tmp_path: Path) -> None:
    assert service.systemd_listener({"LISTEN_PID": "1", "LISTEN_FDS": "1"}) is None
    path = str(tmp_path / "activated.sock")
    # The child puts the socket where systemd would (fd 3) before looking for it.
    script = (
        "import os\n"
        "from pywsl.api.service import server as service\n"
        "os.dup2(int(os.environ['TEST_FD']), 3)\n"
        "os.environ['LISTEN_PID'] = str(os.getpid())\n"
        "sock = service.systemd_listener()\n"
        "print(sock.getsockname(), 'LISTEN_PID' in os.environ)\n"
    )
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen()
    with listener:
        result = subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "LISTEN_FDS": "1", "TEST_FD": str(listener.fileno())},
            pass_fds=(listener.fileno(),),
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
    assert result.stdout.split() == [path, "False"]
    with pytest.raises(service.ServiceSetupError, match="exactly one"):
        service.systemd_listener({"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "2"})


def test_main_refuses_a_socket_in_use(harness: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    assert service.main(["--socket", harness.path]) == 1
    assert "already listening" in capsys.readouterr().err


def test_python_name() -> None:
    assert service.python_name("GetDistributionId") == "get_distribution_id"
    assert service.python_name("CreateLxProcess") == "create_lx_process"
    assert service.python_name("Shutdown") == "shutdown"


def test_install_units(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prefix = tmp_path / "units"
    assert service.main(["--install-units", "--prefix", str(prefix)]) == 0
    assert "systemctl enable --now pywsl.socket" in capsys.readouterr().out
    socket_unit = (prefix / "pywsl.socket").read_text()
    service_unit = (prefix / "pywsl.service").read_text()
    assert "ListenStream=/run/pywsl/service.sock" in socket_unit
    assert "SocketMode=0666" in socket_unit
    assert f"ExecStart={sys.executable} -m pywsl.api.service.server" in service_unit
    assert "KillMode=process" in service_unit
    assert stat.S_IMODE(os.stat(prefix / "pywsl.service").st_mode) == 0o644
    assert sorted(os.listdir(prefix)) == ["pywsl.service", "pywsl.socket"]
    assert service.main(["--uninstall-units", "--prefix", str(prefix)]) == 0
    assert os.listdir(prefix) == []


def test_unit_command_line_quoting() -> None:
    text = service_install.unit_text("pywsl.service", '/opt/my python/bin/py"thon')
    assert 'ExecStart="/opt/my python/bin/py\\"thon" -m pywsl.api.service.server' in text
    with pytest.raises(ValueError):
        service_install.install_units(Path("/nonexistent"), "relative/python")


def test_reply_is_json(harness: Harness) -> None:
    connection = harness.raw()
    connection.sock.sendall(b'{"method":"io.pywsl.UserSession.EnumerateDistributions"}\0')
    data = b""
    while not data.endswith(b"\0"):
        data += connection.sock.recv(65536)
    assert json.loads(data[:-1]) == {
        "parameters": {
            "distributions": [
                {
                    "id": str(ALPHA),
                    "name": "Alpha",
                    "state": 1,
                    "version": 2,
                    "is_default": True,
                    "flavor": "debian",
                    "os_version": "12",
                    "base_path": "/srv/alpha",
                    "default_uid": 1000,
                    "run_oobe": False,
                }
            ]
        }
    }
    connection.close()


def test_connections_beyond_the_limit_are_refused(public_dir: Path) -> None:
    listener = service.bind_listener(str(public_dir / "limited.sock"))
    server = service.Service(
        listener, service.SessionFactory(RecordingSession), max_connections=3, max_connections_per_user=2
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    request = {"method": "io.pywsl.UserSession.GetDefaultDistribution"}
    try:
        held = []
        for _ in range(2):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(str(public_dir / "limited.sock"))
            held.append(rpc.Connection(sock))
            held[-1].send(request)
            assert held[-1].receive() == ({"parameters": {"id": str(ALPHA)}}, [])
        with pytest.raises(WslError, match="too many connections") as caught:
            ServiceClient(str(public_dir / "limited.sock")).get_default_distribution()
        assert caught.value.code == "E_FAIL"
        held.pop().close()
        deadline = time.monotonic() + 5
        while True:
            try:
                assert ServiceClient(str(public_dir / "limited.sock")).get_default_distribution() == ALPHA
                break
            except WslError:
                assert time.monotonic() < deadline
                time.sleep(0.01)
        for connection in held:
            connection.close()
    finally:
        server.stop()
        listener.close()
        thread.join(5)


def test_the_service_process_serves_and_removes_its_socket_on_sigterm(public_dir: Path) -> None:
    path = public_dir / "process.sock"
    env = {**os.environ, "PYWSL_RUNTIME_ROOT": str(public_dir / "run")}
    process = subprocess.Popen(
        [sys.executable, "-m", "pywsl.api.service.server", "--socket", str(path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while not path.exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        connection = rpc.Connection(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
        connection.sock.connect(str(path))
        connection.send({"method": "org.varlink.service.GetInfo"})
        answer = connection.receive()
        assert answer is not None and answer[0]["parameters"]["product"] == "pywsl-service"
        connection.close()
    finally:
        process.terminate()
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert b"listening on" in err and b"stopping" in err
    assert not path.exists()
