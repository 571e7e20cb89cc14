"""Calling an `ILxssUserSession` through its vtable, as the declaration (`interface.py`) says.

An interface pointer points at the object, whose first 8 bytes point at the vtable, an array
of function pointers in slot order. `call` takes the arguments by their declared names, passes
a fresh `LXSS_ERROR_INFO` where the method has one, frees what the service allocated in it,
hands its warnings to the caller and turns a failed HRESULT into a `WslError`.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from typing import Any

from pywsl.api.com.hresult import emit_warnings, new_error_info, take_error_info, to_wsl_error
from pywsl.api.com.interface import Method, method, prototype
from pywsl.api.errors import WslError

__all__ = ["ComInterface"]

_POINTER_SIZE = ctypes.sizeof(ctypes.c_void_p)


class ComInterface:
    """One reference to a COM interface; `close()` releases it."""

    def __init__(self, pointer: int, free: Callable[[int], None]) -> None:
        if not pointer:
            raise WslError("E_INVALIDARG", "No COM interface pointer.")
        self._pointer: int | None = pointer
        self._free = free
        self._lock = threading.Lock()

    def _function(self, entry: Method) -> Any:
        if self._pointer is None:
            raise WslError("RPC_E_DISCONNECTED", "The session was closed.")
        vtable = ctypes.c_void_p.from_address(self._pointer).value
        if not vtable:
            raise WslError("E_UNEXPECTED", "The COM object has no vtable.")
        address = ctypes.c_void_p.from_address(vtable + entry.slot * _POINTER_SIZE).value
        if not address:
            raise WslError("E_UNEXPECTED", f"The COM object has no method in slot {entry.slot}.")
        return prototype(entry)(address)

    def call(self, name: str, **arguments: Any) -> None:
        """Call `name` with its declared parameters (all but `Error`, by name; a missing
        `unique` pointer or string is NULL). Raises `WslError` when the HRESULT is a failure."""
        entry = method(name)
        unknown = set(arguments) - {param.name for param in entry.params}
        if unknown:
            raise TypeError(f"{name}: unknown parameters {sorted(unknown)}")
        info = new_error_info() if entry.has_error_info else None
        values = [
            ctypes.byref(info) if param.name == "Error" and info is not None else arguments.get(param.name)
            for param in entry.params
        ]
        function = self._function(entry)
        hresult = int(function(self._pointer, *values))
        message, warnings, context = take_error_info(info, self._free) if info is not None else ("", "", 0)
        emit_warnings(warnings)
        if hresult < 0:
            raise to_wsl_error(hresult, message, context)

    def release(self) -> None:
        with self._lock:
            pointer, self._pointer = self._pointer, None
        if pointer is not None:
            release = prototype(method("Release"))
            vtable = ctypes.c_void_p.from_address(pointer).value
            address = (
                ctypes.c_void_p.from_address((vtable or 0) + 2 * _POINTER_SIZE).value if vtable else None
            )
            if address:
                release(address)(pointer)

    @property
    def pointer(self) -> int | None:
        return self._pointer
