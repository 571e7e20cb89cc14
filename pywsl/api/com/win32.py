"""Windows only: COM start-up as wsl.exe does it, the installed service's version, `WindowsHost`.

From `ctypes-windows-sdk` (`cwinsdk`): `CoInitializeEx`, `CoCreateInstance`, `CoTaskMemFree`,
`GetFileType`, `GetConsoleMode`, `GetConsoleScreenBufferInfo` (with its structure), `GetStdHandle`
and `CloseHandle`. It lacks the rest, declared here: `CoInitializeSecurity`,
`CoQueryProxyBlanket`/`CoSetProxyBlanket` (ole32), `GetFileVersionInfoSizeW`/
`GetFileVersionInfoW`/`VerQueryValueW` (version.dll) and, for the console's raw mode,
`Get`/`SetConsoleMode`, `Get`/`SetConsoleCP` and `Get`/`SetConsoleOutputCP` (kernel32).
cwinsdk's `GUID` is declared with `c_ulong`, right on Windows only; pywsl's own `layout.GUID`
(same bytes) is converted at the call.

Nothing here runs on import: every function loads the Windows libraries when called, so the
module imports (and type-checks) on every OS.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import socket
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from pywsl.api.com import layout as L
from pywsl.api.com.hresult import to_wsl_error
from pywsl.api.com.version import check_version
from pywsl.api.com.vtable import ComInterface
from pywsl.api.errors import WslError

__all__ = [
    "WindowsHost",
    "default_version",
    "installed_version",
    "machine_settings",
    "open_session_interface",
    "raw_input_mode",
    "raw_output_mode",
    "registry_details",
    "set_default_version",
    "wsl1_component_present",
]

COINIT_MULTITHREADED = 0x0
CLSCTX_LOCAL_SERVER = 0x4
RPC_C_AUTHN_LEVEL_DEFAULT = 0
RPC_C_IMP_LEVEL_IMPERSONATE = 3
EOAC_STATIC_CLOAKING = 0x20
EOAC_DYNAMIC_CLOAKING = 0x40
RPC_E_TOO_LATE = 0x80010119
RPC_E_CHANGED_MODE = 0x80010106
REGDB_E_CLASSNOTREG = 0x80040154
SERVICE_DOES_NOT_EXIST = 0x80070424  # HRESULT_FROM_WIN32(ERROR_SERVICE_DOES_NOT_EXIST)
FILE_TYPE_CHAR = 2
# Console modes (wincon.h) and the UTF-8 code page, for wsl.exe's console state while a process runs.
ENABLE_PROCESSED_INPUT = 0x1
ENABLE_LINE_INPUT = 0x2
ENABLE_ECHO_INPUT = 0x4
ENABLE_INSERT_MODE = 0x20
ENABLE_VIRTUAL_TERMINAL_INPUT = 0x200
ENABLE_PROCESSED_OUTPUT = 0x1
ENABLE_VIRTUAL_TERMINAL_PROCESSING = 0x4
DISABLE_NEWLINE_AUTO_RETURN = 0x8
CP_UTF8 = 65001
FILE_TYPE_PIPE = 3
CREATE_RETRY_SECONDS = 60.0
CREATE_RETRY_INTERVAL = 1.0
SERVICE_KEY = r"SYSTEM\CurrentControlSet\Services\WslService"
LXSS_KEY = r"Software\Microsoft\Windows\CurrentVersion\Lxss"
WSL1_SERVICE_KEY = r"SYSTEM\CurrentControlSet\Services\lxss"


def _require_windows() -> None:
    if sys.platform != "win32":
        raise WslError("ERROR_NOT_SUPPORTED", "The COM client needs Windows.")


def _sdk(module: str) -> Any:
    return importlib.import_module(f"cwinsdk.{module}")


def _dll(name: str) -> Any:
    return getattr(ctypes, "WinDLL")(name, use_last_error=True)  # noqa: B009 - absent off Windows


def _check(hresult: int, what: str) -> None:
    if hresult < 0:
        error = to_wsl_error(hresult, "", 0)
        error.message = f"{what} failed: {error.message}"
        raise error


def _initialize_com() -> None:
    """`CoInitializeEx` (multithreaded) then `CoInitializeSecurity` as wsl.exe: impersonation,
    static cloaking. Both tolerate a process that already did it."""
    combase = _sdk("um.combaseapi")
    result = int(combase.CoInitializeEx(None, COINIT_MULTITHREADED)) & 0xFFFFFFFF
    if result != RPC_E_CHANGED_MODE:
        _check(ctypes.c_int32(result).value, "CoInitializeEx")
    ole32 = _dll("ole32")
    initialize = ole32.CoInitializeSecurity
    initialize.restype = ctypes.c_int32
    initialize.argtypes = [
        ctypes.c_void_p,
        ctypes.c_int32,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_uint32,
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_void_p,
    ]
    result = initialize(
        None,
        -1,
        None,
        None,
        RPC_C_AUTHN_LEVEL_DEFAULT,
        RPC_C_IMP_LEVEL_IMPERSONATE,
        None,
        EOAC_STATIC_CLOAKING,
        None,
    )
    if result & 0xFFFFFFFF != RPC_E_TOO_LATE:
        _check(result, "CoInitializeSecurity")


def _create_instance() -> int:
    """`CoCreateInstance(CLSID_LxssUserSession, CLSCTX_LOCAL_SERVER)`, retried while the service
    is being installed or started (as wsl.exe: every second for up to a minute)."""
    combase = _sdk("um.combaseapi")
    guid_type = _sdk("shared.guiddef").GUID
    clsid = guid_type.from_buffer_copy(L.CLSID_LXSS_USER_SESSION.bytes_le)
    iid = guid_type.from_buffer_copy(L.IID_ILXSS_USER_SESSION.bytes_le)
    deadline = time.monotonic() + CREATE_RETRY_SECONDS
    while True:
        pointer = ctypes.c_void_p()
        result = int(
            combase.CoCreateInstance(
                ctypes.byref(clsid), None, CLSCTX_LOCAL_SERVER, ctypes.byref(iid), ctypes.byref(pointer)
            )
        )
        if result >= 0 and pointer.value:
            return pointer.value
        retry = result & 0xFFFFFFFF in (REGDB_E_CLASSNOTREG, SERVICE_DOES_NOT_EXIST)
        if not retry or time.monotonic() >= deadline:
            _check(result, "CoCreateInstance(LxssUserSession)")
        time.sleep(CREATE_RETRY_INTERVAL)


def _set_proxy_blanket(pointer: int) -> None:
    """wsl.exe's `SetBlanket`: keep the authentication settings, impersonate, dynamic cloaking."""
    ole32 = _dll("ole32")
    query, update = ole32.CoQueryProxyBlanket, ole32.CoSetProxyBlanket
    query.restype = update.restype = ctypes.c_int32
    authn, authz, level, capabilities = (ctypes.c_uint32() for _ in range(4))
    query.argtypes = [
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
    ]
    _check(
        query(
            pointer,
            ctypes.byref(authn),
            ctypes.byref(authz),
            None,
            ctypes.byref(level),
            None,
            None,
            ctypes.byref(capabilities),
        ),
        "CoQueryProxyBlanket",
    )
    update.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_uint32,
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_uint32,
        ctypes.c_void_p,
        ctypes.c_uint32,
    ]
    flags = (capabilities.value & ~EOAC_STATIC_CLOAKING) | EOAC_DYNAMIC_CLOAKING
    _check(
        update(
            pointer, authn.value, authz.value, None, level.value, RPC_C_IMP_LEVEL_IMPERSONATE, None, flags
        ),
        "CoSetProxyBlanket",
    )


