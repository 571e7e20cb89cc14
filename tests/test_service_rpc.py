"""The service's wire format: framing, descriptors, limits, parameter checks, value codec."""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pywsl.api.service import rpc


@pytest.fixture
def pair() -> Iterator[tuple[rpc.Connection, rpc.Connection]]:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    a, b = rpc.Connection(left), rpc.Connection(right)
    yield a, b
    a.close()
    b.close()


def test_message_is_json_terminated_by_nul() -> None:
    data = rpc.encode_message({"method": "io.pywsl.UserSession.Shutdown", "parameters": {"force": True}})
    assert data.endswith(b"\0")
    assert data.count(b"\0") == 1
    assert rpc.decode_message(data[:-1]) == {
        "method": "io.pywsl.UserSession.Shutdown",
        "parameters": {"force": True},
    }


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"{", "not valid JSON"),
        (b"[1, 2]", "not an object"),
        (b'"text"', "not an object"),
        (b'{"a": 1, "a": 2}', "duplicate key"),
        (b'{"a": NaN}', "NaN"),
        (b'{"a": "\xff"}', "UTF-8"),
        (b"[" * 100000 + b"]" * 100000, "nest"),
    ],
)
def test_malformed_messages_are_refused_clearly(data: bytes, reason: str) -> None:
    with pytest.raises(rpc.InvalidMessage, match=reason):
        rpc.decode_message(data)


def test_messages_and_descriptors_travel_together(pair: tuple[rpc.Connection, rpc.Connection]) -> None:
    a, b = pair
    read_end, write_end = os.pipe()
    try:
        a.send({"method": "m", "parameters": {"fd": 0}}, [write_end])
        received = b.receive()
        assert received is not None
        message, fds = received
        assert message["parameters"] == {"fd": 0}
        assert len(fds) == 1
        os.write(fds[0], b"through the copy")
        os.close(fds[0])
        assert os.read(read_end, 100) == b"through the copy"
    finally:
        os.close(read_end)
        os.close(write_end)


def test_several_messages_in_one_read_are_split(pair: tuple[rpc.Connection, rpc.Connection]) -> None:
    a, b = pair
    a.sock.sendall(b'{"n":1}\0{"n":2}\0{"n"')
    a.sock.sendall(b":3}\0")
    assert [b.receive(), b.receive(), b.receive()] == [({"n": 1}, []), ({"n": 2}, []), ({"n": 3}, [])]
    a.sock.shutdown(socket.SHUT_WR)
    assert b.receive() is None


def test_large_message_crosses_several_reads(pair: tuple[rpc.Connection, rpc.Connection]) -> None:
    a, b = pair
    payload = "x" * (rpc.MAX_MESSAGE_SIZE - 100)

    sender = threading.Thread(target=a.send, args=({"p": payload},))
    sender.start()
    received = b.receive()
    sender.join()
    assert received == ({"p": payload}, [])


def test_oversized_message_is_fatal(pair: tuple[rpc.Connection, rpc.Connection]) -> None:
    a, b = pair
    with pytest.raises(rpc.InvalidMessage, match="exceeds"):
        a.send({"p": "x" * rpc.MAX_MESSAGE_SIZE})

    def flood() -> None:
        with contextlib.suppress(OSError):
            a.sock.sendall(b"x" * (rpc.MAX_MESSAGE_SIZE + 1))

    sender = threading.Thread(target=flood)
    sender.start()
    with pytest.raises(rpc.InvalidMessage) as caught:
        b.receive()
    assert caught.value.fatal
    b.sock.close()
    sender.join()


def test_too_many_descriptors_are_fatal_and_closed(pair: tuple[rpc.Connection, rpc.Connection]) -> None:
    a, b = pair
    read_end, write_end = os.pipe()
    try:
        fds = [os.dup(write_end) for _ in range(rpc.MAX_FDS + 4)]
        socket.send_fds(a.sock, [b'{"x":1}\0'], fds)
        rpc.close_fds(fds)
        with pytest.raises(rpc.InvalidMessage, match="file descriptors") as caught:
            b.receive()
        assert caught.value.fatal
        os.close(write_end)
        write_end = -1
        # Every copy that reached the receiver was closed: the pipe reports EOF.
        assert os.read(read_end, 1) == b""
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
    with pytest.raises(rpc.InvalidMessage):
        a.send({"x": 1}, [0] * (rpc.MAX_FDS + 1))


