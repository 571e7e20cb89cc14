"""The launch path's struct codec (`pywsl.wire.launch_codec`) against the construct declarations.

For every message of the launch path: the same layout (sizeof, where the variable part starts,
the message types, the fields the writer computes), the same bytes from `build` and the same
values from `parse`, over WSL's published vectors and over random values (hypothesis), and the
same verdict (both decode to equal values, or both raise `ProtocolError`) on corrupted messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wire_vectors import load_vectors

from pywsl.wire import ProtocolError, schema, vectors
from pywsl.wire.codec import MessageSchema
from pywsl.wire.launch_codec import FAST_SCHEMAS, Blob, CStr, Direct, FastSchema, Strings

NAMES = sorted(FAST_SCHEMAS)
EXAMPLES: list[dict[str, Any]] = [
    example for example in load_vectors("examples.json")["examples"] if example["struct"] in FAST_SCHEMAS
]
RANGES = {
    "?": None,
    "H": (0, 0xFFFF),
    "I": (0, 0xFFFFFFFF),
    "i": (-(1 << 31), (1 << 31) - 1),
    "q": (-(1 << 63), (1 << 63) - 1),
    "Q": (0, (1 << 64) - 1),
}
TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\0"), max_size=12)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _pair(name: str) -> tuple[FastSchema, MessageSchema]:
    return FAST_SCHEMAS[name], schema(name)


def _plain(value: Any) -> Any:
    """A parsed message as nested dicts (enum members compare as their numbers)."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    return value


def _fixed_values(
    fields: Mapping[str, str], computed: frozenset[str], prefix: str, fast: FastSchema | None = None
) -> st.SearchStrategy[Any]:
    chosen: dict[str, st.SearchStrategy[Any]] = {}
    for field, code in fields.items():
        if prefix + field in computed:
            continue
        if fast is not None and field in fast.nested:
            chosen[field] = _fixed_values(fast.nested[field].fixed.codes, computed, f"{field}.")
            continue
        bounds = RANGES[code]
        chosen[field] = st.booleans() if bounds is None else st.integers(*bounds)
    return st.fixed_dictionaries(chosen)


def _payload_values(items: tuple[CStr | Direct | Strings | Blob, ...]) -> st.SearchStrategy[Any]:
    chosen: dict[str, st.SearchStrategy[Any]] = {}
    for item in items:
        if isinstance(item, Strings):
            chosen[item.name] = st.lists(TEXT, max_size=4)
        elif isinstance(item, Blob):
            chosen[item.name] = (
                (st.none() | st.binary(max_size=40)) if item.optional else st.binary(max_size=40)
            )
        elif isinstance(item, Direct) or item.optional:
            chosen[item.name] = st.none() | TEXT
        else:
            chosen[item.name] = TEXT
    return st.fixed_dictionaries(chosen)


@st.composite
def _values(draw: st.DrawFn, fast: FastSchema) -> dict[str, Any]:
    values: dict[str, Any] = {}
    values.update(draw(_fixed_values(fast.fields, fast.computed_fields, "", fast)))
    values.update(draw(_payload_values(fast.payload)))
    if fast.common is not None:
        common = dict(draw(_fixed_values(fast.common_fields, fast.computed_fields, "Common.")))
        common.update(draw(_payload_values(fast.common.payload)))
        values["Common"] = common
    if len(fast.accepted_types) > 1:
        values["Header"] = {"MessageType": draw(st.sampled_from(sorted(fast.accepted_types)))}
    return values


