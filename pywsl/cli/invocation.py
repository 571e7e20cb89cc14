"""The tokens that end wsl.exe's launch options and what follows them (`Invocation`), without click."""

from __future__ import annotations

TYPE_CHECKING = False  # the fast launch path reads its line with this: `typing` would cost it more
if TYPE_CHECKING:
    from typing import Literal

__all__ = ["EXEC_TOKENS", "HOME_TOKEN", "STOP_TOKEN", "Invocation"]

STOP_TOKEN = "--"
EXEC_TOKENS = ("-e", "--exec")
HOME_TOKEN = "~"


class Invocation:
    """What follows the launch options.

    `mode` is "shell" (the arguments form one command line for the user's shell; none = the shell
    itself), "exec" (after `-e`/`--exec`: an argv) or "verb" (a management verb and its arguments).
    A plain class compared by value, as a named tuple would be, without loading `typing`.
    """

    __slots__ = ("arguments", "mode", "verb")

    def __init__(
        self, mode: Literal["shell", "exec", "verb"], arguments: tuple[str, ...] = (), verb: str | None = None
    ) -> None:
        self.mode = mode
        self.arguments = arguments
        self.verb = verb

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Invocation):
            return NotImplemented
        return (self.mode, self.arguments, self.verb) == (other.mode, other.arguments, other.verb)

    def __hash__(self) -> int:
        return hash((self.mode, self.arguments, self.verb))

    def __repr__(self) -> str:
        return f"Invocation(mode={self.mode!r}, arguments={self.arguments!r}, verb={self.verb!r})"