def test_malformed_message_keeps_the_stream_usable(pair: tuple[rpc.Connection, rpc.Connection]) -> None:
    a, b = pair
    read_end, write_end = os.pipe()
    socket.send_fds(a.sock, [b"not json\0"], [write_end])
    os.close(write_end)
    with pytest.raises(rpc.InvalidMessage) as caught:
        b.receive()
    assert not caught.value.fatal
    assert os.read(read_end, 1) == b"", "the descriptor of a refused message is closed"
    os.close(read_end)
    a.send({"ok": True})
    assert b.receive() == ({"ok": True}, [])


def test_eof_in_the_middle_of_a_message(pair: tuple[rpc.Connection, rpc.Connection]) -> None:
    a, b = pair
    a.sock.sendall(b'{"half": ')
    a.sock.shutdown(socket.SHUT_WR)
    with pytest.raises(ConnectionError):
        b.receive()


def test_request_envelope() -> None:
    request = rpc.parse_request({"method": "io.pywsl.UserSession.Shutdown", "more": True}, [])
    assert request.parameters == {}
    assert request.more
    for bad in (
        {},
        {"method": 3},
        {"method": "m", "parameters": []},
        {"method": "m", "more": "yes"},
        {"method": "m", "upgrade": True},
    ):
        with pytest.raises(rpc.InvalidMessage):
            rpc.parse_request(bad, [])


def test_unknown_method() -> None:
    with pytest.raises(rpc.MethodNotFound) as caught:
        rpc.method("io.pywsl.UserSession.FormatDisk")
    assert caught.value.reply() == {
        "error": "org.varlink.service.MethodNotFound",
        "parameters": {"method": "io.pywsl.UserSession.FormatDisk"},
    }


def test_method_names_are_wsl_names() -> None:
    names = {method.name for method in rpc.METHODS.values()}
    assert {
        "CreateInstance",
        "RegisterDistribution",
        "GetDistributionId",
        "TerminateDistribution",
        "UnregisterDistribution",
        "ConfigureDistribution",
        "GetDistributionConfiguration",
        "GetDefaultDistribution",
        "SetDefaultDistribution",
        "EnumerateDistributions",
        "CreateLxProcess",
        "ExportDistribution",
        "MoveDistribution",
        "Shutdown",
        "SetVersion",
        "SetSparse",
        "ResizeDistribution",
        "ImportDistributionInplace",
        "AttachDisk",
        "DetachDisk",
        "MountDisk",
        "CompleteOobe",
        "InstallBuiltinDistribution",
    } == names
    assert all(full.startswith("io.pywsl.UserSession.") for full in rpc.METHODS)


def test_parameters_are_checked_and_defaulted() -> None:
    method = rpc.method("io.pywsl.UserSession.RegisterDistribution")
    arguments = method.decode_parameters({"name": "Deb", "source": 1}, [10, 11])
    assert arguments == {
        "name": "Deb",
        "source": 11,
        "location": None,
        "version": 2,
        "run_oobe": False,
        "vhd": False,
        "vhd_size": None,
        "fixed_vhd": False,
    }
    cases: list[tuple[dict[str, object], str, str]] = [
        ({"name": "Deb"}, "source", "missing"),
        ({"source": 2}, "source", "carried 2"),
        ({"source": True}, "source", "file descriptor"),
        ({"source": 0, "version": "2"}, "version", "integer"),
        ({"source": 0, "version": 2**40}, "version", "outside"),
        ({"source": 0, "name": ["x"]}, "name", "string"),
        ({"source": 0, "name": "a\0b"}, "name", "NUL"),
        ({"source": 0, "uid": 0}, "uid", "no parameter"),
        ({"source": 0, "run_oobe": 1}, "run_oobe", "boolean"),
        ({"source": 0, "location": "relative/place"}, "location", "absolute path"),
    ]
    for parameters, name, text in cases:
        with pytest.raises(rpc.InvalidParameter, match=text) as caught:
            method.decode_parameters(parameters, [10, 11])
        assert caught.value.parameters["parameter"] == name


