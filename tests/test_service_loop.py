"""The service's connection loop and limits: descriptors, threads, cancellation, big replies, owners."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import stat
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pywsl.api import cancellation
from pywsl.api.errors import WslError
from pywsl.api.service import rpc
from pywsl.api.service import server as service
from pywsl.api.service import units as service_install
from pywsl.api.service.client import ServiceClient
from pywsl.api.service.limits import ConnectionLimits, RangeOwners, WorkerLimits, raise_descriptor_limit
from pywsl.api.session.distribution_info import DistributionInfo
from pywsl.api.session.registry import DistributionState
from pywsl.vm import idmap

ALPHA = uuid.UUID("11111111-2222-3333-4444-555555555555")
WAIT = 10.0


def info(index: int) -> DistributionInfo:
    return DistributionInfo(
        id=uuid.UUID(int=index),
        name=f"Distro{index}",
        state=DistributionState.INSTALLED,
        version=2,
        is_default=index == 0,
        flavor="debian",
        os_version="12",
        base_path=Path(f"/srv/distributions/{index}"),
        default_uid=1000,
        run_oobe=False,
    )


class BlockingSession:
    """A session whose ``shutdown`` runs until its request is cancelled (or released)."""

    def __init__(self, uid: int) -> None:
        self.uid = uid
        self.started = threading.Semaphore(0)
        self.release = threading.Event()
        self.outcomes: list[str] = []
        self.running = 0
        self.most_running = 0
        self.lock = threading.Lock()
        self.distributions = 1

    def shutdown(self, force: bool = False) -> None:
        token = cancellation.current()
        with self.lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        self.started.release()
        try:
            deadline = time.monotonic() + WAIT
            while time.monotonic() < deadline:
                if token.wait(0.01):
                    self.outcomes.append("cancelled")
                    token.check()
                if self.release.is_set():
                    self.outcomes.append("released")
                    return
            self.outcomes.append("timed out")
        finally:
            with self.lock:
                self.running -= 1

    def get_default_distribution(self) -> uuid.UUID:
        return ALPHA

    def enumerate_distributions(self) -> list[DistributionInfo]:
        return [info(index) for index in range(self.distributions)]


class Running:
    def __init__(self, folder: Path, **limits: Any) -> None:
        self.path = str(folder / "loop.sock")
        self.sessions: dict[int, BlockingSession] = {}

        def create(uid: int) -> BlockingSession:
            self.sessions[uid] = BlockingSession(uid)
            return self.sessions[uid]

        self.listener = service.bind_listener(self.path)
        self.service = service.Service(self.listener, service.SessionFactory(create), **limits)
        self.thread = threading.Thread(target=self.service.serve_forever, daemon=True)
        self.thread.start()

    def session(self) -> BlockingSession:
        with ServiceClient(self.path) as client:
            client.get_default_distribution()
        return self.sessions[os.getuid()]

    def raw(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(self.path)
        return sock

    def stop(self) -> None:
        self.service.stop()
        self.thread.join(WAIT)
        self.listener.close()
        assert not self.thread.is_alive()


@pytest.fixture
def folder() -> Iterator[Path]:
    made = Path(tempfile.mkdtemp(prefix="pywsl-loop-"))
    os.chmod(made, 0o755)
    yield made
    shutil.rmtree(made)


@pytest.fixture
def running(folder: Path) -> Iterator[Running]:
    started = Running(folder)
    yield started
    started.stop()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def _read_reply(sock: socket.socket) -> dict[str, Any]:
    data = b""
    while not data.endswith(b"\0"):
        chunk = sock.recv(1 << 20)
        assert chunk, "the service closed the connection"
        data += chunk
    return rpc.decode_message(data[:-1])


SHUTDOWN = b'{"method":"io.pywsl.UserSession.Shutdown"}\0'


def test_a_request_is_cancelled_when_its_client_goes_away(running: Running) -> None:
    session = running.session()
    sock = running.raw()
    sock.sendall(SHUTDOWN)
    assert session.started.acquire(timeout=WAIT)
    sock.close()
    _until(lambda: session.outcomes == ["cancelled"], "the request was not cancelled")
    # A half-close counts as going away too.
    sock = running.raw()
    sock.sendall(SHUTDOWN)
    assert session.started.acquire(timeout=WAIT)
    sock.shutdown(socket.SHUT_WR)
    _until(lambda: session.outcomes == ["cancelled", "cancelled"], "a half-close did not cancel")
    sock.close()


def test_a_request_whose_client_stays_is_not_cancelled(running: Running) -> None:
    session = running.session()
    sock = running.raw()
    sock.sendall(SHUTDOWN)
    assert session.started.acquire(timeout=WAIT)
    session.release.set()
    assert _read_reply(sock) == {"parameters": {}}
    assert session.outcomes == ["released"]
    # A oneway request is not the client's to cancel: it runs on after the client left.
    session.release.clear()
    sock.sendall(b'{"method":"io.pywsl.UserSession.Shutdown","oneway":true}\0')
    assert session.started.acquire(timeout=WAIT)
    sock.close()
    loop = running.service._loop
    _until(
        lambda: any(client.hung_up for client in list(loop._clients.values())),
        "the service did not see the client go",
    )
    session.release.set()
    _until(lambda: session.outcomes == ["released", "released"], "a oneway request was cancelled")


def test_cancellation_outside_the_service_never_fires() -> None:
    token = cancellation.current()
    assert not token.cancelled
    token.check()


def test_idle_connections_hold_no_thread(running: Running) -> None:
    running.session()
    before = threading.active_count()
    held = [running.raw() for _ in range(200)]
    for sock in held:
        sock.sendall(b'{"method":"org.varlink.service.GetInfo"}\0')
    for sock in held:
        assert _read_reply(sock)["parameters"]["product"] == "pywsl-service"
    _until(lambda: threading.active_count() <= before + 2, "idle connections kept threads")
    for sock in held:
        sock.close()


def test_running_requests_are_capped_per_user(folder: Path) -> None:
    started = Running(folder, max_workers=8, max_workers_per_user=2)
    try:
        session = started.session()
        clients = [started.raw() for _ in range(5)]
        for sock in clients:
            sock.sendall(SHUTDOWN)
        for _ in range(2):
            assert session.started.acquire(timeout=WAIT)
        assert not session.started.acquire(timeout=0.3), "a third request ran beside two others"
        session.release.set()
        for sock in clients:
            assert _read_reply(sock) == {"parameters": {}}
            sock.close()
        assert session.most_running == 2
    finally:
        started.stop()


def test_worker_limits_take_owners_in_turn() -> None:
    limits = WorkerLimits(total=3, per_owner=2)
    for item in ("a1", "a2", "a3"):
        limits.queue(1, item)
    limits.queue(2, "b1")
    order = [limits.next_ready() for _ in range(4)]
    assert order == [(1, "a1"), (2, "b1"), (1, "a2"), None]
    limits.finished(2)
    assert limits.next_ready() is None  # owner 1 has two running
    limits.finished(1)
    assert limits.next_ready() == (1, "a3")
    assert limits.withdraw(1, "a3") is False
    limits.queue(2, "b2")
    assert limits.withdraw(2, "b2") is True and limits.next_ready() is None


def test_connection_limits_count_by_owner() -> None:
    limits = ConnectionLimits(total=3, per_owner=2)
    assert limits.admit(7) and limits.admit(7)
    assert not limits.admit(7)
    assert limits.admit(8)
    assert not limits.admit(9)
    limits.release(7)
    assert limits.admit(9)
    assert limits.held() == 3 and limits.held(7) == 1


def test_range_owners_follow_idmap(tmp_path: Path) -> None:
    subuid = tmp_path / "subuid"
    subuid.write_text("# a comment\n4321:300000:65536\nbroken line\n")
    owners = RangeOwners(subuid_path=subuid, subgid_path=tmp_path / "subgid")
    # /etc/subuid ranges, as idmap builds them.
    assert owners.owner_of(300000) == 4321
    assert owners.owner_of(365535) == 4321
    assert owners.owner_of(365536) == 365536
    # The default range of a uid without an entry.
    base = idmap.default_range(1234).start
    assert owners.owner_of(base) == 1234
    assert owners.owner_of(base + 65535) == 1234
    # A uid with an entry does not own its default range, and nobody owns a uid outside ranges.
    assert owners.owner_of(idmap.default_range(4321).start + 9) == idmap.default_range(4321).start + 9
    assert owners.owner_of(1234) == 1234
    assert owners.owner_of(0) == 0
    # Every id of the map counts as the owner: the whole map, as the VM gets it.
    uid_map, _ = idmap.maps_for_owner(4321, 4321, subuid_path=subuid, subgid_path=tmp_path / "subgid")
    for _inside, outside, count in uid_map:
        assert owners.owner_of(outside) == 4321
        assert owners.owner_of(outside + count - 1) == 4321


def test_a_peer_inside_a_vm_range_is_refused_and_counts_as_the_owner(folder: Path) -> None:
    me = os.getuid()

    class EveryoneIsMine(RangeOwners):
        def owner_of(self, uid: int) -> int:
            return 999_999  # this process stands for an id of the VM of uid 999999

    started = Running(folder, owners=EveryoneIsMine(), max_connections_per_user=2)
    try:
        with ServiceClient(started.path) as client, pytest.raises(WslError) as caught:
            client.get_default_distribution()
        assert caught.value.code == "E_ACCESSDENIED"
        assert f"uid {me}" in caught.value.message and "999999" in caught.value.message
        assert started.sessions == {}
        _until(lambda: started.service.limits.held() == 0, "the closed connection is still counted")
        held = [started.raw() for _ in range(2)]
        for sock in held:
            sock.sendall(b'{"method":"org.varlink.service.GetInfo"}\0')
            assert "product" in _read_reply(sock)["parameters"]
        refused = started.raw()
        assert _read_reply(refused)["error"] == rpc.ERROR_BUSY
        refused.close()
        for sock in held:
            sock.close()
    finally:
        started.stop()


def _malformed(sock: socket.socket, payload: bytes, fds: list[int]) -> dict[str, Any]:
    socket.send_fds(sock, [payload], fds)
    return _read_reply(sock)


def test_descriptors_of_refused_messages_are_closed(running: Running) -> None:
    running.session()
    read_end, write_end = os.pipe()
    try:
        sock = running.raw()
        # Warm up: the first connection and request may open lasting descriptors (the session).
        _malformed(sock, b'{"method":"io.pywsl.UserSession.GetDefaultDistribution"}\0', [write_end])
        before = _open_fds()
        bad = [
            b"{not json\0",
            b"[1,2]\0",
            b'{"no":"method"}\0',
            b'{"method":"io.pywsl.UserSession.Nope"}\0',
            b'{"method":"io.pywsl.UserSession.GetDistributionId","parameters":{"name":5}}\0',
            b'{"method":"io.pywsl.UserSession.GetDefaultDistribution"}\0',
            b'{"method":"io.pywsl.UserSession.ExportDistribution","parameters":{"target":9}}\0',
            b'{"method":"io.pywsl.UserSession.Shutdown","more":"yes"}\0',
            b'{"method":"io.pywsl.UserSession.Shutdown","upgrade":true}\0',
            b"\xff\xfe\0",
        ]
        for _ in range(30):
            for payload in bad:
                answer = _malformed(sock, payload, [write_end, read_end, write_end])
                assert "error" in answer or payload.startswith(b'{"method":"io.pywsl.UserSession.GetDefault')
        sock.close()
        # Too many descriptors (truncated control data) and a peer that leaves mid-message.
        for _ in range(20):
            flood = running.raw()
            with contextlib.suppress(OSError):
                socket.send_fds(flood, [b'{"method":'], [write_end] * (rpc.MAX_FDS + 8))
                _read_reply(flood)
            flood.close()
            leaving = running.raw()
            socket.send_fds(leaving, [b'{"method":"io.pywsl.UserSession.Shutdown"'], [read_end, write_end])
            leaving.close()
        _until(lambda: _open_fds() <= before, f"descriptors leaked: {before} before, {_open_fds()} after")
        os.close(write_end)
        write_end = -1
        # No copy of the pipe's write end is left anywhere in the service.
        assert os.read(read_end, 1) == b""
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
    with ServiceClient(running.path) as client:
        assert client.get_default_distribution() == ALPHA


def test_replies_larger_than_a_request_may_be(running: Running) -> None:
    session = running.session()
    session.distributions = 6000
    with ServiceClient(running.path) as client:
        listed = client.enumerate_distributions()
    assert len(listed) == 6000
    assert listed[5999].name == "Distro5999"
    assert len(rpc.encode_message({"d": [rpc.encode_value(d) for d in listed]}, limit=1 << 30)) > (
        rpc.MAX_MESSAGE_SIZE
    )


def test_a_reply_too_large_is_an_error_reply(running: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    session = running.session()
    session.distributions = 100
    monkeypatch.setattr(rpc, "MAX_REPLY_SIZE", 4096)
    with ServiceClient(running.path) as client:
        with pytest.raises(WslError) as caught:
            client.enumerate_distributions()
        assert caught.value.code == "E_UNEXPECTED"
        assert "exceeds the limit of 4096" in caught.value.message
        # The connection and the service carry on.
        assert client.get_default_distribution() == ALPHA


def test_pipelined_requests_are_answered_in_order(running: Running) -> None:
    running.session()
    sock = running.raw()
    sock.sendall(
        b'{"method":"org.varlink.service.GetInfo"}\0'
        b'{"method":"io.pywsl.UserSession.GetDefaultDistribution"}\0{bad\0'
    )
    data = b""
    while data.count(b"\0") < 3:
        chunk = sock.recv(65536)
        assert chunk
        data += chunk
    answers = [rpc.decode_message(part) for part in data.split(b"\0")[:3]]
    assert "product" in answers[0]["parameters"]
    assert answers[1] == {"parameters": {"id": str(ALPHA)}}
    assert answers[2]["error"] == rpc.ERROR_INVALID_MESSAGE
    sock.close()


class FlakyListener(socket.socket):
    """A listener whose ``accept`` fails as an exhausted process's does, a few times."""

    failures: list[int] = []

    def accept(self) -> tuple[socket.socket, Any]:
        if self.failures:
            raise OSError(self.failures.pop(0), os.strerror(errno.EMFILE))
        return super().accept()


