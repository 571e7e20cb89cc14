"""Property: any byte string decodes or raises ProtocolError naming the struct and the field.

For every message schema (WSL's and pywsl's), random messages and mutations of valid ones (flipped
bytes, truncations, extensions, huge sizes, offsets and counts pointing anywhere) go through
``parse`` and ``vectors.dump``. Nothing else may escape (no IndexError, struct.error,
UnicodeDecodeError or construct exception), and whatever decodes must encode again to a message
that decodes to the same values.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wire_vectors import load_vectors

from pywsl.wire import ProtocolError, schema, schemas, vectors
from pywsl.wire.codec import Blob, BufferString, CString, MessageSchema, PayloadItem

NAMES = sorted(schemas())
EXAMPLES_PER_STRUCT = 200  # x every schema: well over 10,000 messages per run

SAMPLES: dict[type, Any] = {
    CString: "wert-\u00e9",
    BufferString: "6.6.87.2-microsoft-standard-WSL2",
    Blob: b"\x00\x01\xfe\xff",
}


def _sample(item: PayloadItem) -> Any:
    return SAMPLES.get(type(item), ["alpha", "b=c", "\u00fc"])


def _built_seeds(message_schema: MessageSchema) -> list[bytes]:
    """Valid messages made by the writer: all defaults, and every payload value filled in."""
    values: dict[str, Any] = {item.name: _sample(item) for item in message_schema.payload}
    if message_schema.common is not None:
        values["Common"] = {item.name: _sample(item) for item in message_schema.common.payload}
    return [message_schema.build(), message_schema.build(**values)]


def _example_seeds() -> dict[str, list[bytes]]:
    seeds: dict[str, list[bytes]] = {}
    for example in load_vectors("examples.json")["examples"]:
        seeds.setdefault(example["struct"], []).append(bytes.fromhex(example["hex"]))
    return seeds


EXAMPLE_SEEDS = _example_seeds()
SEEDS = {name: _built_seeds(schema(name)) + EXAMPLE_SEEDS.get(name, []) for name in NAMES}

U32_VALUES = [0, 1, 15, 16, 17, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xFFFF, 0x10000]


def _rarely(draw: st.DrawFn, percent: int) -> bool:
    """True for about ``percent`` % of the draws (Hypothesis favours small integers, hence the top)."""
    return draw(st.integers(0, 99)) >= 100 - percent


@st.composite
def _messages(draw: st.DrawFn, name: str) -> bytes:
    message_schema = schema(name)
    if _rarely(draw, 25):  # random bytes behind a plausible or random header
        body = draw(st.binary(max_size=160))
        message_type = draw(st.sampled_from(sorted(message_schema.accepted_types)))
        size = 16 + len(body)
        if _rarely(draw, 15):
            message_type = draw(st.integers(0, 2**32 - 1))
        if _rarely(draw, 15):
            size = draw(st.sampled_from([message_schema.sizeof, 2**32 - 1]) | st.integers(0, 2**32 - 1))
        framed = struct.pack("<II", message_type, size) + draw(st.binary(min_size=8, max_size=8)) + body
        if _rarely(draw, 10):
            framed = framed[: draw(st.integers(0, len(framed)))]
        return framed
    data = bytearray(draw(st.sampled_from(SEEDS[name])))
    operations = ["u32", "flip", "u32", "u16", "flip", "u32", "extend", "fill", "truncate"]
    for _ in range(draw(st.integers(1, 4))):
        operation = draw(st.sampled_from(operations))
        if operation == "flip" and data:
            position = draw(st.integers(0, len(data) - 1))
            data[position] ^= draw(st.integers(1, 255))
        elif operation == "truncate":
            del data[draw(st.integers(0, len(data))) :]
        elif operation == "extend":
            data += draw(st.binary(min_size=1, max_size=64))
        elif operation in ("u32", "u16") and len(data) >= 20:
            width = 4 if operation == "u32" else 2
            position = draw(st.integers(16, len(data) - width)) & ~(width - 1)
            value = draw(
                st.sampled_from([*U32_VALUES, len(data), len(data) - 1, len(data) + 1])
                | st.integers(0, 2**32 - 1)
            )
            data[position : position + width] = (value & (2 ** (8 * width) - 1)).to_bytes(width, "little")
        elif operation == "fill" and len(data) > 16:
            start = draw(st.integers(16, len(data) - 1))
            data[start:] = bytes([draw(st.sampled_from([0, 0xFF, 0x41, 0x80]))]) * (len(data) - start)
    if len(data) >= 8 and not _rarely(draw, 15):  # mostly keep MessageSize honest to reach the payload
        data[4:8] = struct.pack("<I", len(data))
    return bytes(data)


def _comparable(dumped: dict[str, Any], computed: frozenset[str]) -> dict[str, Any]:
    """A dump without the offsets, counts and sizes the writer recomputes."""

    def strip(fields: dict[str, Any], prefix: str) -> dict[str, Any]:
        return {
            key: strip(value, f"{prefix}{key}.") if isinstance(value, dict) else value
            for key, value in fields.items()
            if prefix + key not in computed
        }

    return {"fields": strip(dumped["fields"], ""), "payload": dumped["payload"]}


def _check(name: str, data: bytes) -> None:
    try:
        schema(name).parse(data)
    except ProtocolError as error:
        assert error.struct == name and error.field, error
    try:
        dumped = vectors.dump(name, data)
    except ProtocolError as error:
        assert error.struct == name and error.field, error
        return
    rebuilt = vectors.build(name, dumped["fields"], dumped["payload"])
    computed = schema(name).computed_fields
    assert _comparable(vectors.dump(name, rebuilt), computed) == _comparable(dumped, computed)


@pytest.mark.parametrize("name", NAMES)
def test_any_bytes_decode_or_raise_protocol_error(name: str) -> None:
    @settings(
        max_examples=EXAMPLES_PER_STRUCT,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(data=_messages(name))
    def run(data: bytes) -> None:
        _check(name, data)

    run()


def test_the_seeds_are_valid_messages() -> None:
    assert len(NAMES) * EXAMPLES_PER_STRUCT >= 10_000
    for name, seeds in SEEDS.items():
        for seed in seeds:
            schema(name).parse(seed)


@pytest.mark.parametrize("name", NAMES)
def test_hostile_sizes_and_offsets(name: str) -> None:
    """Counts and offsets at their maxima, sizes far beyond the data: errors, never hangs."""
    message_schema = schema(name)
    for seed in SEEDS[name]:
        for position in range(16, min(len(seed), message_schema.buffer_offset) - 1, 2):
            for value in (0xFFFF, 0xFFFFFFFF):
                data = bytearray(seed)
                width = 4 if position + 4 <= len(data) and value > 0xFFFF else 2
                data[position : position + width] = (value & (2 ** (8 * width) - 1)).to_bytes(width, "little")
                _check(name, bytes(data))
        huge = bytearray(seed)
        huge[4:8] = struct.pack("<I", 0xFFFFFFFF)
        _check(name, bytes(huge))
    big = bytes(16 * 1024 * 1024 + 1)
    with pytest.raises(ProtocolError):
        message_schema.parse(big)
