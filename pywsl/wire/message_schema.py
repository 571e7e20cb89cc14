"""`MessageSchemaLike`: what `MessageChannel` needs from a message schema.

A module of its own because it needs `typing`, which the guest's start does not load: the channel
names it for the type checker and loads it only when something asks for it at run time.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

__all__ = ["MessageSchemaLike"]

M_co = TypeVar("M_co", covariant=True)


class MessageSchemaLike(Protocol[M_co]):
    """What the channel needs from a message schema (``pywsl.wire.schema(name)``)."""

    @property
    def name(self) -> str: ...

    @property
    def message_type(self) -> int | None: ...

    @property
    def sizeof(self) -> int: ...

    def build(self, **values: Any) -> bytes: ...

    def parse(self, data: bytes) -> M_co: ...