def test_distro_values() -> None:
    method = rpc.method("io.pywsl.UserSession.TerminateDistribution")
    guid = uuid.uuid4()
    assert method.decode_parameters({}, []) == {"distro": None}
    assert method.decode_parameters({"distro": rpc.encode_distro("Deb")}, []) == {"distro": "Deb"}
    assert method.decode_parameters({"distro": rpc.encode_distro(guid)}, []) == {"distro": guid}
    bad: object
    for bad in ("Deb", {"id": "nope"}, {"name": 1}, {"name": "a", "id": str(guid)}, []):
        with pytest.raises(rpc.InvalidParameter):
            method.decode_parameters({"distro": bad}, [])
    with pytest.raises(TypeError):
        rpc.encode_distro(3)  # type: ignore[arg-type]


def test_create_lx_process_parameters() -> None:
    method = rpc.method("io.pywsl.UserSession.CreateLxProcess")
    fds = [20, 21, 22, 23, 24]
    arguments = method.decode_parameters(
        {
            "command_line": ["ls", "-l"],
            "stdin": 0,
            "stdout": 1,
            "stderr": 2,
            "control": 3,
            "exit": 4,
            "console": [True, False, False],
            "rows": 24,
            "columns": 80,
            "environment": {"A": "b"},
        },
        fds,
    )
    assert arguments["command_line"] == ["ls", "-l"]
    assert (arguments["stdin"], arguments["exit"]) == (20, 24)
    assert arguments["console"] == (True, False, False)
    assert arguments["environment"] == {"A": "b"}
    assert arguments["filename"] is None and arguments["cwd"] == ""
    with pytest.raises(rpc.InvalidParameter, match="console"):
        method.decode_parameters(
            {"stdin": 0, "stdout": 1, "stderr": 2, "control": 3, "exit": 4, "console": [True]}, fds
        )
    with pytest.raises(rpc.InvalidParameter, match="command_line"):
        method.decode_parameters(
            {"stdin": 0, "stdout": 1, "stderr": 2, "control": 3, "exit": 4, "command_line": [1]}, fds
        )


class Colour(enum.Enum):
    RED = "red"


class Number(enum.IntEnum):
    ONE = 1


@dataclasses.dataclass(frozen=True)
class Inner:
    path: Path
    colour: Colour


@dataclasses.dataclass(frozen=True)
class Outer:
    id: uuid.UUID
    name: str
    number: Number
    inner: Inner
    items: list[str]
    maybe: int | None
    pair: tuple[int, int]
    table: dict[str, int] = dataclasses.field(default_factory=dict)


def test_values_round_trip_through_json() -> None:
    inner = Inner(Path("/a/b"), Colour.RED)
    value = Outer(uuid.uuid4(), "n", Number.ONE, inner, ["x"], None, (1, 2), {"k": 3})
    encoded = rpc.encode_value(value)
    assert encoded["id"] == str(value.id)
    assert encoded["inner"] == {"path": "/a/b", "colour": "red"}
    wire = rpc.decode_message(rpc.encode_message(encoded)[:-1])
    assert rpc.decode_value(Outer, wire) == value
    assert rpc.decode_value(list[Outer], [wire]) == [value]


def test_decoding_rejects_mismatches_and_ignores_unknown_keys() -> None:
    value = Outer(uuid.uuid4(), "n", Number.ONE, Inner(Path("/"), Colour.RED), [], 1, (1, 2))
    encoded = rpc.encode_value(value)
    assert rpc.decode_value(Outer, {**encoded, "added_later": 1}) == value
    for key, bad in (("id", "x"), ("number", 7), ("maybe", "1"), ("pair", [1]), ("items", "x")):
        with pytest.raises(ValueError, match=key):
            rpc.decode_value(Outer, {**encoded, key: bad})
    missing = dict(encoded)
    del missing["name"]
    with pytest.raises(ValueError, match="name is missing"):
        rpc.decode_value(Outer, missing)
    del missing["table"]
    missing["name"] = "n"
    assert rpc.decode_value(Outer, missing).table == {}


def test_socket_path_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYWSL_SERVICE_SOCKET", raising=False)
    assert rpc.socket_path() == "/run/pywsl/service.sock"
    monkeypatch.setenv("PYWSL_SERVICE_SOCKET", "/tmp/elsewhere.sock")
    assert rpc.socket_path() == "/tmp/elsewhere.sock"