def service_binary() -> str:
    """`wslservice.exe`'s path from the service's registration."""
    winreg: Any = importlib.import_module("winreg")
    try:
        with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, SERVICE_KEY) as key:
            image, _ = winreg.QueryValueEx(key, "ImagePath")
    except OSError:
        raise WslError(
            "WSL_E_WSL_OPTIONAL_COMPONENT_REQUIRED",
            "WSL is not installed: the WslService service is not registered.",
            context="Wsl",
        ) from None
    image = os.path.expandvars(str(image)).strip()
    if image.startswith('"'):
        return image[1:].split('"', 1)[0]
    return image.split(" ", 1)[0] if not os.path.exists(image) else image


def installed_version(path: str | None = None) -> str:
    """The file version of the service binary (`GetFileVersionInfoW` + `VerQueryValueW("\\")`)."""
    _require_windows()
    path = path or service_binary()
    version = _dll("version")
    size = version.GetFileVersionInfoSizeW(ctypes.c_wchar_p(path), None)
    if not size:
        raise WslError("ERROR_FILE_NOT_FOUND", f"{path}: no version information.", context="Wsl")
    data = ctypes.create_string_buffer(size)
    if not version.GetFileVersionInfoW(ctypes.c_wchar_p(path), 0, size, data):
        raise WslError(
            "ERROR_FILE_NOT_FOUND", f"{path}: the version information cannot be read.", context="Wsl"
        )
    fixed, length = ctypes.c_void_p(), ctypes.c_uint32()
    if (
        not version.VerQueryValueW(data, ctypes.c_wchar_p("\\"), ctypes.byref(fixed), ctypes.byref(length))
        or length.value < 16
        or not fixed.value
    ):
        raise WslError("ERROR_VERSION_PARSE_ERROR", f"{path}: no fixed file version.", context="Wsl")
    # VS_FIXEDFILEINFO: dwSignature, dwStrucVersion, dwFileVersionMS, dwFileVersionLS, ...
    words = (ctypes.c_uint32 * 4).from_address(fixed.value)
    high, low = words[2], words[3]
    return f"{high >> 16}.{high & 0xFFFF}.{low >> 16}.{low & 0xFFFF}"


