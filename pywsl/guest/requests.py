"""Receiving a request on a guest channel: only transaction requests are served.

mini_init and init serve commands the host sends as transactions (``TransactionStep`` REQUEST).
WSL's guest treats anything else as fatal; pywsl closes that one channel instead. The header of
the next frame is peeked first, so that a stray non-transactional message is refused at once
rather than silently discarded while the guest waits for a request that never comes.
"""

from __future__ import annotations

from pywsl.wire import unix_sockets as socket
from pywsl.wire.channel import MessageChannel, Transaction
from pywsl.wire.errors import ProtocolError
from pywsl.wire.framing import HEADER_SIZE, parse_header
from pywsl.wire.message_types import TransactionStep as TRANSACTION_STEP


def _peek_header(fd: int) -> bytes:
    sock = socket.socket(fileno=fd)
    try:
        return sock.recv(HEADER_SIZE, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (BlockingIOError, OSError):
        return b""
    finally:
        sock.detach()


def receive_request(channel: MessageChannel, timeout: float) -> tuple[Transaction, bytes, list[int]]:
    """The next request: its transaction (for the reply), the whole message and its descriptors."""
    peeked = _peek_header(channel.fileno())
    if len(peeked) == HEADER_SIZE:
        header = parse_header(peeked)
        if header.transaction_step != TRANSACTION_STEP.REQUEST:
            raise ProtocolError(
                f"message type {header.message_type} with transaction step "
                f"{header.transaction_step} where a request was expected on {channel.name}",
                struct="MESSAGE_HEADER",
                field="TransactionStep",
            )
    transaction = channel.receive_transaction(timeout=timeout)
    data, fds = transaction.receive()
    return transaction, data, fds