def test_accept_errors_never_end_the_service(folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = str(folder / "flaky.sock")
    listener = FlakyListener(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    listener.failures = [
        errno.EMFILE,
        errno.ENFILE,
        errno.ECONNABORTED,
        errno.ENOMEM,
        errno.ENOBUFS,
        errno.EPROTO,
        errno.EINTR,
        errno.EMFILE,
    ]
    server = service.Service(listener, service.SessionFactory(BlockingSession))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with caplog.at_level("WARNING", logger="pywsl.service"), ServiceClient(path) as client:
            assert client.get_default_distribution() == ALPHA
        assert listener.failures == []
        assert thread.is_alive()
        assert any("cannot accept connections" in record.getMessage() for record in caplog.records)
    finally:
        server.stop()
        thread.join(WAIT)
        listener.close()


def test_raise_descriptor_limit() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
        assert raise_descriptor_limit() == (hard, hard)
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_install_units_follow_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = tmp_path / "units"
    monkeypatch.setenv("PYWSL_RUNTIME_ROOT", "/srv/pywsl-run")
    monkeypatch.delenv("PYWSL_SERVICE_SOCKET", raising=False)
    assert service.main(["--install-units", "--prefix", str(prefix)]) == 0
    out = capsys.readouterr().out
    assert "now run: systemctl daemon-reload && systemctl enable --now pywsl.socket" in out
    assert "/srv/pywsl-run/service.sock" in out
    socket_unit = (prefix / "pywsl.socket").read_text()
    service_unit = (prefix / "pywsl.service").read_text()
    assert "ListenStream=/srv/pywsl-run/service.sock" in socket_unit.splitlines()
    assert "Environment=PYWSL_SERVICE_SOCKET=/srv/pywsl-run/service.sock" in service_unit.splitlines()
    assert "Environment=PYWSL_RUNTIME_ROOT=/srv/pywsl-run" in service_unit.splitlines()
    assert "LimitNOFILE=524288" in service_unit.splitlines()

    monkeypatch.setenv("PYWSL_SERVICE_SOCKET", "/srv/sockets/pywsl-100%.sock")
    assert service.main(["--install-units", "--prefix", str(prefix)]) == 0
    socket_unit = (prefix / "pywsl.socket").read_text()
    service_unit = (prefix / "pywsl.service").read_text()
    assert "ListenStream=/srv/sockets/pywsl-100%%.sock" in socket_unit.splitlines()
    assert "Environment=PYWSL_SERVICE_SOCKET=/srv/sockets/pywsl-100%%.sock" in service_unit.splitlines()
    assert [line for line in socket_unit.splitlines() if line.startswith("ListenStream=")] == [
        "ListenStream=/srv/sockets/pywsl-100%%.sock"
    ]
    # --socket wins; a path systemd cannot take is refused and nothing changes.
    assert service.main(["--install-units", "--prefix", str(prefix), "--socket", "/srv/other.sock"]) == 0
    assert "ListenStream=/srv/other.sock" in (prefix / "pywsl.socket").read_text().splitlines()
    before = (prefix / "pywsl.socket").read_text()
    for bad in ("relative.sock", "/srv/with space.sock", "/" + "x" * 120):
        assert service.main(["--install-units", "--prefix", str(prefix), "--socket", bad]) == 1
        assert (prefix / "pywsl.socket").read_text() == before
    assert sorted(os.listdir(prefix)) == ["pywsl.service", "pywsl.socket"]
    assert stat.S_IMODE(os.stat(prefix / "pywsl.socket").st_mode) == 0o644


def test_units_default_to_the_runtime_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYWSL_SERVICE_SOCKET", raising=False)
    monkeypatch.delenv("PYWSL_RUNTIME_ROOT", raising=False)
    text = service_install.unit_text("pywsl.socket", sys.executable)
    assert "ListenStream=/run/pywsl/service.sock" in text.splitlines()
    text = service_install.unit_text("pywsl.service", sys.executable)
    assert "Environment=PYWSL_RUNTIME_ROOT=/run/pywsl" in text.splitlines()
    # The client finds the socket the same way.
    monkeypatch.setenv("PYWSL_RUNTIME_ROOT", "/srv/r")
    assert rpc.socket_path() == "/srv/r/service.sock"
    monkeypatch.setenv("PYWSL_RUNTIME_ROOT", "relative")
    assert rpc.socket_path() == "/run/pywsl/service.sock"


def test_a_service_stopped_before_it_serves_ends_quietly(tmp_path: Path) -> None:
    """stop() and the listener closed before serve_forever() starts: it returns, nothing leaks."""
    listener = service.bind_listener(str(tmp_path / "early.sock"))
    server = service.Service(listener, service.SessionFactory(lambda uid: object()))
    before = len(os.listdir("/proc/self/fd"))
    server.stop()
    listener.close()
    server.serve_forever()
    assert len(os.listdir("/proc/self/fd")) <= before
