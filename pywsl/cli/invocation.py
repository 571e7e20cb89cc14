"""The tokens that end wsl.exe's launch options and what follows them (`Invocation`), without click."""

from __future__ import annotations

from typing import Literal, NamedTuple

__all__ = ["EXEC_TOKENS", "HOME_TOKEN", "STOP_TOKEN", "Invocation"]

STOP_TOKEN = "--"
EXEC_TOKENS = ("-e", "--exec")
HOME_TOKEN = "~"


class Invocation(NamedTuple):
    """What follows the launch options.

    `mode` is "shell" (the arguments form one command line for the user's shell; none = the shell
    itself), "exec" (after `-e`/`--exec`: an argv) or "verb" (a management verb and its arguments).
    """

    mode: Literal["shell", "exec", "verb"]
    arguments: tuple[str, ...] = ()
    verb: str | None = None
