"""WSL message framing: the 16-byte MESSAGE_HEADER and the frame size rules.

Every message on a WSL socket starts with ``MESSAGE_HEADER`` (lxinitshared.h)::

    +0  MessageType      uint32  (LX_MESSAGE_TYPE)
    +4  MessageSize      uint32  total size, header included
    +8  TransactionId    uint32
    +12 TransactionStep  uint32  (TRANSACTION_STEP)

A receiver (``RecvMessage`` in socketshared.h) reads exactly the header, rejects a
``MessageSize`` below 16 or above 16 MiB, then reads the rest of the frame. This module holds
those rules as pure functions; ``channel.py`` does the socket I/O.
"""

from __future__ import annotations

import struct
from collections import namedtuple

from pywsl.wire.constants import MAX_MESSAGE_SIZE, MESSAGE_HEADER_SIZE
from pywsl.wire.errors import ProtocolError
from pywsl.wire.message_types import LxMessageType

TYPE_CHECKING = False  # `typing` and `enum` would cost the guest's start: neither is needed at run time
if TYPE_CHECKING:
    from typing import NamedTuple

__all__ = [
    "HEADER",
    "HEADER_SIZE",
    "MAX_MESSAGE_SIZE",
    "MESSAGE_TYPE_ANY",
    "MessageHeader",
    "check_message_size",
    "check_outgoing",
    "id_distance",
    "parse_header",
    "stamp_transaction",
]

HEADER = struct.Struct("<IIII")
HEADER_SIZE = MESSAGE_HEADER_SIZE

# An expected type that accepts every message.
MESSAGE_TYPE_ANY = LxMessageType.LxMiniInitMessageAny

_TRANSACTION_FIELDS = struct.Struct("<II")
_TRANSACTION_OFFSET = 8


if TYPE_CHECKING:

    class MessageHeader(NamedTuple):
        """A decoded ``MESSAGE_HEADER``."""

        message_type: int
        message_size: int
        transaction_id: int
        transaction_step: int

else:
    # What ``typing.NamedTuple`` makes of the class above, without loading ``typing``.
    MessageHeader = namedtuple(
        "MessageHeader", ("message_type", "message_size", "transaction_id", "transaction_step")
    )
    MessageHeader.__doc__ = "A decoded ``MESSAGE_HEADER``."
    MessageHeader.__annotations__ = {name: "int" for name in MessageHeader._fields}


def parse_header(data: bytes | bytearray | memoryview) -> MessageHeader:
    """Decode the header at the start of ``data`` (at least 16 bytes)."""
    if len(data) < HEADER_SIZE:
        raise ProtocolError(f"truncated header: {len(data)} of {HEADER_SIZE} bytes", struct="MESSAGE_HEADER")
    return MessageHeader(*HEADER.unpack_from(data))


def check_message_size(size: int) -> None:
    """Apply RecvMessage's bounds to a received ``MessageSize``."""
    if size < HEADER_SIZE:
        raise ProtocolError(
            f"{size} is smaller than the {HEADER_SIZE}-byte header",
            struct="MESSAGE_HEADER",
            field="MessageSize",
        )
    if size > MAX_MESSAGE_SIZE:
        raise ProtocolError(
            f"{size} exceeds the {MAX_MESSAGE_SIZE}-byte limit",
            struct="MESSAGE_HEADER",
            field="MessageSize",
        )


def check_outgoing(data: bytes | bytearray | memoryview) -> MessageHeader:
    """Check a complete message about to be sent: a header whose MessageSize is its length.

    A mismatch is a bug of the sender, so it raises ``ValueError`` rather than ProtocolError.
    """
    if len(data) < HEADER_SIZE:
        raise ValueError(f"a message needs at least the {HEADER_SIZE}-byte header, got {len(data)} bytes")
    header = MessageHeader(*HEADER.unpack_from(data))
    if header.message_size != len(data):
        raise ValueError(f"MessageSize {header.message_size} does not match the message length {len(data)}")
    if header.message_size > MAX_MESSAGE_SIZE:
        raise ValueError(f"message of {header.message_size} bytes exceeds {MAX_MESSAGE_SIZE} bytes")
    return header


def stamp_transaction(message: bytearray, transaction_id: int, step: int) -> None:
    """Write TransactionId and TransactionStep into a message, as SocketChannel::SendMessage does."""
    _TRANSACTION_FIELDS.pack_into(
        message, _TRANSACTION_OFFSET, transaction_id & 0xFFFFFFFF, step & 0xFFFFFFFF
    )


def id_distance(received: int, expected: int) -> int:
    """``(int32_t)(received - expected)``: how far a transaction id is ahead of the expected one."""
    diff = (received - expected) & 0xFFFFFFFF
    return diff - (1 << 32) if diff & 0x80000000 else diff
