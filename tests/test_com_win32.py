"""The COM client's Windows start-up and `WindowsHost` against fakes of the Windows parts only:
the DLLs (`ctypes.WinDLL`), `cwinsdk`'s modules, `winreg` and `msvcrt`. What pywsl computes from
their answers is real: output parameters through `byref`, the version read from a
`VS_FIXEDFILEINFO` in memory, HRESULTs mapped to `WslError`, the proxy blanket's flags, the
console modes and code pages put back, and the `ILxssUserSession` reached through its vtable."""

from __future__ import annotations

import ctypes
import os
import socket
import struct
import sys
import types
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from test_com_session import FakeSession

from pywsl.api.com import layout, win32
from pywsl.api.errors import WslError

HKLM = "HKEY_LOCAL_MACHINE"
HKCU = "HKEY_CURRENT_USER"
SERVICE_IMAGE = r'"C:\Program Files\WSL\wslservice.exe" -service'
DISTRO = uuid.UUID("11111111-2222-3333-4444-555555555555")
E_ACCESSDENIED = 0x80070005
E_OUTOFMEMORY = 0x8007000E
STATIC_CLOAKING, DYNAMIC_CLOAKING = win32.EOAC_STATIC_CLOAKING, win32.EOAC_DYNAMIC_CLOAKING


def signed(hresult: int) -> int:
    """An HRESULT as a Windows function returns it (a signed 32-bit value)."""
    return ctypes.c_int32(hresult).value


def target(reference: Any) -> Any:
    """The object an output parameter passed with `ctypes.byref` refers to."""
    return reference._obj


class FakeFunction:
    """A function of a fake DLL: records its calls and answers with `answer(*arguments)`."""

    def __init__(self, answer: Callable[..., Any]) -> None:
        self.answer = answer
        self.calls: list[tuple[Any, ...]] = []
        self.argtypes: list[Any] | None = None
        self.restype: Any = None

    def __call__(self, *arguments: Any) -> Any:
        self.calls.append(arguments)
        return self.answer(*arguments)


class FakeModule(types.ModuleType):
    """A fake DLL or SDK module whose functions are `FakeFunction`s."""

    def __init__(self, name: str, **functions: Callable[..., Any]) -> None:
        super().__init__(name)
        for function_name, answer in functions.items():
            setattr(self, function_name, FakeFunction(answer))


class FakeKey:
    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    def __enter__(self) -> FakeKey:
        return self

    def __exit__(self, *exception: object) -> None:
        return None


class FakeRegistry(types.ModuleType):
    """`winreg` over a dict of (hive, key path) -> values."""

    HKEY_LOCAL_MACHINE = HKLM
    HKEY_CURRENT_USER = HKCU
    KEY_SET_VALUE = 0x2
    REG_DWORD = 4

    def __init__(self) -> None:
        super().__init__("winreg")
        self.keys: dict[tuple[str, str], dict[str, Any]] = {}
        self.written: list[tuple[str, int, int, Any]] = []

    def OpenKey(self, hive: str, path: str) -> FakeKey:
        if (hive, path) not in self.keys:
            raise FileNotFoundError(2, "The system cannot find the file specified")
        return FakeKey(self.keys[hive, path])

    def CreateKeyEx(self, hive: str, path: str, reserved: int, access: int) -> FakeKey:
        assert reserved == 0 and access & self.KEY_SET_VALUE
        return FakeKey(self.keys.setdefault((hive, path), {}))

    def QueryValueEx(self, key: FakeKey, name: str) -> tuple[Any, int]:
        if name not in key.values:
            raise FileNotFoundError(2, "The system cannot find the file specified")
        return key.values[name], 1

    def SetValueEx(self, key: FakeKey, name: str, reserved: int, kind: int, value: Any) -> None:
        key.values[name] = value
        self.written.append((name, reserved, kind, value))


