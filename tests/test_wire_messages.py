"""Message declarations: layouts against WSL's compiled layouts.json, the Python API, bad input."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from enum import IntFlag
from pathlib import Path
from typing import Any

import construct as cs
import pytest
from wire_vectors import load_vectors

import pywsl.wire
from pywsl.wire import (
    LX_INIT_CREATE_PROCESS_FLAGS,
    LX_MESSAGE_TYPE,
    LX_MINI_INIT_MESSAGE_FLAGS,
    PYWSL_MESSAGE_TYPE,
    TRANSACTION_STEP,
    Message,
    ProtocolError,
    constants,
    enums,
    extensions,
    messages,
    schema,
    schemas,
)
from pywsl.wire.codec import Block, struct_declarations, struct_layout

LAYOUTS: dict[str, Any] = load_vectors("layouts.json")

OUT_OF_SCOPE = ("LX_GNS_", "WSLC_", "GUID")  # networking service, containers, and a helper struct
IN_SCOPE = [s for s in LAYOUTS["structs"] if not s["name"].startswith(OUT_OF_SCOPE)]
WSL_ENUMS = [e for e in LAYOUTS["enums"] if not e["name"].startswith("WSLC_")]  # containers: unused
EXTENSIONS = {
    "PYWSL_QUERY_INSTANCES",
    "PYWSL_INSTANCE_LIST",
    "PYWSL_ATTACH_NOTIFY",
    "PYWSL_SHUTDOWN_VM",
    "PYWSL_SIGNAL_PROCESS",
    "PYWSL_IMPORT_WARNINGS",
}


def header(message_type: int, size: int, transaction_id: int = 0, step: int = 0) -> bytes:
    return struct.pack("<IIII", message_type, size, transaction_id, step)


# ---- layouts ---------------------------------------------------------------------------------------


def _leaf(subcon: Any) -> Any:
    while isinstance(subcon, cs.Array | cs.Adapter):
        subcon = subcon.subcon
    return subcon


def test_every_in_scope_struct_is_declared() -> None:
    declared = set(struct_declarations())
    wanted = {s["name"] for s in IN_SCOPE}
    assert len(wanted) >= 50
    assert wanted - declared == set()
    assert declared - wanted == EXTENSIONS
    messages_in_scope = {s["name"] for s in IN_SCOPE if s["begins_with_message_header"]} - {"MESSAGE_HEADER"}
    assert set(schemas()) == messages_in_scope | EXTENSIONS


@pytest.mark.parametrize("layout", IN_SCOPE, ids=[s["name"] for s in IN_SCOPE])
def test_struct_layout_matches_wsl(layout: dict[str, Any]) -> None:
    declared = struct_declarations()[layout["name"]]
    assert declared.sizeof() == layout["sizeof"]
    fields = {field.name: field for field in struct_layout(declared)}
    expected = [f for f in layout["fields"] if not f["flexible_array"]]
    assert list(fields) == [f["name"] for f in expected]
    for wsl in expected:
        field = fields[wsl["name"]]
        assert (field.offset, field.size) == (wsl["offset"], wsl["size"]), wsl["name"]
        if wsl["kind_detail"] == "struct":
            assert field.subcon is struct_declarations()[wsl["struct"]], wsl["name"]
            continue
        if wsl.get("array_count"):
            assert isinstance(field.subcon, cs.Array) and field.subcon.count == wsl["array_count"]
        enum_name = wsl.get("enum") or wsl.get("semantics", {}).get("enum")
        if enum_name:  # typed as WSL's enum / flag set
            assert field.subcon.enum_types[0] is enums.WSL_ENUMS[enum_name], wsl["name"]
        leaf = _leaf(field.subcon)
        if wsl["kind_detail"] == "bool":
            assert leaf is cs.Flag, wsl["name"]
        else:
            signed = wsl.get("signed", False)
            assert isinstance(leaf, cs.FormatField), wsl["name"]
            assert leaf.fmtstr[0] == "<" and leaf.fmtstr[1].islower() == signed, wsl["name"]
    padding = sum(p["size"] for p in layout["padding"])
    assert sum(f.size for f in fields.values()) + padding == layout["sizeof"]


@pytest.mark.parametrize("layout", IN_SCOPE, ids=[s["name"] for s in IN_SCOPE])
def test_message_properties_match_wsl(layout: dict[str, Any]) -> None:
    name = layout["name"]
    if name in schemas():
        message_schema = schema(name)
        assert message_schema.message_type == layout["type_value"]
        assert message_schema.response == layout.get("response_struct")
        assert message_schema.has_buffer == (layout.get("flexible_array_member") is not None)
        assert message_schema.buffer_offset == (layout.get("flexible_array_offset") or layout["sizeof"])
    elif name.endswith("_COMMON"):
        block = getattr(messages, name)
        assert isinstance(block, Block)
        assert block.buffer_offset == layout["flexible_array_offset"]


@pytest.mark.parametrize("wsl_enum", WSL_ENUMS, ids=lambda e: e["name"])
def test_enum_matches_wsl(wsl_enum: dict[str, Any]) -> None:
    declared = enums.WSL_ENUMS[wsl_enum["name"]]
    assert {name: int(declared[name]) for name in declared.__members__} == {
        e["name"]: e["value"] for e in wsl_enum["enumerators"]
    }
    assert issubclass(declared, IntFlag) == wsl_enum["is_flag_set"]


def test_constants_match_wsl() -> None:
    for define in LAYOUTS["defines"]:
        assert getattr(constants, define["name"]) == define["value"], define["name"]
    port_range = LAYOUTS["extra"]["c_ephemeralPortRange"]
    assert (port_range["first"], port_range["second"]) == constants.EPHEMERAL_PORT_RANGE


def test_key_constants() -> None:
    assert constants.LX_INIT_UTILITY_VM_INVALID_PORT == 0xFFFFFFFF
    assert constants.LX_INIT_USER_NOT_FOUND == 67
    assert constants.MAX_MESSAGE_SIZE == 16 * 1024 * 1024
    assert constants.MESSAGE_HEADER_SIZE == messages.MESSAGE_HEADER.sizeof() == 16


def test_extension_table() -> None:
    expected = {
        "PYWSL_QUERY_INSTANCES": (200, 16),
        "PYWSL_INSTANCE_LIST": (201, 24),
        "PYWSL_ATTACH_NOTIFY": (202, 16),
        "PYWSL_SHUTDOWN_VM": (203, 20),
        "PYWSL_SIGNAL_PROCESS": (204, 20),
        "PYWSL_IMPORT_WARNINGS": (205, 20),
    }
    for name, (message_type, size) in expected.items():
        message_schema = schema(name)
        assert (message_schema.message_type, message_schema.sizeof) == (message_type, size)
        assert name in (extensions.__doc__ or "")
        assert message_type == PYWSL_MESSAGE_TYPE[name.title().replace("_", "")]


# ---- the Python API ------------------------------------------------------------------------------


def test_build_and_parse_a_fixed_message() -> None:
    session = schema("LX_INIT_CREATE_SESSION")
    data = session.build(ConsoleId=7, Header={"TransactionId": 3, "TransactionStep": 1})
    assert data == header(2, 24, 3, 1) + struct.pack("<q", 7)
    message = session.parse(data)
    assert isinstance(message, Message)
    assert message.struct == "LX_INIT_CREATE_SESSION"
    assert message.ConsoleId == message["ConsoleId"] == 7
    assert message.Header.MessageType is LX_MESSAGE_TYPE.LxInitMessageCreateSession
    assert message.Header.TransactionStep is TRANSACTION_STEP.REQUEST
    assert dict(message.Header) == {
        "MessageType": 2,
        "MessageSize": 24,
        "TransactionId": 3,
        "TransactionStep": 1,
    }
    with pytest.raises(AttributeError):
        _ = message.Nope


def test_strings_by_logical_name() -> None:
    info = schema("LX_INIT_CONFIGURATION_INFORMATION")
    data = info.build(
        Hostname="host",
        Domainname="",
        WindowsHosts="",
        DistributionName="Debian",
        Plan9Socket="",
        Timezone="Etc/UTC",
        DrvFsDefaultOwner=1000,
    )
    assert data[:16] == header(5, 56 + 5 + 1 + 1 + 7 + 1 + 8)
    assert data[16:40] == struct.pack("<6I", 56, 61, 62, 63, 70, 71)
    assert data[56:] == b"host\0\0\0Debian\0\0Etc/UTC\0"
    message = info.parse(data)
    assert (message.Hostname, message.DistributionName, message.Timezone) == ("host", "Debian", "Etc/UTC")
    assert message.HostnameOffset == 56 and message.DrvFsDefaultOwner == 1000


def test_optional_strings_absent_and_present() -> None:
    response = schema("LX_INIT_CONFIGURATION_INFORMATION_RESPONSE")
    data = response.build(Plan9Port=0xFFFFFFFF, InteropPort=0xFFFFFFFF, DefaultUid=1000, Version="12")
    message = response.parse(data)
    assert message.Flavor is None and message.FlavorIndex == 0
    assert message.Version == "12" and message.VersionIndex == 48
    assert len(data) == 48 + 3


def test_message_writer_pads_to_sizeof_and_starts_at_offsetof_buffer() -> None:
    """LX_MINI_INIT_IMPORT_RESULT: Buffer at 54 < sizeof 56; with no data the message is 56 bytes."""
    result = schema("LX_MINI_INIT_IMPORT_RESULT")
    assert result.build(Result=0).hex()[:8] == "22000000"
    data = result.build(Flavor="debian")
    assert struct.unpack_from("<I", data, 24)[0] == 54
    assert data[54:] == b"debian\0"
    empty = result.build()
    assert len(empty) == 56 and empty[16:] == bytes(40)


def test_blobs_and_their_sizes() -> None:
    config = schema("LX_MINI_INIT_CONFIG_MESSAGE")
    entropy = bytes(range(64))
    data = config.build(
        Entropy=entropy,
        EnableGuiApps=True,
        NetworkingConfiguration={"NetworkingMode": 3, "DhcpTimeout": 5000},
    )
    assert struct.unpack_from("<iI", data, 16) == (64, 48)
    assert data[48:] == entropy
    message = config.parse(data)
    assert message.Entropy == entropy and message.EntropySize == 64
    assert message.NetworkingConfiguration.NetworkingMode == 3
    assert message.NetworkingConfiguration.struct == "LX_MINI_INIT_NETWORKING_CONFIGURATION"
    icon = schema("LX_MINI_INIT_IMPORT_RESULT").parse(
        schema("LX_MINI_INIT_IMPORT_RESULT").build(ShortcutIcon=b"", DefaultName="x")
    )
    assert icon.ShortcutIcon == b"" and icon.ShortcutIconIndex == 56 and icon.TerminalProfile is None


def test_flags_and_enums_parse_to_members() -> None:
    launch = schema("LX_MINI_INIT_MESSAGE")
    flags = LX_MINI_INIT_MESSAGE_FLAGS.LxMiniInitMessageFlagExportCompressGzip
    data = launch.build(
        Header={"MessageType": LX_MESSAGE_TYPE.LxMiniInitMessageExport},
        Flags=flags,
        DistributionName="Debian",
    )
    message = launch.parse(data)
    assert message.Flags == flags and isinstance(message.Flags, LX_MINI_INIT_MESSAGE_FLAGS)
    assert message.Header.MessageType == LX_MESSAGE_TYPE.LxMiniInitMessageExport
    assert message.MountDeviceType == 0
    unknown = schema("LX_MINI_INIT_MOUNT_RESULT_MESSAGE").build(FailureStep=99)
    assert schema("LX_MINI_INIT_MOUNT_RESULT_MESSAGE").parse(unknown).FailureStep == 99


def test_mini_init_message_with_every_string_written() -> None:
    """Import: empty strings still cost one NUL each and get non-zero offsets."""
    data = schema("LX_MINI_INIT_MESSAGE").build(Header={"MessageType": 30}, DistributionName="Alpine")
    expected = header(30, 60 + 13) + struct.pack("<11I", 0, 0, 60, 61, 62, 63, 70, 71, 72, 0, 0)
    assert data == expected + b"\0\0\0Alpine\0\0\0\0"


def test_create_process_common_offsets_are_relative_to_common() -> None:
    """Default shell / OOBE: empty command line and NT environment keep a one-NUL placeholder."""
    flags = LX_INIT_CREATE_PROCESS_FLAGS.LxInitCreateProcessFlagsStdInConsole
    flags |= LX_INIT_CREATE_PROCESS_FLAGS.LxInitCreateProcessFlagAllowOOBE
    data = schema("LX_INIT_CREATE_PROCESS_UTILITY_VM").build(
        Rows=24,
        Columns=80,
        Common={"Environment": ["A=1"], "DefaultUid": 1000, "Flags": flags, "ShellOptions": 1},
    )
    common = struct.pack("<IIIHxxIHxxIHxxIIIIi", 52, 53, 54, 0, 55, 1, 59, 0, 60, 1, 61, 1000, 0x21)
    assert data == header(8, 82) + struct.pack("<HH", 24, 80) + common + b"\0\0\0A=1\0\0\0\0"
    message = schema("LX_INIT_CREATE_PROCESS_UTILITY_VM").parse(data)
    assert message.Common.struct == "LX_INIT_CREATE_PROCESS_COMMON"
    assert message.Common.CommandLine == [] and message.Common.NtEnvironment == []
    assert message.Common["Environment"] == ["A=1"] and message.Common.Flags == flags


def test_wsl1_create_process_has_common_at_56() -> None:
    data = schema("LX_INIT_CREATE_PROCESS").build(
        StdFdIds=[1, 2, 3], Common={"Filename": "/bin/sh", "CommandLine": ["sh"], "Environment": ["X=y"]}
    )
    assert struct.unpack_from("<I", data, 56)[0] == 52  # FilenameOffset relative to Common
    assert data[108:116] == b"/bin/sh\0"
    assert len(data) == 108 + 8 + 1 + 3 + 4 + 1 + 1 + 1
    message = schema("LX_INIT_CREATE_PROCESS").parse(data)
    assert message.StdFdIds == [1, 2, 3] and message.Common.CommandLine == ["sh"]


def test_nt_create_process_environment_block_and_empty_command_line() -> None:
    """Environment before the command line; no placeholder: the offset then points at the end."""
    nt = schema("LX_INIT_CREATE_NT_PROCESS_UTILITY_VM")
    data = nt.build(Port=5, Common={"Filename": "C:\\a.exe", "Environment": ["WSLENV="], "Rows": 1})
    strings = b"C:\\a.exe\0" + b"\0" + b"WSLENV=\0" + b"\0\0"
    assert data[73:] == strings
    assert len(data) == 73 + len(strings)
    assert struct.unpack_from("<IIIHxxI", data, 24 + 24) == (49, 58, len(data) - 24, 0, 59)
    message = nt.parse(data)
    assert message.Common.Environment == ["WSLENV="] and message.Common.CommandLine == []


def test_double_nul_argument_list() -> None:
    process = schema("CREATE_PROCESS_MESSAGE")
    data = process.build(Path="/bin/true", CommandLine=["true", "-x"])
    assert data[24:] == b"/bin/true\0true\0-x\0\0"
    assert process.parse(data).CommandLine == ["true", "-x"]
    assert process.parse(process.build(Path="/x")).CommandLine == []


def test_buffer_strings() -> None:
    query = schema("LX_INIT_QUERY_VM_ID")
    assert query.build() == header(26, 16)
    assert query.parse(header(26, 16)).Buffer is None
    assert query.parse(query.build(Buffer="vm")).Buffer == "vm"
    crash = schema("LX_PROCESS_CRASH").build(Signal=11, Pid=7, Buffer="!usr!bin!x")
    assert crash[32:] == b"!usr!bin!x\0"


def test_result_messages() -> None:
    for name, value, packed in [
        ("RESULT_MESSAGE<bool>", True, b"\x01\0\0\0"),
        ("RESULT_MESSAGE<int32_t>", -1, b"\xff\xff\xff\xff"),
        ("RESULT_MESSAGE<uint32_t>", 0xFFFFFFFF, b"\xff\xff\xff\xff"),
        ("RESULT_MESSAGE<uint8_t>", 3, b"\x03\0\0\0"),
    ]:
        data = schema(name).build(Result=value)
        assert data[16:] == packed
        assert schema(name).parse(data).Result == value
    assert messages.RESULT_MESSAGE_uint32_t is schema("RESULT_MESSAGE<uint32_t>")


def test_extensions_round_trip() -> None:
    entries = extensions.instance_entries({"Debian": 12, "Ubuntu:24": 40})
    data = schema("PYWSL_INSTANCE_LIST").build(Entries=entries)
    assert data == header(201, 24 + 23) + struct.pack("<II", 2, 24) + b"12:Debian\x0040:Ubuntu:24\0"
    message = schema("PYWSL_INSTANCE_LIST").parse(data)
    assert extensions.parse_instance_entries(message.Entries) == {"Debian": 12, "Ubuntu:24": 40}
    empty = schema("PYWSL_INSTANCE_LIST").parse(schema("PYWSL_INSTANCE_LIST").build())
    assert empty.Entries == [] and empty.Count == 0
    assert schema("PYWSL_SHUTDOWN_VM").build(Force=True) == header(203, 20) + b"\x01\0\0\0"
    assert schema("PYWSL_SIGNAL_PROCESS").parse(schema("PYWSL_SIGNAL_PROCESS").build(Signal=15)).Signal == 15
    assert schema("PYWSL_QUERY_INSTANCES").parse(header(200, 16)).Header.MessageType == 200
    with pytest.raises(ProtocolError, match="pid"):
        extensions.parse_instance_entries(["Debian"])


def test_computed_fields_may_be_given_when_they_agree() -> None:
    entries = ["1:a", "2:b"]
    data = schema("PYWSL_INSTANCE_LIST").build(Count=2, Entries=entries, EntriesOffset=24)
    assert data == schema("PYWSL_INSTANCE_LIST").build(Entries=entries)
    info = schema("LX_INIT_CONFIGURATION_INFORMATION")
    original = info.build(Hostname="h", Timezone="UTC", Header={"TransactionId": 4})
    assert info.build(**info.parse(original)) == original  # a parsed message builds back


def test_build_rejects_bad_values() -> None:
    info = schema("LX_INIT_CONFIGURATION_INFORMATION")
    with pytest.raises(ProtocolError, match="computes 56") as error:
        info.build(HostnameOffset=57)
    assert error.value.field == "HostnameOffset"
    with pytest.raises(ProtocolError, match="computes") as error:
        info.build(Header={"MessageSize": 10})
    assert error.value.field == "Header.MessageSize"
    with pytest.raises(ProtocolError) as error:
        schema("LX_INIT_CREATE_PROCESS_UTILITY_VM").build(
            Common={"CommandLine": ["a"], "CommandLineCount": 2}
        )
    assert error.value.field == "Common.CommandLineCount"
    with pytest.raises(TypeError, match="no field"):
        info.build(Hostnam="x")
    with pytest.raises(ProtocolError, match="NUL") as error:
        info.build(Hostname="a\0b")
    assert (error.value.struct, error.value.field) == ("LX_INIT_CONFIGURATION_INFORMATION", "Hostname")
    with pytest.raises(ProtocolError, match="str"):
        info.build(Hostname=b"x")
    with pytest.raises(ProtocolError) as error:
        info.build(DrvFsDefaultOwner=-1)
    assert error.value.field == "DrvFsDefaultOwner"
    with pytest.raises(ProtocolError, match="expected"):
        info.build(Header={"MessageType": 6})
    with pytest.raises(ProtocolError, match="list"):
        schema("CREATE_PROCESS_MESSAGE").build(CommandLine="ls")
    with pytest.raises(ProtocolError, match="empty entry"):
        schema("CREATE_PROCESS_MESSAGE").build(CommandLine=["ls", ""])
    with pytest.raises(ProtocolError) as error:
        schema("LX_INIT_CREATE_PROCESS_UTILITY_VM").build(Common={"CommandLine": ["x"] * 65536})
    assert error.value.field == "Common.CommandLineCount"
    with pytest.raises(ProtocolError, match="larger"):
        schema("LX_MINI_INIT_CONFIG_MESSAGE").build(Entropy=bytes(16 * 1024 * 1024))
    with pytest.raises(KeyError):
        schema("NOT_A_MESSAGE")


# ---- bad input -----------------------------------------------------------------------------------


def _error(name: str, data: bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as error:
        schema(name).parse(data)
    assert error.value.struct == name
    return error.value


def test_parse_rejects_framing_errors() -> None:
    assert _error("LX_INIT_CREATE_SESSION", b"\x02\0\0").field == "Header"
    assert _error("LX_INIT_CREATE_SESSION", header(2, 25) + bytes(8)).field == "Header.MessageSize"
    assert _error("LX_INIT_CREATE_SESSION", header(2, 20) + bytes(4)).field == "Header.MessageSize"
    assert _error("LX_INIT_CREATE_SESSION", header(3, 24) + bytes(8)).field == "Header.MessageType"
    assert _error("LX_MINI_INIT_MESSAGE", header(33, 60) + bytes(44)).field == "Header.MessageType"


def test_parse_rejects_bad_variable_parts() -> None:
    good = schema("LX_MINI_INIT_MOUNT_FOLDER_MESSAGE").build(Path="/p", Name="n")

    def with_offset(field_offset: int, value: int, data: bytes = good) -> bytes:
        return data[:field_offset] + struct.pack("<I", value) + data[field_offset + 4 :]

    assert _error("LX_MINI_INIT_MOUNT_FOLDER_MESSAGE", with_offset(20, 1000)).field == "PathIndex"
    assert _error("LX_MINI_INIT_MOUNT_FOLDER_MESSAGE", with_offset(24, 0)).field == "NameIndex"
    no_nul = good[:-1] + b"x"
    assert _error("LX_MINI_INIT_MOUNT_FOLDER_MESSAGE", no_nul).field == "NameIndex"
    bad_utf8 = good[:28] + b"\xff\0" + good[30:]
    error = _error("LX_MINI_INIT_MOUNT_FOLDER_MESSAGE", bad_utf8)
    assert error.field == "PathIndex" and "UTF-8" in str(error)
    config = schema("LX_MINI_INIT_CONFIG_MESSAGE").build(Entropy=b"abcd")
    assert _error("LX_MINI_INIT_CONFIG_MESSAGE", config[:16] + struct.pack("<i", 5) + config[20:]).field == (
        "EntropyOffset"
    )
    assert _error("LX_MINI_INIT_CONFIG_MESSAGE", config[:16] + struct.pack("<i", -1) + config[20:]).field == (
        "EntropySize"
    )
    create = schema("LX_INIT_CREATE_PROCESS_UTILITY_VM").build(
        Common={"CommandLine": ["a"], "Environment": ["b"]}
    )
    huge_count = create[:32] + struct.pack("<H", 60000) + create[34:]
    field = _error("LX_INIT_CREATE_PROCESS_UTILITY_VM", huge_count).field
    assert field is not None and field.startswith("Common.CommandLineOffset[")
    argv = schema("CREATE_PROCESS_MESSAGE").build(Path="p", CommandLine=["a"])
    field = _error("CREATE_PROCESS_MESSAGE", argv[:-1] + b"b").field
    assert field is not None and field.startswith("CommandLineIndex[")


def test_padding_is_never_validated() -> None:
    data = bytearray(schema("LX_INIT_OOBE_RESULT").build(Result=1, DefaultUid=-1))
    data[20:24] = b"\xaa\xbb\xcc\xdd"
    assert schema("LX_INIT_OOBE_RESULT").parse(bytes(data)).DefaultUid == -1


def test_message_is_a_read_only_mapping() -> None:
    message = schema("LX_INIT_WINDOW_SIZE_CHANGED").parse(schema("LX_INIT_WINDOW_SIZE_CHANGED").build(Rows=2))
    assert message == {"Header": message.Header, "Rows": 2, "Columns": 0}
    assert "Rows" in message and len(message) == 3
    with pytest.raises(TypeError):
        message["Rows"] = 3
    assert "Rows=2" in repr(message)


def test_public_names() -> None:
    for name in pywsl.wire.__all__:
        assert hasattr(pywsl.wire, name)


def test_importing_the_package_stays_light() -> None:
    """`import pywsl.wire` loads the declarations but not the channel, the vectors or any JSON."""
    root = Path(__file__).resolve().parent.parent
    probe = (
        "import sys, pywsl.wire\n"
        "print(sorted(m for m in ('pywsl.wire.channel', 'pywsl.wire.vectors', 'json', 'pywsl.api')"
        " if m in sys.modules))"
    )
    # Unmeasured: coverage.py, when it measures the suite, loads json itself.
    env = {name: value for name, value in os.environ.items() if not name.startswith("COVERAGE_")}
    env["PYTHONPATH"] = str(root)
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=root, env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
