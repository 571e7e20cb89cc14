"""Cancelling a request's work when the client that asked for it goes away.

WSL's service cancels a call whose COM client disconnected (`CoCancelCall` on the client's
death). The pywsl service gives every request a `CancelToken`; the connection's reader cancels it
when the client closes its end, and long operations (an import, an export, a download) register
what must happen then (close a pipe, end a worker) with `on_cancel`, or poll `check()` between
steps. Outside the service (the in-process library) `current()` is a token nobody cancels.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Callable, Iterator

from pywsl.api.errors import WslError

__all__ = ["CancelToken", "cancel_scope", "current"]


class CancelToken:
    """A one-way flag plus callbacks run once when it is set."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: dict[int, Callable[[], None]] = {}
        self._next = 0

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to `timeout` seconds for the cancellation; True if it happened."""
        return self._event.wait(timeout)

    def cancel(self) -> None:
        """Set the flag and run every registered callback (each once; errors are ignored)."""
        with self._lock:
            if self._event.is_set():
                return
            self._event.set()
            callbacks = list(self._callbacks.values())
            self._callbacks.clear()
        for callback in callbacks:
            with contextlib.suppress(Exception):
                callback()

    def check(self) -> None:
        """Raise `E_ABORT` when the request was cancelled."""
        if self._event.is_set():
            raise WslError("E_ABORT", "The operation was canceled because the client went away.")

    @contextlib.contextmanager
    def on_cancel(self, callback: Callable[[], None]) -> Iterator[None]:
        """Run `callback` if the token is cancelled while the block runs (at once if it already is)."""
        with self._lock:
            key = self._next
            self._next += 1
            registered = not self._event.is_set()
            if registered:
                self._callbacks[key] = callback
        if not registered:
            with contextlib.suppress(Exception):
                callback()
        try:
            yield
        finally:
            with self._lock:
                self._callbacks.pop(key, None)


_NEVER = CancelToken()
_current: contextvars.ContextVar[CancelToken] = contextvars.ContextVar("pywsl_cancel_token", default=_NEVER)


def current() -> CancelToken:
    """The token of the request this thread serves (one that is never cancelled outside one)."""
    return _current.get()


@contextlib.contextmanager
def cancel_scope(token: CancelToken) -> Iterator[CancelToken]:
    """Make `token` the current one for the block."""
    reset = _current.set(token)
    try:
        yield token
    finally:
        _current.reset(reset)