def test_every_launch_message_is_covered() -> None:
    assert set(NAMES) == {
        "LX_INIT_GUEST_CAPABILITIES",
        "LX_MINI_INIT_EARLY_CONFIG_MESSAGE",
        "LX_MINI_INIT_CONFIG_MESSAGE",
        "LX_MINI_INIT_CHILD_EXIT_MESSAGE",
        "LX_MINI_INIT_IMPORT_RESULT",
        "LX_MINI_INIT_MOUNT_MESSAGE",
        "LX_MINI_INIT_UNMOUNT_MESSAGE",
        "LX_MINI_INIT_DETACH_MESSAGE",
        "LX_MINI_INIT_MOUNT_RESULT_MESSAGE",
        "LX_MINI_INIT_RESIZE_DISTRIBUTION_MESSAGE",
        "LX_MINI_INIT_RESIZE_DISTRIBUTION_RESPONSE",
        "LX_MINI_INIT_MESSAGE",
        "LX_MINI_INIT_CREATE_INSTANCE_RESULT",
        "LX_INIT_TERMINATE_INSTANCE",
        "LX_INIT_CONFIGURATION_INFORMATION",
        "LX_INIT_CONFIGURATION_INFORMATION_RESPONSE",
        "LX_INIT_CREATE_SESSION",
        "LX_INIT_CREATE_SESSION_RESPONSE",
        "LX_INIT_CREATE_PROCESS_UTILITY_VM",
        "RESULT_MESSAGE<uint32_t>",
        "LX_INIT_CREATE_PROCESS_RESPONSE",
        "PYWSL_INSTANCE_LIST",
        "PYWSL_SHUTDOWN_VM",
        "PYWSL_IMPORT_WARNINGS",
        "LX_INIT_PROCESS_EXIT_STATUS",
        "LX_INIT_WINDOW_SIZE_CHANGED",
        "PYWSL_SIGNAL_PROCESS",
    }
    assert len({example["struct"] for example in EXAMPLES}) >= 10


@pytest.mark.parametrize("name", NAMES)
def test_the_layout_is_the_declared_one(name: str) -> None:
    fast, declared = _pair(name)
    assert fast.sizeof == declared.sizeof
    assert fast.message_type == declared.message_type
    assert fast.accepted_types == declared.accepted_types
    assert fast.buffer_offset == declared.buffer_offset
    assert fast.common_offset == declared.common_offset
    assert fast.computed_fields == declared.computed_fields
    assert [field.name for field in declared.fields if field.name != "Header"] == [
        *fast.fields,
        *(["Common"] if fast.common is not None else []),
    ]


@pytest.mark.parametrize("example", EXAMPLES, ids=[example["name"] for example in EXAMPLES])
def test_the_vectors_parse_to_the_declared_values(example: dict[str, Any]) -> None:
    fast, declared = _pair(example["struct"])
    data = bytes.fromhex(example["hex"])
    assert _plain(fast.parse(data)) == _plain(declared.parse(data))


@pytest.mark.parametrize("example", EXAMPLES, ids=[example["name"] for example in EXAMPLES])
def test_the_vectors_build_from_their_values(example: dict[str, Any]) -> None:
    fast, _declared = _pair(example["struct"])
    data = bytes.fromhex(example["hex"])
    parsed = _plain(fast.parse(data))
    values = _settable(fast, parsed)
    expected = bytearray(vectors.build(example["struct"], example["fields"], example["payload"]))
    expected[8:16] = bytes(8)  # TransactionId and TransactionStep: the channel stamps them when it sends
    assert fast.build(**values).hex() == expected.hex()


def _settable(fast: FastSchema, parsed: dict[str, Any]) -> dict[str, Any]:
    """What a caller passes to `build` for a parsed message: no header, no computed field."""
    values = {
        key: value for key, value in parsed.items() if key != "Header" and key not in fast.computed_fields
    }
    if len(fast.accepted_types) > 1:
        values["Header"] = {"MessageType": parsed["Header"]["MessageType"]}
    if fast.common is not None:
        values["Common"] = {
            key: value
            for key, value in parsed["Common"].items()
            if f"Common.{key}" not in fast.computed_fields
        }
    return values


