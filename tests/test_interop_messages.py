"""The interop messages as the client and the server encode and decode them, against the wire schemas."""

from __future__ import annotations

import errno
import struct

import pytest

from pywsl.guest import interop_messages as messages
from pywsl.wire import schema
from pywsl.wire.errors import ProtocolError

CREATE = schema("LX_INIT_CREATE_NT_PROCESS_UTILITY_VM")


def _built(filename: str, cwd: str, arguments: list[str], environment: list[str], pty: bool) -> bytes:
    built: bytes = CREATE.build(
        Port=0,
        Common={
            "StdFdIds": [0, 0, 0],
            "Filename": filename,
            "CurrentWorkingDirectory": cwd,
            "Environment": environment,
            "CommandLine": arguments,
            "Rows": 24 if pty else 0,
            "Columns": 80 if pty else 0,
            "CreatePseudoconsole": pty,
        },
    )
    return built


@pytest.mark.parametrize(
    ("filename", "cwd", "arguments", "environment", "pty"),
    [
        ("/usr/bin/x", "/srv", ["a", "", "b c"], ["A=1", "PATH=/usr/bin"], True),
        ("", "", [], [], False),
        ("/bin/é", "/home/ü", ["ß"], ["X=\u00e9"], False),
    ],
)
def test_create_process_both_ways(
    filename: str, cwd: str, arguments: list[str], environment: list[str], pty: bool
) -> None:
    rows, columns = (24, 80) if pty else (0, 0)
    encoded = messages.encode_create_process(filename, cwd, arguments, environment, rows, columns, pty)
    assert encoded == _built(filename, cwd, arguments, environment, pty)
    decoded = messages.decode_create_process(encoded, 100, 100)
    assert (decoded.filename, decoded.cwd, decoded.arguments, decoded.environment) == (
        filename,
        cwd,
        arguments,
        environment,
    )
    assert (decoded.rows, decoded.columns, decoded.pseudoconsole) == (rows, columns, pty)
    parsed = CREATE.parse(encoded)
    assert list(parsed.Common.CommandLine) == arguments


def test_names_that_are_not_utf8_travel_unchanged() -> None:
    encoded = messages.encode_create_process("/srv/\udcff", "/", ["\udcfe"], [])
    decoded = messages.decode_create_process(encoded, 1, 1)
    assert (decoded.filename, decoded.arguments) == ("/srv/\udcff", ["\udcfe"])


def test_small_messages_match_the_schemas() -> None:
    assert messages.encode_signal(2) == schema("PYWSL_SIGNAL_PROCESS").build(Signal=2)
    assert messages.encode_exit_status(-3) == schema("LX_INIT_PROCESS_EXIT_STATUS").build(ExitCode=-3)
    assert messages.encode_window_size(50, 132) == schema("LX_INIT_WINDOW_SIZE_CHANGED").build(
        Rows=50, Columns=132
    )
    response = schema("LX_INIT_CREATE_PROCESS_RESPONSE").build(Result=errno.E2BIG, SignalPipeId=0, Flags=0)
    assert messages.encode_response(errno.E2BIG) == response
    assert messages.int32_at_16(response) == errno.E2BIG
    assert messages.window_size_of(messages.encode_window_size(50, 132)) == (50, 132)


def _with_field(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    changed = bytearray(data)
    struct.pack_into(fmt, changed, offset, value)
    return bytes(changed)


def test_malformed_requests_are_refused_as_the_schema_refuses_them() -> None:
    good = messages.encode_create_process("/bin/x", "/", ["a"], ["A=1"])
    broken = [
        _with_field(good, 48, "<I", 10_000),  # Filename beyond the end
        _with_field(good, 48, "<I", 0),  # Filename inside the fixed part
        _with_field(good, 60, "<H", 5),  # five arguments, one present
        good[:-1] + b"x",  # the last argument has no NUL
    ]
    for data in broken:
        with pytest.raises(messages.MalformedMessage):
            messages.decode_create_process(data, 100, 100)
        with pytest.raises(ProtocolError):
            CREATE.parse(data)
    with pytest.raises(messages.MalformedMessage):
        messages.decode_create_process(good[:40], 100, 100)
    with pytest.raises(messages.MalformedMessage):
        messages.decode_create_process(_with_field(good, 0, "<I", 9), 100, 100)


def test_counts_beyond_the_bounds_are_too_large() -> None:
    many = messages.encode_create_process("/bin/x", "/", ["a"] * 5, [f"V{n}=1" for n in range(5)])
    assert len(messages.decode_create_process(many, 5, 5).arguments) == 5
    with pytest.raises(messages.TooLarge):
        messages.decode_create_process(many, 4, 5)
    with pytest.raises(messages.TooLarge):
        messages.decode_create_process(many, 5, 4)


def test_frame_size_bounds() -> None:
    header = messages.HEADER.pack(messages.EXIT_STATUS, 20, 0, 0)
    assert messages.frame_size(header, 4096) == (messages.EXIT_STATUS, 20)
    for size in (8, 5000):
        with pytest.raises(messages.MalformedMessage):
            messages.frame_size(messages.HEADER.pack(messages.EXIT_STATUS, size, 0, 0), 4096)