def open_session_interface(environ: Mapping[str, str] | None = None) -> ComInterface:
    """The calling user's `ILxssUserSession`, after the version check."""
    _require_windows()
    check_version(installed_version(), environ)
    _initialize_com()
    pointer = _create_instance()
    interface = ComInterface(pointer, WindowsHost().free)
    try:
        _set_proxy_blanket(pointer)
    except BaseException:
        interface.release()
        raise
    return interface


def registry_details(distro_id: uuid.UUID) -> dict[str, Any]:
    """The user's registration values WSL keeps beside the enumeration (BasePath, Flavor,
    OsVersion, DefaultUid, RunOOBE), read from the caller's own hive; {} when absent."""
    winreg: Any = importlib.import_module("winreg")
    values: dict[str, Any] = {}
    try:
        with winreg.OpenKey(winreg.HKEY_CURRENT_USER, rf"{LXSS_KEY}\{{{distro_id}}}") as key:
            for name in ("BasePath", "Flavor", "OsVersion", "DefaultUid", "RunOOBE"):
                try:
                    values[name] = winreg.QueryValueEx(key, name)[0]
                except OSError:
                    continue
    except OSError:
        return {}
    return values


def machine_settings() -> dict[str, Any]:
    """WSL's machine-wide install settings (`DistributionListUrl`, `DistributionListUrlAppend`
    under HKLM's `Lxss` key), as its `--install` reads them; {} when absent."""
    winreg: Any = importlib.import_module("winreg")
    values: dict[str, Any] = {}
    try:
        with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, LXSS_KEY) as key:
            for name in ("DistributionListUrl", "DistributionListUrlAppend"):
                try:
                    values[name] = winreg.QueryValueEx(key, name)[0]
                except OSError:
                    continue
    except OSError:
        return {}
    return values


def default_version() -> int:
    """The WSL version of new distributions (`DefaultVersion` in the user's `Lxss` key; 2 when
    absent, as in WSL)."""
    winreg: Any = importlib.import_module("winreg")
    try:
        with winreg.OpenKey(winreg.HKEY_CURRENT_USER, LXSS_KEY) as key:
            value = winreg.QueryValueEx(key, "DefaultVersion")[0]
    except OSError:
        return 2
    return value if value in (1, 2) else 2


def set_default_version(version: int) -> None:
    """`--set-default-version`: wsl.exe writes `DefaultVersion` itself, in the user's `Lxss` key."""
    winreg: Any = importlib.import_module("winreg")
    with winreg.CreateKeyEx(winreg.HKEY_CURRENT_USER, LXSS_KEY, 0, winreg.KEY_SET_VALUE) as key:
        winreg.SetValueEx(key, "DefaultVersion", 0, winreg.REG_DWORD, version)


def wsl1_component_present() -> bool:
    """Whether WSL 1 can run: the `lxss` driver's service is installed (wsl.exe's
    `IsWslOptionalComponentPresent`)."""
    winreg: Any = importlib.import_module("winreg")
    try:
        with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, WSL1_SERVICE_KEY):
            return True
    except OSError:
        return False


def raw_input_mode(mode: int) -> int:
    """The console input mode while a Linux process reads the console, as wsl.exe sets it: keys as
    virtual-terminal sequences, no line editing, echo or Ctrl-C processing (the PTY does those)."""
    cleared = ENABLE_ECHO_INPUT | ENABLE_INSERT_MODE | ENABLE_LINE_INPUT | ENABLE_PROCESSED_INPUT
    return (mode | ENABLE_VIRTUAL_TERMINAL_INPUT) & ~cleared


