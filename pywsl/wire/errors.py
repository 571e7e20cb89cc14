"""Errors of the wire layer: every malformed message ends up as a ProtocolError."""

from __future__ import annotations


class ProtocolError(ValueError):
    """A message that does not follow WSL's framing or layout rules.

    ``struct`` names the WSL struct being decoded (or ``None`` for framing errors) and ``field``
    the offending field, so that a log line says exactly what was wrong.
    """

    def __init__(self, message: str, *, struct: str | None = None, field: str | None = None) -> None:
        self.struct = struct
        self.field = field
        where = ".".join(part for part in (struct, field) if part)
        super().__init__(f"{where}: {message}" if where else message)


class ChannelClosed(ConnectionError):
    """The peer closed the channel cleanly (EOF before a new message header)."""
