"""The console streams and the exit status of one command line (shared by both of its readers)."""

from __future__ import annotations

import contextlib
import sys

__all__ = ["exit_status", "flush_stdout", "utf8_streams"]


def utf8_streams() -> None:
    """UTF-8 on stdout and stderr whatever the locale (wsl.exe's `WSL_UTF8=1`)."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if callable(reconfigure):
            with contextlib.suppress(ValueError, OSError):
                reconfigure(encoding="utf-8", errors="surrogateescape")


def exit_status(value: object) -> int:
    """A callback's result as a process exit status: an int's low byte, else 0."""
    if isinstance(value, bool) or not isinstance(value, int):
        return 0
    return value & 0xFF


def flush_stdout() -> None:
    """Flush stdout before exiting; a reader that went away is not an error."""
    with contextlib.suppress(BrokenPipeError, ValueError, OSError):
        sys.stdout.flush()
