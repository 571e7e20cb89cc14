"""A user's quick launch through the service (`pywsl.api.service.launch_client`) against a fake service.

The fake listens on a socket of the test's folder, reads the one request with its descriptors and
answers as the test says; the relay's side of the exit channel is played by the test. Real
launches through the real service are in `test_quick_launch_e2e.py`.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pywsl.api.service import launch_client
from pywsl.wire.channel import MessageChannel
from pywsl.wire.launch_codec import EXIT_STATUS

Respond = Callable[[socket.socket, dict[str, Any], list[int]], None]


class FakeService:
    """One connection: the request and its descriptors are kept for the test, `respond` answers."""

    def __init__(self, path: Path, respond: Respond) -> None:
        self.path = path
        self.request: dict[str, Any] = {}
        self.fds: list[int] = []
        self._respond = respond
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        self._listener.listen(1)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        connection, _ = self._listener.accept()
        with connection:
            data = b""
            while b"\0" not in data:
                chunk, fds, _flags, _address = socket.recv_fds(connection, 65536, 16)
                self.fds.extend(fds)
                if not chunk:
                    return
                data += chunk
            self.request = json.loads(data[: data.index(b"\0")])
            self._respond(connection, self.request, self.fds)

    def join(self) -> None:
        self._thread.join(timeout=10)
        assert not self._thread.is_alive()

    def close(self) -> None:
        self._listener.close()
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                continue


@pytest.fixture
def as_user(monkeypatch: pytest.MonkeyPatch) -> None:
    """The caller is an unprivileged user whose standard streams are no terminals."""
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(launch_client, "plain_streams", lambda: True)
    monkeypatch.setattr(launch_client, "RELAY_GRACE_SECONDS", 0.3)


@pytest.fixture
def service_path(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "service.sock"


def _launch(path: Path, *, distribution: str | None = "Box", **environ: str) -> Any:
    return launch_client.launch(
        distribution,
        ["echo", "hi"],
        filename=None,
        cwd="host:/srv",
        username="",
        environ={"PYWSL_SERVICE_SOCKET": str(path), **environ},
    )


def _answer(reply: dict[str, Any], fds: list[int] | None = None) -> Respond:
    def respond(connection: socket.socket, request: dict[str, Any], received: list[int]) -> None:
        data = json.dumps(reply).encode() + b"\0"
        if fds:
            socket.send_fds(connection, [data], fds)
        else:
            connection.sendall(data)

    return respond


def _relay_exits(fds: list[int], status: int) -> bytes:
    """Play the relay: ExitStatus on the exit channel (the fifth descriptor), then read the echo."""
    channel = MessageChannel(socket.socket(fileno=os.dup(fds[4])), name="relay exit")
    try:
        channel.send(EXIT_STATUS, ExitCode=status)
        echo, _ = channel.receive(expect_fds=0)
        return echo
    finally:
        channel.close()


def test_the_request_is_the_service_clients_and_the_process_runs(as_user: None, service_path: Path) -> None:
    service = FakeService(service_path, _answer({"parameters": {"pid": 42}, "warnings": ["careful", 5]}))
    try:
        process = _launch(
            service_path,
            PATH="/usr/bin:/bin",
            TERM="xterm",
            WSLENV="FOO/p:BAR",
            FOO="/x",
            SECRET="no",
            DISPLAY=":1",
        )
        service.join()
        assert process is not None
        assert process.warnings == ["careful"]
        assert process.distribution == "Box"
        request = service.request
        assert request["method"] == launch_client.METHOD
        parameters = request["parameters"]
        assert parameters["distro"] == {"name": "Box"}
        assert parameters["command_line"] == ["echo", "hi"]
        assert (parameters["filename"], parameters["cwd"], parameters["username"]) == (None, "host:/srv", "")
        assert parameters["login"] is False and parameters["environment"] is None
        assert parameters["wslenv_source"] == {
            "PATH": "/usr/bin:/bin",
            "TERM": "xterm",
            "WSLENV": "FOO/p:BAR",
            "FOO": "/x",
            "DISPLAY": ":1",
        }
        assert [parameters[name] for name in ("stdin", "stdout", "stderr", "control", "exit")] == [
            0,
            1,
            2,
            3,
            4,
        ]
        assert (parameters["console"], parameters["rows"], parameters["columns"]) == ([False] * 3, 0, 0)
        assert len(service.fds) == 5
        for mine, theirs in zip((0, 1, 2), service.fds[:3], strict=True):
            assert (os.fstat(mine).st_dev, os.fstat(mine).st_ino) == (
                os.fstat(theirs).st_dev,
                os.fstat(theirs).st_ino,
            )
        echo: list[bytes] = []
        relay = threading.Thread(target=lambda: echo.append(_relay_exits(service.fds, 7)))
        relay.start()
        try:
            assert process.wait() == 7
        finally:
            process.close()
            relay.join(timeout=10)
        assert not process.status_lost
        assert EXIT_STATUS.parse(echo[0]).ExitCode == 7
    finally:
        service.close()


def test_the_default_distribution_is_null(as_user: None, service_path: Path) -> None:
    service = FakeService(service_path, _answer({"parameters": {"pid": 1}}))
    try:
        process = _launch(service_path, distribution=None)
        service.join()
        assert process is not None
        process.close()
        assert service.request["parameters"]["distro"] is None
    finally:
        service.close()


@pytest.mark.parametrize(
    "reply",
    [
        {"error": "io.pywsl.WslError", "parameters": {"code": "WSL_E_DISTRO_NOT_FOUND"}},
        {"parameters": {}},
        {"parameters": {"pid": "42"}},
        {"parameters": {"pid": True}},
        {"error": "io.pywsl.InternalError", "parameters": {"pid": 3}},
    ],
)
def test_anything_but_a_pid_leaves_the_launch_to_the_full_path(
    as_user: None, service_path: Path, reply: dict[str, Any]
) -> None:
    service = FakeService(service_path, _answer(reply))
    try:
        assert _launch(service_path) is None
        service.join()
    finally:
        service.close()


@pytest.mark.parametrize("raw", [b"not json\0", b"[1, 2]\0", b"\xff\xfe\0", b"{}\0"])
def test_a_reply_that_is_no_object_leaves_the_launch_to_the_full_path(
    as_user: None, service_path: Path, raw: bytes
) -> None:
    service = FakeService(service_path, lambda connection, request, fds: connection.sendall(raw))
    try:
        assert _launch(service_path) is None
        service.join()
    finally:
        service.close()


def test_descriptors_that_come_with_a_reply_are_closed(as_user: None, service_path: Path) -> None:
    read_end, write_end = os.pipe()
    service = FakeService(service_path, _answer({"parameters": {"pid": 5}}, fds=[read_end]))
    before = set(os.listdir("/proc/self/fd"))
    try:
        process = _launch(service_path)
        service.join()
        assert process is not None
        process.close()
    finally:
        service.close()
    assert set(os.listdir("/proc/self/fd")) - before == set()
    os.close(read_end)
    os.close(write_end)


def _vanish(connection: socket.socket, request: dict[str, Any], fds: list[int]) -> None:
    """A service that dies before it hands the descriptors on: every copy closes with it."""
    while fds:
        os.close(fds.pop())


def test_a_service_gone_without_a_reply_and_without_a_relay_runs_nothing(
    as_user: None, service_path: Path
) -> None:
    service = FakeService(service_path, _vanish)
    try:
        assert _launch(service_path) is None
        service.join()
    finally:
        service.close()


def test_a_service_gone_after_the_relay_took_over_is_waited_for(as_user: None, service_path: Path) -> None:
    service = FakeService(service_path, lambda connection, request, fds: None)  # the relay keeps the fds
    try:
        process = _launch(service_path)
        service.join()
        assert process is not None
        assert process.warnings == []
        relay = threading.Thread(target=_relay_exits, args=(service.fds, 3))
        relay.start()
        try:
            assert process.wait() == 3
        finally:
            process.close()
            relay.join(timeout=10)
    finally:
        service.close()


def test_no_service_leaves_the_launch_to_the_full_path(as_user: None, service_path: Path) -> None:
    assert _launch(service_path) is None
    assert _launch(service_path.parent / "file" / "service.sock") is None


def test_a_request_the_service_would_refuse_is_not_sent(as_user: None, service_path: Path) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(service_path))
    listener.listen(1)
    listener.setblocking(False)
    try:
        huge = "x" * (launch_client.MAX_REQUEST_SIZE + 1)
        assert _launch(service_path, HUGE=huge, WSLENV="HUGE") is None
        assert _launch(service_path, WSLENV="ODD", ODD="\udcff") is None
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing was sent
    finally:
        listener.close()


def test_root_and_terminals_are_not_its_case(monkeypatch: pytest.MonkeyPatch, service_path: Path) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(launch_client, "plain_streams", lambda: True)
    assert _launch(service_path) is None
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(launch_client, "plain_streams", lambda: False)
    assert _launch(service_path) is None
