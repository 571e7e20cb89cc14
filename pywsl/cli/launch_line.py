"""The common launch line, read without click: `[-d NAME] [-u USER] [--cd DIR] (-- | -e | CMD) ...`.

`read_launch_line` is the fast path's reader (`pywsl.cli.fast_launch`); `LAUNCH_OPTION_SPELLINGS`
is the one table of the options both readers know (the click declarations in `pywsl.cli.launch`
take their spellings from it). `start_vm_ahead` is what the `pywsl` script runs first: a cold
launch's VM interpreter starts before the rest of pywsl loads (`pywsl.cli.context.prestart_vm`
decides whether one is to start). This module imports only `os`, `sys` and
`pywsl.cli.invocation`.
"""

from __future__ import annotations

import os
import sys

from pywsl.cli.invocation import EXEC_TOKENS, HOME_TOKEN, STOP_TOKEN, Invocation

TYPE_CHECKING = False  # `typing` alone would cost a warm launch a sixth of its time
if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "COMPLETE_VARIABLE",
    "LAUNCH_OPTION_SPELLINGS",
    "LaunchLine",
    "read_launch_line",
    "start_vm_ahead",
]

# The launch options that take a value, by the click parameter they set: the fast path reads these.
LAUNCH_OPTION_SPELLINGS: dict[str, tuple[str, ...]] = {
    "distribution": ("-d", "--distribution"),
    "user": ("-u", "--user"),
    "cd": ("--cd",),
}
_PARAMETER_OF = {
    spelling: name for name, spellings in LAUNCH_OPTION_SPELLINGS.items() for spelling in spellings
}

COMPLETE_VARIABLE = "_PYWSL_COMPLETE"  # click's shell completion instruction for the `pywsl` program


class LaunchLine:
    """A command line of the common launch shape: its options (parameter, value) in the order given."""

    __slots__ = ("invocation", "options")

    def __init__(self, options: tuple[tuple[str, str], ...], invocation: Invocation) -> None:
        self.options = options
        self.invocation = invocation

    def value(self, parameter: str) -> str | None:
        return next((value for name, value in self.options if name == parameter), None)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LaunchLine):
            return NotImplemented
        return (self.options, self.invocation) == (other.options, other.invocation)

    def __hash__(self) -> int:
        return hash((self.options, self.invocation))

    def __repr__(self) -> str:
        return f"LaunchLine(options={self.options!r}, invocation={self.invocation!r})"


def read_launch_line(args: Sequence[str]) -> LaunchLine | None:
    """The launch `args` ask for, or None when the line needs the full grammar."""
    if args and (args[0] == HOME_TOKEN or args[0].startswith("{")):
        return None  # wsl.exe's legacy prefixes
    options: list[tuple[str, str]] = []
    index = 0
    while index < len(args):
        token = args[index]
        if token == STOP_TOKEN:
            return LaunchLine(tuple(options), Invocation("shell", tuple(args[index + 1 :])))
        if token in EXEC_TOKENS:
            rest = tuple(args[index + 1 :])
            return LaunchLine(tuple(options), Invocation("exec", rest)) if rest else None
        if not token.startswith("-") or token == "-":
            return LaunchLine(tuple(options), Invocation("shell", tuple(args[index:])))
        parameter = _PARAMETER_OF.get(token)
        if parameter is None or index + 1 >= len(args) or any(name == parameter for name, _ in options):
            return None
        value = args[index + 1]
        if value.startswith("-"):
            return None
        options.append((parameter, value))
        index += 2
    return None  # no command line: the default shell (and a pending first-run setup)


def start_vm_ahead(argv: Sequence[str] | None = None) -> None:
    """Root's launch line with no VM running: start the VM's interpreter now (the `pywsl` script
    calls this before it imports the rest: the VM's side of a cold launch is the longer one).
    The fast path asks again (`pywsl.cli.context.prestart_vm`), which then does nothing."""
    if os.environ.get(COMPLETE_VARIABLE):
        return
    if read_launch_line(sys.argv[1:] if argv is None else list(argv)) is None:
        return
    from pywsl.cli.context import prestart_vm  # `os` and `sys` only, until it runs

    prestart_vm()
