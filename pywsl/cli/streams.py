"""The console streams and the exit status of one command line (shared by both of its readers)."""

from __future__ import annotations

import sys

__all__ = ["exit_status", "flush_stdout", "utf8_streams"]


def utf8_streams() -> None:
    """UTF-8 on stdout and stderr whatever the locale (wsl.exe's `WSL_UTF8=1`)."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if callable(reconfigure):
            try:
                reconfigure(encoding="utf-8", errors="surrogateescape")
            except (ValueError, OSError):
                continue


def exit_status(value: object) -> int:
    """A callback's result as a process exit status: an int's low byte, else 0."""
    if isinstance(value, bool) or not isinstance(value, int):
        return 0
    return value & 0xFF


def flush_stdout() -> None:
    """Flush stdout before exiting; a reader that went away is not an error."""
    try:
        sys.stdout.flush()
    except (ValueError, OSError):  # a reader that went away is not an error (BrokenPipeError)
        return
