"""The guest's log: `logging`'s loggers and lines without loading `logging` when the VM starts.

Every guest module is loaded as the VM starts (`mini_init`), and `logging` with what it loads
(`traceback`, `string`, `weakref`, `threading`...) cost that start milliseconds. The guest's
modules take their loggers here instead (`getLogger`), with the calls they use: `debug`, `info`,
`warning`, `error` and `exception`.

A process that `configure`s this log (the VM's first process, the qemu guest's pid 1, the
interop host) writes each record as one line on its stream, as `logging.basicConfig` with the
same format would: ``<date> <time>,<ms> <pid> <logger> <LEVEL>: <message>`` (or, unstamped,
``<logger> <LEVEL>: <message>``), a traceback after the line of an `exception`, records below
the level dropped. Its forks inherit that; nothing is loaded for a record then (inside a
distribution the host's files are out of reach). Anywhere else (the host's processes, tests) the
records go to `logging` itself, loaded by the first one, so that its configuration applies.
"""

from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TextIO

__all__ = ["DEBUG", "ERROR", "INFO", "STAMPED_FORMAT", "WARNING", "GuestLogger", "configure", "getLogger"]

DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40
STAMPED_FORMAT = "%(asctime)s %(process)d %(name)s %(levelname)s: %(message)s"  # `logging`'s, the same
_LEVEL_NAMES = {DEBUG: "DEBUG", INFO: "INFO", WARNING: "WARNING", ERROR: "ERROR"}


class _Target:
    """Where a configured process writes its records."""

    __slots__ = ("level", "stamped", "stream")

    def __init__(self, level: int, stream: TextIO, stamped: bool) -> None:
        self.level = level
        self.stream = stream
        self.stamped = stamped


_target: _Target | None = None
_loggers: dict[str, GuestLogger] = {}


def configure(level: int = INFO, stream: TextIO | None = None, *, stamped: bool = True) -> None:
    """Write this process's records (and its forks') at `level` and above on `stream` (stderr)."""
    global _target
    _target = _Target(level, sys.stderr if stream is None else stream, stamped)


def getLogger(name: str) -> GuestLogger:
    """The logger called `name` (one object per name, as `logging` gives)."""
    logger = _loggers.get(name)
    if logger is None:
        logger = _loggers[name] = GuestLogger(name)
    return logger


class GuestLogger:
    """A logger with `logging.Logger`'s calls that the guest uses."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"GuestLogger({self.name!r})"

    def debug(self, message: object, *arguments: object) -> None:
        self._log(DEBUG, message, arguments, False)

    def info(self, message: object, *arguments: object) -> None:
        self._log(INFO, message, arguments, False)

    def warning(self, message: object, *arguments: object) -> None:
        self._log(WARNING, message, arguments, False)

    def error(self, message: object, *arguments: object) -> None:
        self._log(ERROR, message, arguments, False)

    def exception(self, message: object, *arguments: object) -> None:
        """An error with the exception being handled (its traceback after the line)."""
        self._log(ERROR, message, arguments, True)

    def _log(self, level: int, message: object, arguments: tuple[object, ...], with_traceback: bool) -> None:
        target = _target
        if target is None:
            import logging

            logging.getLogger(self.name).log(level, message, *arguments, exc_info=with_traceback)
            return
        if level < target.level:
            return
        line = _line(self.name, level, _message(message, arguments), target.stamped)
        if with_traceback and sys.exc_info()[0] is not None:
            line += "\n" + _traceback_text()
        try:
            target.stream.write(line + "\n")
            target.stream.flush()
        except (OSError, ValueError):  # a closed or broken log: the record is lost, as with logging
            pass


def _traceback_text() -> str:
    """The exception being handled, as `traceback` shows it when it is loaded; else its frames'
    files, lines and functions. Nothing is imported here: inside a distribution the host's files
    are out of reach, and a module found at their paths would be the distribution's."""
    kind, value, frames = sys.exc_info()
    loaded = sys.modules.get("traceback")
    if loaded is not None:
        return "".join(loaded.format_exception(kind, value, frames)).rstrip("\n")
    lines = ["Traceback (most recent call last):"]
    while frames is not None:
        code = frames.tb_frame.f_code
        lines.append(f'  File "{code.co_filename}", line {frames.tb_lineno}, in {code.co_name}')
        frames = frames.tb_next
    name = "" if kind is None else kind.__qualname__
    lines.append(f"{name}: {value}" if str(value) else name)
    return "\n".join(lines)


def _message(message: object, arguments: tuple[object, ...]) -> str:
    """``message % arguments`` as `logging` makes it; what cannot be formatted shows as it is."""
    text = str(message)
    if not arguments:
        return text
    try:
        return text % arguments
    except (TypeError, ValueError, KeyError):
        return f"{text} {arguments!r}"


def _line(name: str, level: int, message: str, stamped: bool) -> str:
    level_name = _LEVEL_NAMES.get(level, f"Level {level}")
    if not stamped:
        return f"{name} {level_name}: {message}"
    now = time.time()
    moment = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
    return f"{moment},{int(now * 1000) % 1000:03d} {os.getpid()} {name} {level_name}: {message}"
