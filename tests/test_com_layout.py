"""The COM client's structures under Windows x64 rules and its declaration of ILxssUserSession."""

from __future__ import annotations

import ctypes
import re
from pathlib import Path

import pytest

from pywsl.api.com import interface, layout

SPEC = Path(__file__).resolve().parents[2] / "shared" / "spec" / "wsl-reference.md"

# (field, size, alignment) as MSVC sees the IDL types on x64: ULONG 4, ULONGLONG 8, pointers 8,
# enums 4, WCHAR 2, GUID 16 aligned on 4.
MSVC_FIELDS = {
    "LXSS_HANDLE": [("Handle", 4, 4), ("HandleType", 4, 4)],
    "LXSS_STD_HANDLES": [("StdIn", 8, 4), ("StdOut", 8, 4), ("StdErr", 8, 4)],
    "LXSS_ENUMERATE_INFO": [
        ("DistroGuid", 16, 4),
        ("State", 4, 4),
        ("Version", 4, 4),
        ("Flags", 4, 4),
        ("DistroName", 514, 2),
    ],
    "LXSS_ERROR_INFO": [
        ("Flags", 4, 4),
        ("Context", 8, 8),
        ("Message", 8, 8),
        ("Warnings", 8, 8),
        ("WarningsPipe", 4, 4),
    ],
    "GUID": [("Data1", 4, 4), ("Data2", 2, 2), ("Data3", 2, 2), ("Data4", 8, 1)],
}


FIXED_WIDTH = (
    ctypes.c_uint8,
    ctypes.c_int16,
    ctypes.c_int32,
    ctypes.c_uint32,
    ctypes.c_uint64,
    ctypes.c_void_p,
    ctypes.c_char_p,
)


def msvc_layout(fields: list[tuple[str, int, int]], pack: int = 8) -> tuple[dict[str, int], int]:
    """Offsets and size as MSVC lays out a struct (natural alignment capped by /Zp8)."""
    offset, biggest, offsets = 0, 1, {}
    for name, size, align in fields:
        align = min(align, pack)
        offset = (offset + align - 1) // align * align
        offsets[name] = offset
        offset += size
        biggest = max(biggest, align)
    return offsets, (offset + biggest - 1) // biggest * biggest


@pytest.mark.parametrize("name", sorted(MSVC_FIELDS))
def test_every_structure_has_the_windows_x64_layout(name: str) -> None:
    structure = getattr(layout, name)
    offsets, size = msvc_layout(MSVC_FIELDS[name])
    assert ctypes.sizeof(structure) == size
    assert {field: getattr(structure, field).offset for field in offsets} == offsets


def test_the_figures_of_the_issue() -> None:
    assert ctypes.sizeof(layout.LXSS_ENUMERATE_INFO) == 544
    assert layout.LXSS_ENUMERATE_INFO.DistroName.offset == 28
    assert ctypes.sizeof(layout.LXSS_ERROR_INFO) == 40
    assert [
        getattr(layout.LXSS_ERROR_INFO, f).offset for f in ("Context", "Message", "Warnings", "WarningsPipe")
    ] == [8, 16, 24, 32]
    assert ctypes.sizeof(layout.LXSS_HANDLE) == 8
    assert ctypes.sizeof(layout.LXSS_STD_HANDLES) == 24


def test_guids_round_trip_in_windows_byte_order() -> None:
    guid = layout.guid_from_uuid(layout.IID_ILXSS_USER_SESSION)
    assert (guid.Data1, guid.Data2, guid.Data3) == (0x38541BDC, 0xF54F, 0x4CEB)
    assert bytes(guid.Data4) == bytes.fromhex("85D037F0F3D2617E")
    assert layout.uuid_from_guid(guid) == layout.IID_ILXSS_USER_SESSION


def test_wide_strings_are_utf16_whatever_the_host_wchar() -> None:
    buffer = layout.wide_buffer("Débian ☃")
    assert bytes(buffer) == "Débian ☃".encode("utf-16-le") + b"\0\0"
    assert layout.read_wide(ctypes.addressof(buffer)) == "Débian ☃"
    with pytest.raises(ValueError, match="NUL"):
        layout.wide_buffer("a\0b")


def _spec_methods() -> list[str]:
    text = SPEC.read_text()
    section = text[text.index("### 2.3 Methods") : text.index("### 2.4")]
    return re.findall(r"^\d+\. `(\w+)\(", section, flags=re.M)


@pytest.mark.skipif(not SPEC.exists(), reason="the WSL reference is not beside the checkout")
def test_the_declared_methods_and_slots_are_those_of_the_reference() -> None:
    names = _spec_methods()
    assert len(names) == 23
    assert [(m.name, m.slot) for m in interface.METHODS] == [(name, 3 + i) for i, name in enumerate(names)]


def test_the_declaration_is_complete_and_typed() -> None:
    assert [(m.name, m.slot) for m in interface.IUNKNOWN_METHODS] == [
        ("QueryInterface", 0),
        ("AddRef", 1),
        ("Release", 2),
    ]
    assert interface.METHODS[0].name == "CreateInstance" and interface.METHODS[-1].slot == 25
    for entry in interface.METHODS:
        assert entry.has_error_info == (entry.name != "Shutdown")
        assert interface.prototype(entry)._restype_ is ctypes.c_int32
        for param in entry.params:
            # fixed-width integers only (Linux's c_long is 8 bytes, Windows' 4), no c_wchar (4 bytes here)
            assert param.ctype in FIXED_WIDTH or issubclass(param.ctype, ctypes._Pointer), param
    create = interface.method("CreateLxProcess")
    assert len(create.params) == 24 and [p.name for p in create.params][-6:-1] == [
        "StandardIn",
        "StandardOut",
        "StandardErr",
        "CommunicationChannel",
        "InteropSocket",
    ]
