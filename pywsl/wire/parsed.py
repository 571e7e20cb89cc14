"""A parsed message: what both codecs (construct-based and the launch path's struct codec) return."""

from __future__ import annotations

# `collections.abc` and `typing` would load more than the launch path runs (see `launch_codec`).
from _collections_abc import Mapping

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

    _Fields = Mapping[str, Any]
else:
    _Fields = Mapping


class Message(_Fields):
    """A parsed message (or embedded struct): attribute and item access by WSL field name.

    Holds the raw fixed fields (offsets included) and the logical values of the variable part
    (strings, string lists, bytes; ``None`` when absent). ``Header`` / ``Common`` and other embedded
    structs are nested ``Message`` objects. ``struct`` is the WSL struct name.
    """

    __slots__ = ("_struct", "_values")

    def __init__(self, struct: str, values: Mapping[str, Any]) -> None:
        self._struct = struct
        self._values = dict(values)

    @property
    def struct(self) -> str:
        """The WSL struct name, e.g. ``LX_INIT_CREATE_SESSION``."""
        return self._struct

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"{self._struct} has no field {name!r}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        inner = ", ".join(f"{key}={value!r}" for key, value in self._values.items())
        return f"{self._struct}({inner})"


def cstring_at(data: bytes, position: int, buffer_offset: int) -> tuple[str, int]:
    """The NUL-terminated UTF-8 string at ``position`` of a message's variable part (which starts at
    ``buffer_offset``) and the position after its NUL; ``ValueError`` says what is wrong."""
    if position < buffer_offset or position >= len(data):
        raise ValueError(
            f"string at byte {position} lies outside the variable part (bytes {buffer_offset}..{len(data)})"
        )
    end = data.find(b"\0", position)
    if end < 0:
        raise ValueError(f"string at byte {position} has no NUL before the end of the message")
    try:
        text = data[position:end].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"invalid UTF-8 at byte {position + exc.start}") from None
    return text, end + 1
