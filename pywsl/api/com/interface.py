"""`ILxssUserSession` declared once, as data: every method's vtable slot and argument types.

Slots 0-2 are `IUnknown` (QueryInterface, AddRef, Release); the session's methods follow in the
IDL's order from slot 3 (wsl-reference §2.3). Every method returns an `HRESULT` (a signed 32-bit
value, taken as `c_int32` so that the caller sees failures itself). The prototypes are
`WINFUNCTYPE` on Windows; elsewhere `CFUNCTYPE` stands in (the x64 calling convention has one
convention, so a vtable of callbacks built from the same declaration can be called the same way).

The IDL says the interface is internal: methods have been appended under the same IID, so a
session is opened only for service versions known to match (`pywsl.api.com.version`).
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pywsl.api.com.layout import GUID, LXSS_ENUMERATE_INFO, LXSS_ERROR_INFO, LXSS_STD_HANDLES

__all__ = ["FUNCTION_TYPE", "IUNKNOWN_METHODS", "METHODS", "Method", "Param", "method", "prototype"]

HRESULT = ctypes.c_int32
ULONG = ctypes.c_uint32
ULONG64 = ctypes.c_uint64
SHORT = ctypes.c_int16
BOOLEAN = ctypes.c_uint8
BOOL = ctypes.c_int32
INT = ctypes.c_int32
HANDLE = ctypes.c_void_p
LPCWSTR = ctypes.c_void_p  # UTF-16, see layout.wide_buffer
LPCSTR = ctypes.c_char_p
LPGUID = ctypes.POINTER(GUID)
PVOID_OUT = ctypes.POINTER(ctypes.c_void_p)  # [out] LPWSTR*, HANDLE*, LPSTR** (array pointers)
PULONG = ctypes.POINTER(ctypes.c_uint32)
PINT = ctypes.POINTER(ctypes.c_int32)
PERROR = ctypes.POINTER(LXSS_ERROR_INFO)
PSTD_HANDLES = ctypes.POINTER(LXSS_STD_HANDLES)
PPENUMERATE = ctypes.POINTER(ctypes.POINTER(LXSS_ENUMERATE_INFO))
PLPCSTR = ctypes.POINTER(ctypes.c_char_p)

# WINFUNCTYPE on Windows (absent elsewhere, hence getattr); CFUNCTYPE stands in off Windows.
_WINDOWS_PROTOTYPE = "WINFUNCTYPE"
FUNCTION_TYPE: Callable[..., Any] = (
    getattr(ctypes, _WINDOWS_PROTOTYPE) if sys.platform == "win32" else ctypes.CFUNCTYPE
)


@dataclass(frozen=True)
class Param:
    name: str
    ctype: Any
    direction: str = "in"  # "in", "out", "inout", "retval"


@dataclass(frozen=True)
class Method:
    name: str
    slot: int
    params: tuple[Param, ...]

    @property
    def has_error_info(self) -> bool:
        return any(param.name == "Error" for param in self.params)


def _p(name: str, ctype: Any, direction: str = "in") -> Param:
    return Param(name, ctype, direction)


_ERROR = _p("Error", PERROR, "inout")

IUNKNOWN_METHODS: tuple[Method, ...] = (
    Method("QueryInterface", 0, (_p("riid", LPGUID), _p("ppvObject", PVOID_OUT, "out"))),
    Method("AddRef", 1, ()),
    Method("Release", 2, ()),
)

_DECLARATIONS: tuple[tuple[str, tuple[Param, ...]], ...] = (
    ("CreateInstance", (_p("DistroGuid", LPGUID), _p("Flags", ULONG), _ERROR)),
    (
        "RegisterDistribution",
        (
            _p("DistributionName", LPCWSTR),
            _p("Version", ULONG),
            _p("FileHandle", HANDLE),
            _p("StderrHandle", HANDLE),
            _p("TargetDirectory", LPCWSTR),
            _p("Flags", ULONG),
            _p("VhdSize", ULONG64),
            _p("PackageFamilyName", LPCWSTR),
            _p("InstalledDistributionName", PVOID_OUT, "out"),
            _ERROR,
            _p("pDistroGuid", LPGUID, "retval"),
        ),
    ),
    (
        "RegisterDistributionPipe",
        (
            _p("DistributionName", LPCWSTR),
            _p("Version", ULONG),
            _p("PipeHandle", HANDLE),
            _p("StderrHandle", HANDLE),
            _p("TargetDirectory", LPCWSTR),
            _p("Flags", ULONG),
            _p("VhdSize", ULONG64),
            _p("PackageFamilyName", LPCWSTR),
            _p("InstalledDistributionName", PVOID_OUT, "out"),
            _ERROR,
            _p("pDistroGuid", LPGUID, "retval"),
        ),
    ),
    (
        "GetDistributionId",
        (_p("DistributionName", LPCWSTR), _p("Flags", ULONG), _ERROR, _p("pDistroGuid", LPGUID, "retval")),
    ),
    ("TerminateDistribution", (_p("DistroGuid", LPGUID), _ERROR)),
    ("UnregisterDistribution", (_p("DistroGuid", LPGUID), _ERROR)),
    (
        "ConfigureDistribution",
        (_p("DistroGuid", LPGUID), _p("DefaultUid", ULONG), _p("Flags", ULONG), _ERROR),
    ),
    (
        "GetDistributionConfiguration",
        (
            _p("DistroGuid", LPGUID),
            _p("DistributionName", PVOID_OUT, "out"),
            _p("Version", PULONG, "out"),
            _p("DefaultUid", PULONG, "out"),
            _p("DefaultEnvironmentCount", PULONG, "out"),
            _p("DefaultEnvironment", PVOID_OUT, "out"),
            _p("Flags", PULONG, "out"),
            _ERROR,
        ),
    ),
    ("GetDefaultDistribution", (_ERROR, _p("pResultState", LPGUID, "retval"))),
    (
        "ResizeDistribution",
        (_p("DistroGuid", LPGUID), _p("OutputHandle", HANDLE), _p("NewSize", ULONG64), _ERROR),
    ),
    ("SetDefaultDistribution", (_p("DistroGuid", LPGUID), _ERROR)),
    ("SetSparse", (_p("DistroGuid", LPGUID), _p("Sparse", BOOLEAN), _p("AllowUnsafe", BOOLEAN), _ERROR)),
    (
        "EnumerateDistributions",
        (_p("DistributionCount", PULONG, "out"), _p("Distributions", PPENUMERATE, "out"), _ERROR),
    ),
    (
        "CreateLxProcess",
        (
            _p("DistroGuid", LPGUID),
            _p("Filename", LPCSTR),
            _p("CommandLineCount", ULONG),
            _p("CommandLine", PLPCSTR),
            _p("CurrentWorkingDirectory", LPCWSTR),
            _p("NtPath", LPCWSTR),
            _p("NtEnvironment", LPCWSTR),
            _p("NtEnvironmentLength", ULONG),
            _p("Username", LPCWSTR),
            _p("Columns", SHORT),
            _p("Rows", SHORT),
            _p("ConsoleHandle", ULONG),
            _p("StdHandles", PSTD_HANDLES),
            _p("Flags", ULONG),
            _p("DistributionId", LPGUID, "out"),
            _p("InstanceId", LPGUID, "out"),
            _p("ProcessHandle", PVOID_OUT, "out"),
            _p("ServerHandle", PVOID_OUT, "out"),
            _p("StandardIn", PVOID_OUT, "out"),
            _p("StandardOut", PVOID_OUT, "out"),
            _p("StandardErr", PVOID_OUT, "out"),
            _p("CommunicationChannel", PVOID_OUT, "out"),
            _p("InteropSocket", PVOID_OUT, "out"),
            _ERROR,
        ),
    ),
    ("SetVersion", (_p("DistroGuid", LPGUID), _p("Version", ULONG), _p("StderrHandle", HANDLE), _ERROR)),
    (
        "ExportDistribution",
        (
            _p("DistroGuid", LPGUID),
            _p("FileHandle", HANDLE),
            _p("StderrHandle", HANDLE),
            _p("Flags", ULONG),
            _ERROR,
        ),
    ),
    (
        "ExportDistributionPipe",
        (
            _p("DistroGuid", LPGUID),
            _p("PipeHandle", HANDLE),
            _p("StderrHandle", HANDLE),
            _p("Flags", ULONG),
            _ERROR,
        ),
    ),
    ("AttachDisk", (_p("Disk", LPCWSTR), _p("Flags", ULONG), _ERROR)),
    ("DetachDisk", (_p("Disk", LPCWSTR), _p("Result", PINT, "out"), _p("Step", PINT, "out"), _ERROR)),
    (
        "MountDisk",
        (
            _p("Disk", LPCWSTR),
            _p("Flags", ULONG),
            _p("PartitionIndex", ULONG),
            _p("Name", LPCWSTR),
            _p("Type", LPCWSTR),
            _p("Options", LPCWSTR),
            _p("Result", PINT, "out"),
            _p("Step", PINT, "out"),
            _p("MountName", PVOID_OUT, "out"),
            _ERROR,
        ),
    ),
    ("Shutdown", (_p("Force", BOOL),)),
    (
        "ImportDistributionInplace",
        (
            _p("DistributionName", LPCWSTR),
            _p("VhdPath", LPCWSTR),
            _ERROR,
            _p("pDistroGuid", LPGUID, "retval"),
        ),
    ),
    ("MoveDistribution", (_p("DistroGuid", LPGUID), _p("DistributionName", LPCWSTR), _ERROR)),
)

METHODS: tuple[Method, ...] = tuple(
    Method(name, slot, params)
    for slot, (name, params) in enumerate(_DECLARATIONS, start=len(IUNKNOWN_METHODS))
)
_BY_NAME = {entry.name: entry for entry in (*IUNKNOWN_METHODS, *METHODS)}
VTABLE_SIZE = len(IUNKNOWN_METHODS) + len(METHODS)


def method(name: str) -> Method:
    return _BY_NAME[name]


def prototype(entry: Method) -> Any:
    """The function type of `entry`: HRESULT (or ULONG for AddRef/Release) of (this, *params)."""
    result = ULONG if entry.name in ("AddRef", "Release") else HRESULT
    return FUNCTION_TYPE(result, ctypes.c_void_p, *(param.ctype for param in entry.params))
