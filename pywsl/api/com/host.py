"""What a COM session needs from the operating system, as one small interface.

`ComUserSession` calls the interface's methods through a vtable and otherwise needs only these
services: freeing `CoTaskMemAlloc`'d memory, the OS handle behind a C runtime descriptor, whether
a handle is a pipe or a console, the console's size, raw mode and handle, sockets from the handles
`CreateLxProcess` returns, the caller's folder and environment. `pywsl.api.com.win32` gives
Windows' (`CoTaskMemFree`, `_get_osfhandle`, `GetFileType`, ...).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Protocol

__all__ = ["ComHost"]


class ComHost(Protocol):
    def free(self, address: int) -> None:
        """`CoTaskMemFree`."""

    def handle_of(self, fd: int) -> int:
        """The OS handle of a C runtime descriptor (`_get_osfhandle`)."""

    def is_pipe(self, handle: int) -> bool:
        """`GetFileType(handle) == FILE_TYPE_PIPE`."""

    def is_console(self, handle: int) -> bool:
        """Whether the handle is a console (wsl.exe's `IsConsoleHandle`)."""

    def console_size(self) -> tuple[int, int] | None:
        """The console window's (columns, rows), None without a console."""

    def enter_raw_console(self) -> Callable[[], None]:
        """Put the console in wsl.exe's mode for a Linux process reading it (only called when
        stdin is a console); returns the function that restores the previous mode (once: a
        second call does nothing)."""

    def console_handle(self) -> int:
        """The console's handle value (`ConsoleHandle` of `CreateLxProcess`), 0 without one."""

    def socket_from_handle(self, handle: int) -> socket.socket:
        """A socket object owning a socket handle the service returned."""

    def close_handle(self, handle: int) -> None:
        """`CloseHandle` of a handle the service returned and nobody took over."""

    def current_directory(self) -> str:
        """The caller's folder (a Windows path: `CurrentWorkingDirectory` of a launch)."""

    def environment_block(self) -> str:
        """The caller's environment as `K=V` entries, each ending with NUL, then one more NUL."""

    def nt_path(self) -> str:
        """`%PATH%` expanded."""
