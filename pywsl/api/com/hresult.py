"""A failed `ILxssUserSession` call as a `WslError`, and what the service put in `LXSS_ERROR_INFO`.

The service fills `LXSS_ERROR_INFO` on every call: `Context`, a bitmask of the operations that
were in progress (WSL's `ExecutionContext` `Context` enum), `Message` (the user-facing text, with
contextualized errors enabled) and `Warnings`; both strings are `CoTaskMemAlloc`'d for the client
to free. wsl.exe prints the message and `Error code: <contexts joined by '/'>/<HRESULT name>`.
"""

from __future__ import annotations

from collections.abc import Callable

from pywsl.api.com.layout import (
    CONTEXT_FLAG_CONTEXTUALIZED_ERRORS,
    CONTEXT_FLAG_USER_WARNINGS,
    LXSS_ERROR_INFO,
    read_wide,
)
from pywsl.api.errors import WslError, code_for_hresult
from pywsl.api.session import user_warnings

__all__ = ["CONTEXT_NAMES", "context_text", "new_error_info", "take_error_info", "to_wsl_error"]

# ExecutionContext.h `enum Context : ULONGLONG`, bit by bit.
CONTEXT_NAMES: tuple[tuple[int, str], ...] = (
    (0x1, "Wsl"),
    (0x2, "Wslg"),
    (0x4, "Bash"),
    (0x8, "WslConfig"),
    (0x10, "InstallDistro"),
    (0x20, "EnumerateDistros"),
    (0x40, "Service"),
    (0x80, "RegisterDistro"),
    (0x100, "CreateInstance"),
    (0x200, "AttachDisk"),
    (0x400, "DetachDisk"),
    (0x800, "CreateVm"),
    (0x1000, "ParseConfig"),
    (0x2000, "ConfigureNetworking"),
    (0x4000, "ConfigureGpu"),
    (0x8000, "LaunchProcess"),
    (0x10000, "ConfigureDistro"),
    (0x20000, "CreateLxProcess"),
    (0x40000, "UnregisterDistro"),
    (0x80000, "ExportDistro"),
    (0x100000, "GetDistroConfiguration"),
    (0x200000, "GetDistroId"),
    (0x400000, "SetDefaultDistro"),
    (0x800000, "SetVersion"),
    (0x1000000, "TerminateDistro"),
    (0x2000000, "RegisterLxBus"),
    (0x4000000, "MountDisk"),
    (0x8000000, "Plugin"),
    (0x10000000, "MoveDistro"),
    (0x20000000, "GetDefaultDistro"),
    (0x40000000, "DebugShell"),
    (0x80000000, "HCS"),
    (0x100000000, "HNS"),
    (0x200000000, "CallMsi"),
    (0x4000000000, "Install"),
    (0x8000000000, "ReadDistroConfig"),
    (0x10000000000, "UpdatePackage"),
    (0x20000000000, "QueryLatestGitHubRelease"),
    (0x40000000000, "VerifyChecksum"),
    (0x80000000000, "WslC"),
)
_CLIENT_CONTEXT = 0x1  # the client's own part of the path ("Wsl"), as wsl.exe's root context


def context_text(mask: int) -> str:
    """`Wsl/Service/CreateInstance/...`: the names of the bits set, lowest first."""
    return "/".join(name for bit, name in CONTEXT_NAMES if mask & bit)


def new_error_info() -> LXSS_ERROR_INFO:
    """What wsl.exe's `ClientExecutionContext` passes: contextualized errors and user warnings on."""
    info = LXSS_ERROR_INFO()
    info.Flags = CONTEXT_FLAG_CONTEXTUALIZED_ERRORS | CONTEXT_FLAG_USER_WARNINGS
    return info


def take_error_info(info: LXSS_ERROR_INFO, free: Callable[[int], None]) -> tuple[str, str, int]:
    """Read and free the strings the service returned: (message, warnings, context mask)."""
    message = warnings = ""
    try:
        message = read_wide(info.Message)
        warnings = read_wide(info.Warnings)
    finally:
        for address in (info.Message, info.Warnings):
            if address:
                free(address)
        info.Message = info.Warnings = None
    return message, warnings, int(info.Context)


def to_wsl_error(hresult: int, message: str, context_mask: int) -> WslError:
    """The `WslError` of a failed call: WSL's name for the HRESULT (or `0x........`), the
    service's message (or the HRESULT's usual text), the context path."""
    value = hresult & 0xFFFFFFFF
    known = code_for_hresult(value)
    code = known.name if known else f"0x{value:08x}"
    context = context_text(context_mask | _CLIENT_CONTEXT) if context_mask else "Wsl/Service"
    return WslError(code, message or None, context=context, hresult=value)


def emit_warnings(warnings: str) -> None:
    """Hand the service's warnings to the caller's sink (`wsl: <warning>` on the command line)."""
    if warnings:
        user_warnings.emit(warnings)
