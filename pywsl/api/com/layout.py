"""The structures and constants of `wslservice.idl`, laid out as on Windows x64.

Only fixed-width ctypes types are used: Linux's `c_long` and `c_wchar` are 8 and 4 bytes where
Windows' `LONG` and `WCHAR` are 4 and 2, so the layouts are the same on every host (pointers are
8 bytes on both 64-bit ABIs, and natural alignment is what MSVC uses without `#pragma pack`).
Wide strings are UTF-16 in `c_uint16` arrays or behind `c_void_p`, never `c_wchar`.
"""

from __future__ import annotations

import ctypes
import uuid

__all__ = [
    "CLSID_LXSS_USER_SESSION",
    "GUID",
    "IID_ILXSS_USER_SESSION",
    "LXSS_ENUMERATE_INFO",
    "LXSS_ERROR_INFO",
    "LXSS_HANDLE",
    "LXSS_STD_HANDLES",
    "guid_from_uuid",
    "uuid_from_guid",
]

# `uuid(...)` of `ILxssUserSession` and `CLSID_LxssUserSession` in wslservice.idl.
IID_ILXSS_USER_SESSION = uuid.UUID("38541BDC-F54F-4CEB-85D0-37F0F3D2617E")
CLSID_LXSS_USER_SESSION = uuid.UUID("a9b7a1b9-0671-405c-95f1-e0612cb4ce7e")

# LxssHandleType
LXSS_HANDLE_CONSOLE = 0
LXSS_HANDLE_INPUT = 1
LXSS_HANDLE_OUTPUT = 2
LXSS_HANDLE_USE_CONSOLE = 0

# LxssExecutionContextFlags (LXSS_ERROR_INFO.Flags)
CONTEXT_FLAG_CONTEXTUALIZED_ERRORS = 0x1
CONTEXT_FLAG_USER_WARNINGS = 0x2

LXSS_ENUMERATE_FLAGS_DEFAULT = 0x1
LXSS_GET_DISTRO_ID_LIST_ALL = 0x1
LXSS_CREATE_INSTANCE_FLAGS_ALLOW_FS_UPGRADE = 0x1
LXSS_CREATE_INSTANCE_FLAGS_SHELL_LOGIN = 0x10
LXSS_EXPORT_DISTRO_FLAGS_VHD = 0x1
LXSS_EXPORT_DISTRO_FLAGS_GZIP = 0x2
LXSS_EXPORT_DISTRO_FLAGS_XZIP = 0x4
LXSS_IMPORT_DISTRO_FLAGS_VHD = 0x1
LXSS_IMPORT_DISTRO_FLAGS_NO_OOBE = 0x4
LXSS_IMPORT_DISTRO_FLAGS_FIXED_VHD = 0x8
LXSS_ATTACH_MOUNT_FLAGS_PASS_THROUGH = 0x1
LXSS_ATTACH_MOUNT_FLAGS_VHD = 0x2
LXSS_DISTRO_FLAGS_UNCHANGED = 0xFFFFFFFE
LXSS_DISTRO_NAME_LENGTH = 257  # WCHAR DistroName[257]


class GUID(ctypes.Structure):
    """`GUID`: Data1 (ULONG), Data2, Data3 (USHORT), Data4 (8 bytes); 16 bytes, little-endian fields."""

    _fields_ = [
        ("Data1", ctypes.c_uint32),
        ("Data2", ctypes.c_uint16),
        ("Data3", ctypes.c_uint16),
        ("Data4", ctypes.c_uint8 * 8),
    ]


class LXSS_HANDLE(ctypes.Structure):
    _fields_ = [("Handle", ctypes.c_uint32), ("HandleType", ctypes.c_uint32)]


class LXSS_STD_HANDLES(ctypes.Structure):
    _fields_ = [("StdIn", LXSS_HANDLE), ("StdOut", LXSS_HANDLE), ("StdErr", LXSS_HANDLE)]


class LXSS_ENUMERATE_INFO(ctypes.Structure):
    _fields_ = [
        ("DistroGuid", GUID),
        ("State", ctypes.c_uint32),  # LxssDistributionState (an enum: 4 bytes)
        ("Version", ctypes.c_uint32),
        ("Flags", ctypes.c_uint32),
        ("DistroName", ctypes.c_uint16 * LXSS_DISTRO_NAME_LENGTH),
    ]

    @property
    def name(self) -> str:
        units = bytes(self.DistroName)
        text = units.decode("utf-16-le", errors="replace")
        return text.split("\0", 1)[0]


class LXSS_ERROR_INFO(ctypes.Structure):
    _fields_ = [
        ("Flags", ctypes.c_uint32),
        ("Context", ctypes.c_uint64),
        ("Message", ctypes.c_void_p),  # [string] LPWSTR, CoTaskMemAlloc'd by the service
        ("Warnings", ctypes.c_void_p),  # [string] LPWSTR
        ("WarningsPipe", ctypes.c_uint32),
    ]


def guid_from_uuid(value: uuid.UUID) -> GUID:
    return GUID.from_buffer_copy(value.bytes_le)


def uuid_from_guid(value: GUID) -> uuid.UUID:
    return uuid.UUID(bytes_le=bytes(value))


def wide_buffer(text: str) -> ctypes.Array[ctypes.c_char]:
    """A NUL-terminated UTF-16 string (an `LPCWSTR` argument)."""
    if "\0" in text:
        raise ValueError("a string argument cannot contain NUL characters")
    return ctypes.create_string_buffer(text.encode("utf-16-le") + b"\0\0", len(text.encode("utf-16-le")) + 2)


def read_wide(address: int | None, limit: int = 1 << 20) -> str:
    """The NUL-terminated UTF-16 string at `address` ("" for NULL), at most `limit` code units."""
    if not address:
        return ""
    units = (ctypes.c_uint16 * 1).from_address
    length = 0
    while length < limit and units(address + 2 * length)[0] != 0:
        length += 1
    return ctypes.string_at(address, 2 * length).decode("utf-16-le", errors="replace")
