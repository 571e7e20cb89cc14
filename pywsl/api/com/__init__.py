"""The Windows client: the installed WslService's `ILxssUserSession` over COM.

`connect()` (Windows only) checks the service's version, starts COM as wsl.exe does and returns
a `ComUserSession`. Every module imports on every OS: the declaration (`interface`), the
structures (`layout`), errors (`hresult`), the vtable calls (`vtable`), the session
(`session`) and the process relay (`relay`) are plain ctypes and sockets; `win32` loads the
Windows libraries only when called. A `[pywsl] backend` in the user's `.wslconfig` is reported
as ignored (`linux_settings`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pywsl.api.com.session import ComUserSession
    from pywsl.api.session.wslconfig import WslConfig

__all__ = ["connect", "install_config"]


def install_config() -> WslConfig:
    """What `--install` and `--list --online` read of WSL's machine settings (the manifest URLs in
    HKLM's `Lxss` key), without opening a session."""
    from pywsl.api.com import win32
    from pywsl.api.com.session import machine_config

    return machine_config(win32.machine_settings())


def connect(environ: Mapping[str, str] | None = None) -> ComUserSession:
    """The calling Windows user's session in WslService."""
    import os

    from pywsl.api.com import win32
    from pywsl.api.com.linux_settings import wslconfig_warnings
    from pywsl.api.com.session import ComUserSession
    from pywsl.api.session import user_warnings

    interface = win32.open_session_interface(environ)
    for warning in wslconfig_warnings(os.environ if environ is None else environ):
        user_warnings.emit(warning)
    return ComUserSession(
        interface, win32.WindowsHost(), details=win32.registry_details, settings=win32.machine_settings
    )
