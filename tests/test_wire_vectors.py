"""WSL's published wire vectors (examples.json) decode to their values and encode to their bytes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from wire_vectors import load_vectors

from pywsl.wire import ProtocolError, schema, vectors

EXAMPLES: list[dict[str, Any]] = load_vectors("examples.json")["examples"]


def test_the_vector_file_covers_many_structs() -> None:
    assert len(EXAMPLES) >= 49
    assert len({example["struct"] for example in EXAMPLES}) >= 40


@pytest.mark.parametrize("example", EXAMPLES, ids=[example["name"] for example in EXAMPLES])
def test_dump_gives_the_example_values(example: dict[str, Any]) -> None:
    data = bytes.fromhex(example["hex"])
    assert len(data) == example["size"]
    expected = {"fields": example["fields"], "payload": example["payload"]}
    assert vectors.dump(example["struct"], data) == expected


@pytest.mark.parametrize("example", EXAMPLES, ids=[example["name"] for example in EXAMPLES])
def test_build_gives_the_example_bytes(example: dict[str, Any]) -> None:
    data = vectors.build(example["struct"], example["fields"], example["payload"])
    assert data.hex() == example["hex"]


@pytest.mark.parametrize("example", EXAMPLES, ids=[example["name"] for example in EXAMPLES])
def test_schema_agrees_with_the_example(example: dict[str, Any]) -> None:
    message_schema = schema(example["struct"])
    assert message_schema.sizeof == example["sizeof_struct"]
    assert message_schema.message_type == example["struct_static_type_value"]
    if "buffer_offset" in example:
        assert message_schema.buffer_offset == example["buffer_offset"]
        assert message_schema.common_offset == example["offset_base"]
    message = message_schema.parse(bytes.fromhex(example["hex"]))
    assert message.Header.MessageType == example["message_type_value"]
    assert message.Header.MessageSize == example["size"]


@pytest.mark.parametrize("example", EXAMPLES, ids=[example["name"] for example in EXAMPLES])
def test_build_ignores_the_offsets_it_is_given(example: dict[str, Any]) -> None:
    """Offset / count / size fields and MessageSize in `fields` are recomputed, never copied."""
    fields = json.loads(json.dumps(example["fields"]))
    computed = schema(example["struct"]).computed_fields
    for path in computed:
        holder = fields
        *parents, leaf = path.split(".")
        for parent in parents:
            holder = holder[parent]
        holder[leaf] = 0xDEAD
    assert vectors.build(example["struct"], fields, example["payload"]).hex() == example["hex"]


@pytest.mark.parametrize(
    "example", [e for e in EXAMPLES if len(bytes.fromhex(e["hex"])) > 16], ids=lambda e: e["name"]
)
def test_a_truncated_example_is_a_protocol_error(example: dict[str, Any]) -> None:
    data = bytes.fromhex(example["hex"])[:-1]
    with pytest.raises(ProtocolError) as error:
        vectors.dump(example["struct"], data)
    assert error.value.struct == example["struct"]
    assert error.value.field == "Header.MessageSize"


def test_dump_omits_empty_payload_categories() -> None:
    data = schema("LX_INIT_TERMINATE_INSTANCE").build(Force=True)
    assert vectors.dump("LX_INIT_TERMINATE_INSTANCE", data) == {
        "fields": {
            "Header": {"MessageType": 14, "MessageSize": 20, "TransactionId": 0, "TransactionStep": 0},
            "Force": True,
        },
        "payload": {},
    }


def test_dump_lists_absent_values_in_field_order() -> None:
    data = schema("LX_MINI_INIT_IMPORT_RESULT").build(Result=-5)
    assert len(data) == 56
    assert vectors.dump("LX_MINI_INIT_IMPORT_RESULT", data)["payload"] == {
        "absent": [
            "FlavorIndex",
            "VersionIndex",
            "ShortcutIconIndex",
            "DefaultNameIndex",
            "TerminalProfileIndex",
        ]
    }


def test_dump_and_build_of_an_empty_buffer_string_padded_to_sizeof() -> None:
    """Telemetry with no text: one NUL at 17 then zero padding up to sizeof (20)."""
    data = bytes.fromhex("30000000140000000200000000000000") + b"\x00" + b"\x00" + b"\x00\x00"
    dumped = vectors.dump("LX_MINI_INIT_TELEMETRY_MESSAGE", data)
    assert dumped["payload"] == {"strings": {"Buffer": ""}}
    assert vectors.build("LX_MINI_INIT_TELEMETRY_MESSAGE", dumped["fields"], dumped["payload"]) == data


def test_dump_of_common_lists_and_placeholders() -> None:
    """Default shell (no command line, no NT environment): single-NUL placeholders are reserved."""
    data = schema("LX_INIT_CREATE_PROCESS_UTILITY_VM").build(
        Common={"Environment": ["TERM=xterm"], "Username": "root"}
    )
    dumped = vectors.dump("LX_INIT_CREATE_PROCESS_UTILITY_VM", data)
    assert dumped["payload"] == {
        "strings": {
            "Common.FilenameOffset": "",
            "Common.CurrentWorkingDirectoryOffset": "",
            "Common.NtPathOffset": "",
            "Common.UsernameOffset": "root",
        },
        "string_lists": {
            "Common.CommandLineOffset": [],
            "Common.EnvironmentOffset": ["TERM=xterm"],
            "Common.NtEnvironmentOffset": [],
        },
    }
    assert dumped["fields"]["Common"]["CommandLineCount"] == 0
    assert vectors.build("LX_INIT_CREATE_PROCESS_UTILITY_VM", dumped["fields"], dumped["payload"]) == data


def test_build_rejects_payload_it_cannot_place() -> None:
    fields = {"Header": {"MessageType": 39}}
    with pytest.raises(ValueError, match="category"):
        vectors.build("LX_MINI_INIT_UNMOUNT_MESSAGE", fields, {"buffer_hex": {"Buffer": "00"}})
    with pytest.raises(ValueError, match="locate"):
        vectors.build("LX_MINI_INIT_UNMOUNT_MESSAGE", fields, {"strings": {"NameOffset": "x"}})
    with pytest.raises(ValueError, match="category"):
        vectors.build("CREATE_PROCESS_MESSAGE", {}, {"strings": {"CommandLineIndex": "x"}})
    with pytest.raises(KeyError):
        vectors.dump("WSLC_MOUNT", b"")