class Guid(ctypes.Structure):
    """cwinsdk's GUID: 16 bytes, as the COM functions take it."""

    _fields_ = [
        ("Data1", ctypes.c_uint32),
        ("Data2", ctypes.c_uint16),
        ("Data3", ctypes.c_uint16),
        ("Data4", ctypes.c_ubyte * 8),
    ]


class SmallRect(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int16) for name in ("Left", "Top", "Right", "Bottom")]


class ScreenBufferInfo(ctypes.Structure):
    """CONSOLE_SCREEN_BUFFER_INFO, as far as pywsl reads it."""

    _fields_ = [("dwSize", ctypes.c_uint32), ("dwCursorPosition", ctypes.c_uint32), ("srWindow", SmallRect)]


class FakeWindows:
    """Everything `win32` loads, installed for one test."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        self.registry = FakeRegistry()
        self.dlls: dict[str, FakeModule] = {}
        self.handles = {0: 100, 1: 101, 2: 102}  # msvcrt.get_osfhandle; other descriptors fail
        monkeypatch.setitem(sys.modules, "winreg", self.registry)
        monkeypatch.setitem(sys.modules, "msvcrt", FakeModule("msvcrt", get_osfhandle=self._osfhandle))
        monkeypatch.setitem(sys.modules, "cwinsdk.shared.guiddef", types.SimpleNamespace(GUID=Guid))
        monkeypatch.setattr(ctypes, "WinDLL", self._load, raising=False)

    def _osfhandle(self, fd: int) -> int:
        if fd not in self.handles:
            raise OSError(9, "Bad file descriptor")
        return self.handles[fd]

    def _load(self, name: str, use_last_error: bool = False) -> FakeModule:
        assert use_last_error
        return self.dlls[name]

    def dll(self, name: str, **functions: Callable[..., Any]) -> FakeModule:
        self.dlls[name] = FakeModule(name, **functions)
        return self.dlls[name]

    def sdk(self, name: str, **functions: Callable[..., Any]) -> FakeModule:
        module = FakeModule(f"cwinsdk.{name}", **functions)
        self.monkeypatch.setitem(sys.modules, f"cwinsdk.{name}", module)
        return module

    def on_windows(self) -> None:
        self.monkeypatch.setattr(sys, "platform", "win32")


@pytest.fixture
def windows(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeWindows]:
    yield FakeWindows(monkeypatch)


# -- the service's registration and version -----------------------------------------------------


def version_dll(windows: FakeWindows, file_version: tuple[int, int, int, int], **failures: int) -> FakeModule:
    """version.dll whose file holds `file_version` in a VS_FIXEDFILEINFO at offset 40."""
    major, minor, build, revision = file_version

    def read(path: ctypes.c_wchar_p, handle: int, size: int, data: ctypes.Array[ctypes.c_char]) -> int:
        assert handle == 0 and size == len(data)
        fixed = struct.pack("<5I", 0xFEEF04BD, 0x10000, major << 16 | minor, build << 16 | revision, 0)
        ctypes.memmove(ctypes.addressof(data) + 40, fixed, len(fixed))
        return failures.get("read", 1)

    def query(data: ctypes.Array[ctypes.c_char], block: ctypes.c_wchar_p, fixed: Any, length: Any) -> int:
        assert block.value == "\\"
        target(fixed).value = ctypes.addressof(data) + 40
        target(length).value = failures.get("length", 52)
        return failures.get("query", 1)

    return windows.dll(
        "version",
        GetFileVersionInfoSizeW=lambda path, handle: failures.get("size", 200),
        GetFileVersionInfoW=read,
        VerQueryValueW=query,
    )


def test_the_installed_version_is_the_file_version_of_the_registered_service_binary(
    windows: FakeWindows,
) -> None:
    windows.on_windows()
    windows.registry.keys[HKLM, win32.SERVICE_KEY] = {"ImagePath": SERVICE_IMAGE}
    dll = version_dll(windows, (2, 6, 1, 0))
    assert win32.installed_version() == "2.6.1.0"
    assert [call[0].value for call in dll.GetFileVersionInfoSizeW.calls] == [
        r"C:\Program Files\WSL\wslservice.exe"
    ]
    assert win32.installed_version("D:\\other.exe") == "2.6.1.0"
    assert dll.GetFileVersionInfoW.calls[-1][0].value == "D:\\other.exe"


@pytest.mark.parametrize(
    ("image", "binary"),
    [
        (SERVICE_IMAGE, r"C:\Program Files\WSL\wslservice.exe"),
        (r"C:\WSL\wslservice.exe -service", r"C:\WSL\wslservice.exe"),
        ("  /usr/bin/env  ", "/usr/bin/env"),  # an existing path is kept whole
    ],
)
def test_the_service_binary_is_the_registered_image_without_its_arguments(
    windows: FakeWindows, image: str, binary: str
) -> None:
    windows.registry.keys[HKLM, win32.SERVICE_KEY] = {"ImagePath": image}
    assert win32.service_binary() == binary


def test_a_missing_service_registration_means_wsl_is_not_installed(windows: FakeWindows) -> None:
    with pytest.raises(WslError) as caught:
        win32.service_binary()
    assert caught.value.code == "WSL_E_WSL_OPTIONAL_COMPONENT_REQUIRED"
    assert caught.value.context == "Wsl"


@pytest.mark.parametrize(
    ("failure", "code"),
    [
        ({"size": 0}, "ERROR_FILE_NOT_FOUND"),
        ({"read": 0}, "ERROR_FILE_NOT_FOUND"),
        ({"query": 0}, "ERROR_VERSION_PARSE_ERROR"),
        ({"length": 8}, "ERROR_VERSION_PARSE_ERROR"),  # shorter than the four words read
    ],
)
def test_a_binary_without_a_readable_file_version_is_an_error(
    windows: FakeWindows, failure: dict[str, int], code: str
) -> None:
    windows.on_windows()
    version_dll(windows, (2, 6, 1, 0), **failure)
    with pytest.raises(WslError) as caught:
        win32.installed_version("C:\\wslservice.exe")
    assert caught.value.code == code and "C:\\wslservice.exe" in caught.value.message


# -- COM start-up -------------------------------------------------------------------------------


class Com:
    """combaseapi and ole32 answering as a working WslService, with `fake` as the session object."""

    def __init__(self, windows: FakeWindows, fake: FakeSession, created: list[int]) -> None:
        self.fake = fake
        self.created = list(created)  # HRESULTs of CoCreateInstance before it succeeds
        self.freed: list[int] = []
        self.combase = windows.sdk(
            "um.combaseapi",
            CoInitializeEx=lambda reserved, flags: 0,
            CoCreateInstance=self._create,
            CoTaskMemFree=self.freed.append,
        )
        self.ole32 = windows.dll(
            "ole32",
            CoInitializeSecurity=lambda *arguments: 0,
            CoQueryProxyBlanket=self._query,
            CoSetProxyBlanket=lambda *arguments: 0,
        )

    def _create(self, clsid: Any, outer: None, context: int, iid: Any, pointer: Any) -> int:
        assert bytes(target(clsid)) == layout.CLSID_LXSS_USER_SESSION.bytes_le
        assert bytes(target(iid)) == layout.IID_ILXSS_USER_SESSION.bytes_le
        assert outer is None and context == win32.CLSCTX_LOCAL_SERVER
        if self.created:
            return signed(self.created.pop(0))
        target(pointer).value = self.fake.pointer
        return 0

    def _query(self, pointer: int, authn: Any, authz: Any, name: None, level: Any, *rest: Any) -> int:
        assert pointer == self.fake.pointer and name is None
        target(authn).value, target(authz).value, target(level).value = 10, 0, 6
        target(rest[-1]).value = STATIC_CLOAKING | 0x800
        return 0


@pytest.fixture
def com(windows: FakeWindows, monkeypatch: pytest.MonkeyPatch) -> Com:
    windows.on_windows()
    windows.registry.keys[HKLM, win32.SERVICE_KEY] = {"ImagePath": SERVICE_IMAGE}
    version_dll(windows, (2, 6, 1, 0))
    monkeypatch.setattr(win32, "CREATE_RETRY_INTERVAL", 0.0)
    return Com(windows, FakeSession(), [])


def test_the_session_interface_is_created_as_wsl_exe_creates_it(com: Com) -> None:
    com.created = [win32.REGDB_E_CLASSNOTREG, win32.SERVICE_DOES_NOT_EXIST]  # the service is starting
    session = win32.open_session_interface({})
    assert session.pointer == com.fake.pointer
    assert com.combase.CoInitializeEx.calls == [(None, win32.COINIT_MULTITHREADED)]
    security = com.ole32.CoInitializeSecurity.calls[0]
    assert security[1] == -1 and security[4:6] == (0, win32.RPC_C_IMP_LEVEL_IMPERSONATE)
    assert security[7] == STATIC_CLOAKING
    assert len(com.combase.CoCreateInstance.calls) == 3
    # The blanket keeps the service's authentication, impersonates, cloaks dynamically.
    assert com.ole32.CoSetProxyBlanket.calls == [
        (com.fake.pointer, 10, 0, None, 6, win32.RPC_C_IMP_LEVEL_IMPERSONATE, None, DYNAMIC_CLOAKING | 0x800)
    ]
    session.call("SetVersion", DistroGuid=None, Version=2, StderrHandle=None)
    assert com.fake.last("SetVersion")[1] == 2
    session.release()
    assert com.fake.released == 1


def test_com_already_initialized_by_the_process_is_accepted(com: Com) -> None:
    com.combase.CoInitializeEx.answer = lambda reserved, flags: signed(win32.RPC_E_CHANGED_MODE)
    com.ole32.CoInitializeSecurity.answer = lambda *arguments: signed(win32.RPC_E_TOO_LATE)
    win32.open_session_interface({}).release()
    assert com.fake.released == 1


@pytest.mark.parametrize("function", ["CoInitializeEx", "CoInitializeSecurity"])
def test_a_failed_com_initialization_is_an_error_naming_the_function(com: Com, function: str) -> None:
    module = com.combase if function == "CoInitializeEx" else com.ole32
    getattr(module, function).answer = lambda *arguments: signed(E_OUTOFMEMORY)
    with pytest.raises(WslError) as caught:
        win32.open_session_interface({})
    assert caught.value.message.startswith(f"{function} failed: ")
    assert caught.value.hresult == E_OUTOFMEMORY
    assert not com.combase.CoCreateInstance.calls


def test_a_refused_creation_is_not_retried(com: Com) -> None:
    com.created = [E_ACCESSDENIED]
    with pytest.raises(WslError) as caught:
        win32.open_session_interface({})
    assert (caught.value.code, len(com.combase.CoCreateInstance.calls)) == ("E_ACCESSDENIED", 1)
    assert caught.value.message.startswith("CoCreateInstance(LxssUserSession) failed: ")


def test_a_service_that_never_registers_ends_the_retries_at_the_deadline(
    com: Com, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(win32, "CREATE_RETRY_SECONDS", 0.0)
    com.created = [win32.REGDB_E_CLASSNOTREG] * 5
    with pytest.raises(WslError) as caught:
        win32.open_session_interface({})
    assert caught.value.hresult == win32.REGDB_E_CLASSNOTREG
    assert len(com.combase.CoCreateInstance.calls) == 1


def test_a_failed_proxy_blanket_releases_the_interface(com: Com) -> None:
    com.ole32.CoSetProxyBlanket.answer = lambda *arguments: signed(E_ACCESSDENIED)
    with pytest.raises(WslError, match=r"^CoSetProxyBlanket failed"):
        win32.open_session_interface({})
    assert com.fake.released == 1


def test_a_service_of_another_version_is_refused_before_com_starts(com: Com, windows: FakeWindows) -> None:
    version_dll(windows, (2, 4, 13, 0))
    with pytest.raises(WslError) as caught:
        win32.open_session_interface({})
    assert caught.value.code == "WSL_E_OS_NOT_SUPPORTED" and "2.4.13.0" in caught.value.message
    assert not com.combase.CoInitializeEx.calls
    win32.open_session_interface({"PYWSL_ALLOW_WSL_VERSION": "2.4.13"}).release()


# -- the registry --------------------------------------------------------------------------------


def test_the_registration_details_are_the_values_present_in_the_users_key(windows: FakeWindows) -> None:
    assert win32.registry_details(DISTRO) == {}
    key = rf"{win32.LXSS_KEY}\{{{DISTRO}}}"
    windows.registry.keys[HKCU, key] = {"BasePath": r"C:\distro", "DefaultUid": 1000, "Other": 1}
    assert win32.registry_details(DISTRO) == {"BasePath": r"C:\distro", "DefaultUid": 1000}


def test_the_machine_settings_are_the_manifest_urls_of_the_machines_key(windows: FakeWindows) -> None:
    assert win32.machine_settings() == {}
    windows.registry.keys[HKLM, win32.LXSS_KEY] = {"DistributionListUrlAppend": "https://x/y.json"}
    assert win32.machine_settings() == {"DistributionListUrlAppend": "https://x/y.json"}


@pytest.mark.parametrize(("stored", "version"), [(None, 2), (1, 1), (2, 2), (7, 2)])
def test_the_default_version_is_the_users_value_or_2(
    windows: FakeWindows, stored: int | None, version: int
) -> None:
    if stored is not None:
        windows.registry.keys[HKCU, win32.LXSS_KEY] = {"DefaultVersion": stored}
    assert win32.default_version() == version


def test_setting_the_default_version_writes_a_dword_in_the_users_key(windows: FakeWindows) -> None:
    win32.set_default_version(1)
    assert windows.registry.written == [("DefaultVersion", 0, FakeRegistry.REG_DWORD, 1)]
    assert win32.default_version() == 1


def test_wsl1_is_present_when_the_lxss_driver_is_installed(windows: FakeWindows) -> None:
    assert not win32.wsl1_component_present()
    windows.registry.keys[HKLM, win32.WSL1_SERVICE_KEY] = {}
    assert win32.wsl1_component_present()


# -- WindowsHost ---------------------------------------------------------------------------------


class Console:
    """kernel32's console functions over consoles per handle; `old` refuses
    DISABLE_NEWLINE_AUTO_RETURN, as an old console host does."""

    def __init__(self, windows: FakeWindows, modes: dict[int, int], *, old: bool) -> None:
        self.modes = dict(modes)
        self.pages = [437, 850]
        self.old = old
        self.kernel32 = windows.dll(
            "kernel32",
            GetConsoleMode=self._get,
            SetConsoleMode=self._set,
            GetConsoleCP=lambda: self.pages[0],
            GetConsoleOutputCP=lambda: self.pages[1],
            SetConsoleCP=lambda page: self._page(0, page),
            SetConsoleOutputCP=lambda page: self._page(1, page),
        )

    def _get(self, handle: Any, mode: Any) -> int:
        handle = handle.value if isinstance(handle, ctypes.c_void_p) else handle
        if handle not in self.modes:
            return 0
        target(mode).value = self.modes[handle]
        return 1

    def _set(self, handle: int, mode: int) -> int:
        if self.old and mode & win32.DISABLE_NEWLINE_AUTO_RETURN:
            return 0
        self.modes[handle] = mode
        return 1

    def _page(self, index: int, page: int) -> int:
        self.pages[index] = page
        return 1


@pytest.mark.parametrize("old", [False, True])
def test_the_raw_console_is_entered_and_left_as_wsl_exe_does(windows: FakeWindows, old: bool) -> None:
    console = Console(windows, {100: 0x1F7, 101: 0x3}, old=old)
    restore = win32.WindowsHost().enter_raw_console()
    output = win32.raw_output_mode(0x3)
    assert console.modes == {
        100: win32.raw_input_mode(0x1F7),
        101: output & ~win32.DISABLE_NEWLINE_AUTO_RETURN if old else output,
    }
    assert console.pages == [win32.CP_UTF8, win32.CP_UTF8]
    restore()
    assert (console.modes, console.pages) == ({100: 0x1F7, 101: 0x3}, [437, 850])
    console.modes[100] = 0x5
    restore()  # nothing left to put back
    assert (console.modes[100], len(console.kernel32.SetConsoleCP.calls)) == (0x5, 2)


def test_a_standard_stream_that_is_no_console_keeps_its_mode(windows: FakeWindows) -> None:
    del windows.handles[0]  # no standard input at all
    console = Console(windows, {}, old=False)
    restore = win32.WindowsHost().enter_raw_console()
    assert not console.kernel32.SetConsoleMode.calls
    restore()
    assert console.pages == [437, 850] and not console.kernel32.SetConsoleMode.calls


def test_handles_are_classified_by_their_file_type_and_console_mode(windows: FakeWindows) -> None:
    kinds = {100: win32.FILE_TYPE_CHAR, 101: win32.FILE_TYPE_PIPE, 102: win32.FILE_TYPE_CHAR}
    windows.sdk("um.fileapi", GetFileType=lambda handle: kinds.get(handle, 1))
    Console(windows, {100: 0x1F7}, old=False)
    host = win32.WindowsHost()
    assert [host.handle_of(fd) for fd in (0, 1, 2, 7)] == [100, 101, 102, 0]
    assert [host.is_pipe(handle) for handle in (0, 100, 101)] == [False, False, True]
    # 102 is a character device but no console (a serial port, NUL).
    assert [host.is_console(handle) for handle in (0, 100, 101, 102)] == [False, True, False, False]


def test_the_console_size_is_that_of_the_first_standard_stream_with_a_console(windows: FakeWindows) -> None:
    windows_by_handle = {102: (0, 100, 119, 129)}  # only stderr is a console: 120 x 30

    def screen_buffer(handle: int, info: Any) -> int:
        if handle not in windows_by_handle:
            return 0
        window = target(info).srWindow
        window.Left, window.Top, window.Right, window.Bottom = windows_by_handle[handle]
        return 1

    windows.sdk(
        "um.consoleapi2",
        CONSOLE_SCREEN_BUFFER_INFO=ScreenBufferInfo,
        GetConsoleScreenBufferInfo=screen_buffer,
    )
    host = win32.WindowsHost()
    assert host.console_size() == (120, 30)
    windows_by_handle.clear()
    assert host.console_size() is None


def test_the_other_host_services(windows: FakeWindows, monkeypatch: pytest.MonkeyPatch) -> None:
    closed: list[int] = []
    freed: list[int] = []
    windows.sdk("um.handleapi", CloseHandle=closed.append)
    windows.sdk("um.combaseapi", CoTaskMemFree=freed.append)
    host = win32.WindowsHost()
    host.close_handle(104)
    host.free(0x1000)
    assert (closed, freed) == ([104], [0x1000])
    monkeypatch.setenv("PATH", r"C:\Windows")
    block = host.environment_block()
    assert block.endswith("\0\0") and r"PATH=C:\Windows" in block[:-2].split("\0")
    assert host.nt_path() == r"C:\Windows"
    assert host.current_directory() == os.getcwd()
    assert host.console_handle() == 0
    ours, theirs = socket.socketpair()
    with ours, host.socket_from_handle(theirs.detach()) as adopted:
        adopted.sendall(b"ping")
        assert ours.recv(4) == b"ping"