@pytest.mark.parametrize("name", NAMES)
def test_random_values_build_the_same_bytes_and_parse_back(name: str) -> None:
    fast, declared = _pair(name)

    @SETTINGS
    @given(_values(fast))
    def check(values: dict[str, Any]) -> None:
        data = fast.build(**values)
        assert data == declared.build(**values)
        parsed = _plain(fast.parse(data))
        assert parsed == _plain(declared.parse(data))
        assert _settable(fast, parsed) == {**values, **_explicit_absent(fast, values)}

    check()


def _absent(item: CStr | Direct | Strings | Blob) -> Any:
    if isinstance(item, Strings):
        return []
    return b"" if isinstance(item, Blob) and not item.optional else None


def _explicit_absent(fast: FastSchema, values: dict[str, Any]) -> dict[str, Any]:
    """Optional strings and lists a caller left out come back as None / []."""
    absent: dict[str, Any] = {}
    for item in fast.payload:
        if item.name not in values:
            absent[item.name] = _absent(item)
    return absent


@pytest.mark.parametrize("name", NAMES)
def test_corrupted_messages_get_the_same_verdict(name: str) -> None:
    fast, declared = _pair(name)

    @SETTINGS
    @given(_values(fast), st.data())
    def check(values: dict[str, Any], data: st.DataObject) -> None:
        message = bytearray(fast.build(**values))
        for _ in range(data.draw(st.integers(1, 4))):
            position = data.draw(st.integers(0, len(message) - 1))
            message[position] = data.draw(st.integers(0, 255))
        if data.draw(st.booleans()):
            message = message[: data.draw(st.integers(0, len(message)))]
        _same_verdict(fast, declared, bytes(message))

    check()


def _same_verdict(fast: FastSchema, declared: MessageSchema, data: bytes) -> None:
    try:
        expected = _plain(declared.parse(data))
    except ProtocolError:
        with pytest.raises(ProtocolError):
            fast.parse(data)
        return
    assert _plain(fast.parse(data)) == expected


@pytest.mark.parametrize(
    ("name", "values"),
    [
        ("LX_INIT_CREATE_SESSION_RESPONSE", {"Port": 1 << 32}),
        ("LX_INIT_PROCESS_EXIT_STATUS", {"ExitCode": 1 << 31}),
        ("LX_INIT_WINDOW_SIZE_CHANGED", {"Rows": -1}),
        ("LX_INIT_CONFIGURATION_INFORMATION", {"Hostname": "a\0b"}),
        ("LX_INIT_CONFIGURATION_INFORMATION", {"Timezone": 5}),
        ("LX_INIT_CREATE_PROCESS_UTILITY_VM", {"Common": {"CommandLine": "not a list"}}),
        ("LX_INIT_CREATE_PROCESS_UTILITY_VM", {"Common": {"Environment": ["\udcff"]}}),
        ("LX_MINI_INIT_MESSAGE", {"Header": {"MessageType": 2}}),
        ("LX_MINI_INIT_CONFIG_MESSAGE", {"Entropy": "not bytes"}),
        ("LX_MINI_INIT_CONFIG_MESSAGE", {"NetworkingConfiguration": 5}),
        ("LX_MINI_INIT_CONFIG_MESSAGE", {"NetworkingConfiguration": {"EphemeralPortRangeEnd": 1 << 16}}),
    ],
)
def test_invalid_values_are_refused_by_both(name: str, values: dict[str, Any]) -> None:
    fast, declared = _pair(name)
    with pytest.raises(ProtocolError):
        declared.build(**values)
    with pytest.raises(ProtocolError):
        fast.build(**values)


def test_an_unknown_field_is_refused() -> None:
    with pytest.raises(TypeError):
        FAST_SCHEMAS["LX_INIT_CREATE_SESSION"].build(Console=1)
    with pytest.raises(TypeError):
        FAST_SCHEMAS["LX_INIT_CREATE_PROCESS_UTILITY_VM"].build(Common={"Shell": 1})
