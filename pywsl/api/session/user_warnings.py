"""Warnings for the user: WSL's `EMIT_USER_WARNING` and `LXSS_ERROR_INFO.Warnings`.

WSL's service collects the warnings of an operation (a `.wslconfig` key it does not know, the
`/etc/wsl.conf` warnings init reports in `CreateInstanceResult`) in the execution context and
hands them to wsl.exe, which prints each as `wsl: <warning>` unless `WSL_DISABLE_WARNINGS=1`.
Here `emit` gives a warning to the sink the caller installed with `collecting` (the command line
prints them; the service sends them back with its reply, and the client emits them again on its
side). Without a sink a warning is dropped: a library caller that wants them installs one.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator

__all__ = ["collecting", "emit"]

_SINK: contextvars.ContextVar[Callable[[str], None] | None] = contextvars.ContextVar(
    "pywsl_user_warning_sink", default=None
)


def emit(text: str) -> None:
    """Hand one warning (one or more lines) to the current sink, if there is one."""
    sink = _SINK.get()
    if sink is None:
        return
    for line in text.splitlines():
        if line.strip():
            sink(line)


@contextlib.contextmanager
def collecting(sink: Callable[[str], None]) -> Iterator[None]:
    """Send the warnings emitted in this block (this thread or task) to `sink`."""
    token = _SINK.set(sink)
    try:
        yield
    finally:
        _SINK.reset(token)