def raw_output_mode(mode: int) -> int:
    """The console output mode while a Linux process writes to it: virtual-terminal sequences
    interpreted, and a line feed that does not also return the carriage (the PTY sends both)."""
    return mode | ENABLE_PROCESSED_OUTPUT | ENABLE_VIRTUAL_TERMINAL_PROCESSING | DISABLE_NEWLINE_AUTO_RETURN


def _console_functions() -> Any:
    kernel32 = _dll("kernel32")
    kernel32.GetConsoleMode.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32)]
    kernel32.SetConsoleMode.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    kernel32.SetConsoleCP.argtypes = kernel32.SetConsoleOutputCP.argtypes = [ctypes.c_uint32]
    for function in (
        kernel32.GetConsoleMode,
        kernel32.SetConsoleMode,
        kernel32.SetConsoleCP,
        kernel32.SetConsoleOutputCP,
    ):
        function.restype = ctypes.c_int32
    kernel32.GetConsoleCP.restype = kernel32.GetConsoleOutputCP.restype = ctypes.c_uint32
    return kernel32


class WindowsHost:
    """`ComHost` on Windows."""

    def enter_raw_console(self) -> Callable[[], None]:
        """wsl.exe's console state: stdin's and stdout's consoles in the modes above, UTF-8 code
        pages; returns what puts the saved modes and code pages back. A console that refuses a
        mode (an old console host refuses DISABLE_NEWLINE_AUTO_RETURN) keeps what it accepts."""
        kernel32 = _console_functions()
        saved: list[tuple[int, int]] = []
        for fd, change in ((0, raw_input_mode), (1, raw_output_mode)):
            handle, mode = self.handle_of(fd), ctypes.c_uint32()
            if not handle or not kernel32.GetConsoleMode(handle, ctypes.byref(mode)):
                continue
            wanted = change(mode.value)
            if kernel32.SetConsoleMode(handle, wanted) or kernel32.SetConsoleMode(
                handle, wanted & ~DISABLE_NEWLINE_AUTO_RETURN
            ):
                saved.append((handle, mode.value))
        pages = [int(kernel32.GetConsoleCP()), int(kernel32.GetConsoleOutputCP())]
        kernel32.SetConsoleCP(CP_UTF8)
        kernel32.SetConsoleOutputCP(CP_UTF8)

        def restore() -> None:  # a second call finds nothing left to restore
            while saved:
                handle, mode = saved.pop()
                kernel32.SetConsoleMode(handle, mode)
            input_page, output_page = pages
            pages[:] = [0, 0]
            if input_page:
                kernel32.SetConsoleCP(input_page)
            if output_page:
                kernel32.SetConsoleOutputCP(output_page)

        return restore

    def free(self, address: int) -> None:
        _sdk("um.combaseapi").CoTaskMemFree(address)

    def handle_of(self, fd: int) -> int:
        msvcrt: Any = importlib.import_module("msvcrt")
        try:
            return int(msvcrt.get_osfhandle(fd))
        except OSError:
            return 0

    def is_pipe(self, handle: int) -> bool:
        return bool(handle) and int(_sdk("um.fileapi").GetFileType(handle)) == FILE_TYPE_PIPE

    def is_console(self, handle: int) -> bool:
        if not handle or int(_sdk("um.fileapi").GetFileType(handle)) != FILE_TYPE_CHAR:
            return False
        mode = ctypes.c_uint32()
        return bool(_dll("kernel32").GetConsoleMode(ctypes.c_void_p(handle), ctypes.byref(mode)))

    def console_size(self) -> tuple[int, int] | None:
        console = _sdk("um.consoleapi2")
        info = console.CONSOLE_SCREEN_BUFFER_INFO()
        for fd in (1, 2, 0):
            handle = self.handle_of(fd)
            if handle and console.GetConsoleScreenBufferInfo(handle, ctypes.byref(info)):
                window = info.srWindow
                return window.Right - window.Left + 1, window.Bottom - window.Top + 1
        return None

    def console_handle(self) -> int:
        # wsl.exe reads the console reference from the PEB to key its session leader per console;
        # 0 ("no console") gives each launch the shared session leader of console id 0.
        return 0

    def socket_from_handle(self, handle: int) -> socket.socket:
        return socket.socket(fileno=handle)

    def close_handle(self, handle: int) -> None:
        _sdk("um.handleapi").CloseHandle(handle)

    def current_directory(self) -> str:
        return os.getcwd()

    def environment_block(self) -> str:
        return "".join(f"{key}={value}\0" for key, value in os.environ.items()) + "\0"

    def nt_path(self) -> str:
        return os.environ.get("PATH", "")
