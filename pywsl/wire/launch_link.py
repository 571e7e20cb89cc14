"""LaunchLink: the launch client's own side of a WSL socket channel, built on `_socket` alone.

A warm `pywsl -d D -- cmd` is a short-lived client of four channels (mini_init's, the instance's
init channel, the session leader's and the process's exit channel) and uses each for a few
messages in a row, from one thread. `MessageChannel` serves every other use (threads, servers,
cancellation, raw data) and loads `socket`, `enum`, `typing` and `threading` to do it, which costs a
launch more than its round trips to the VM. This link keeps SocketChannel's rules for what a
launch does: frames checked as RecvMessage checks them (`framing`), non-transaction messages
counted and stamped on both sides, transactions as initiator (ids from 0, request step 1, the reply
step 2, stale replies skipped, a newer id or a wrong step refused), file descriptors with a message
(SCM_RIGHTS; every descriptor received with a refused message is closed) and a deadline for each
exchange. Messages are built and parsed with the launch codec's schemas.
"""

from __future__ import annotations

import _socket
import os
import select
import struct
import time

from pywsl.wire.constants import MAX_MESSAGE_SIZE, MESSAGE_HEADER_SIZE
from pywsl.wire.errors import ChannelClosed, ProtocolError

TYPE_CHECKING = False  # `typing` costs a launch more than this module
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    from pywsl.wire.launch_codec import FastMessage, FastSchema

__all__ = ["LaunchLink", "connect_unix"]

_HEADER = struct.Struct("<IIII")
_STEP_NONE, _STEP_REQUEST, _STEP_REPLY = 0, 1, 2
_U32 = 0xFFFFFFFF
_MAX_FDS = 16  # as MessageChannel: more with one message is a protocol error
_ANCILLARY_SIZE = _socket.CMSG_SPACE(253 * 4)  # Linux's SCM_MAX_FD: a larger set is never cut off
_SEND_FLAGS = _socket.MSG_DONTWAIT | _socket.MSG_NOSIGNAL
_RECEIVE_FLAGS = _socket.MSG_DONTWAIT | _socket.MSG_CMSG_CLOEXEC
CONNECT_TIMEOUT = 10.0


def connect_unix(path: str, timeout: float = CONNECT_TIMEOUT) -> _socket.socket | None:
    """A connection to the stream socket at `path`; None when nothing listens there. A listener
    whose queue stays full for `timeout` seconds is a TimeoutError."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC | _socket.SOCK_NONBLOCK)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                sock.connect(path)
                break
            except BlockingIOError:  # its queue is full: wait a little for room, within the deadline
                if time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"{path}: no room in the listener's queue within {timeout:g} s"
                    ) from None
                time.sleep(0.005)
    except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
        sock.close()
        return None
    except BaseException:
        sock.close()
        raise
    return sock


def socket_pair() -> tuple[_socket.socket, _socket.socket]:
    """A connected pair of AF_UNIX stream sockets (close-on-exec)."""
    first, second = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    return first, second


class LaunchLink:
    """One end of a channel, used from one thread; `timeout` (seconds) bounds each exchange."""

    def __init__(self, sock: _socket.socket, name: str, timeout: float) -> None:
        self._sock = sock
        self.name = name
        self.timeout = timeout
        self._sent = 0  # non-transaction messages sent: the next one carries this + 1
        self._received = 0
        self._next_transaction = 0

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()

    # -- the three exchanges a launch makes -------------------------------------------------------

    def send(self, schema: FastSchema, fds: Sequence[int] = (), **values: Any) -> None:
        """A message outside any transaction."""
        message = self._checked(schema, fds, values)
        self._sent = (self._sent + 1) & _U32
        self._write(message, self._sent, _STEP_NONE, fds, self._deadline())

    def send_request(self, schema: FastSchema, fds: Sequence[int] = (), **values: Any) -> int:
        """A transaction's request; its id, for `receive_reply`. A launch sends its requests before
        it reads any answer: the VM serves them one after the other, without waiting for the client.
        """
        return self.send_built_request(self._checked(schema, fds, values), fds)

    def send_built_request(self, message: bytes, fds: Sequence[int] = ()) -> int:
        """`send_request` of a message built already (its header's transaction fields are set here)."""
        if len(fds) > _MAX_FDS:
            raise ValueError(f"{self.name}: at most {_MAX_FDS} file descriptors per message")
        transaction = self._next_transaction
        self._next_transaction = (transaction + 1) & _U32
        self._write(message, transaction, _STEP_REQUEST, fds, self._deadline())
        return transaction

    def receive(self, schema: FastSchema, expect_fds: int = 0) -> tuple[FastMessage, list[int]]:
        """The next message outside any transaction, with exactly `expect_fds` descriptors."""
        deadline = self._deadline()
        data, fds = self._read_frame(deadline)
        try:
            self._received = (self._received + 1) & _U32
            message_id, step = _HEADER.unpack_from(data)[2:]
            if step != _STEP_NONE:
                raise self._error(f"unexpected transaction message (step {step})", schema, "TransactionStep")
            if message_id != self._received:
                raise self._error(
                    f"unexpected non-transaction message id {message_id}, expected {self._received}",
                    schema,
                    "TransactionId",
                )
            return self._decode(schema, data, fds, expect_fds), fds
        except BaseException:
            _close_all(fds)
            raise

    def request(
        self, schema: FastSchema, reply_schema: FastSchema, fds: Sequence[int] = (), **values: Any
    ) -> FastMessage:
        """One transaction: the request, then its reply."""
        return self.receive_reply(self.send_request(schema, fds, **values), reply_schema)

    def receive_reply(self, transaction: int, reply_schema: FastSchema) -> FastMessage:
        """The reply (step 2, no descriptor) to the request `transaction`; replies to earlier
        requests and stale non-transaction messages are skipped, as SocketChannel skips them."""
        deadline = self._deadline()
        while True:
            data, received = self._read_frame(deadline)
            try:
                message_id, step = _HEADER.unpack_from(data)[2:]
                if step == _STEP_NONE:
                    continue  # a stale non-transaction message (not counted, as MessageChannel)
                distance = (message_id - transaction) & _U32
                if distance & 0x80000000:
                    continue  # the reply to an earlier transaction
                if distance:
                    raise self._error(
                        f"unexpected transaction id {message_id}, expected {transaction}",
                        reply_schema,
                        "TransactionId",
                    )
                if step != _STEP_REPLY:
                    raise self._error(
                        f"unexpected transaction step {step}, expected {_STEP_REPLY}",
                        reply_schema,
                        "TransactionStep",
                    )
                return self._decode(reply_schema, data, received, 0)
            finally:
                _close_all(received)

    # -- frames ----------------------------------------------------------------------------------

    def _deadline(self) -> float:
        return time.monotonic() + self.timeout

    def _checked(self, schema: FastSchema, fds: Sequence[int], values: dict[str, Any]) -> bytes:
        """The message built and its descriptors checked, before any id is used up."""
        if len(fds) > _MAX_FDS:
            raise ValueError(f"{self.name}: at most {_MAX_FDS} file descriptors per message")
        return schema.build(**values)

    def _write(self, message: bytes, message_id: int, step: int, fds: Sequence[int], deadline: float) -> None:
        data = bytearray(message)
        struct.pack_into("<II", data, 8, message_id, step)
        ancillary = (
            [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))] if fds else []
        )
        view = memoryview(data)
        sent = 0
        while sent < len(view):
            try:
                sent += self._sock.sendmsg([view[sent:]], ancillary, _SEND_FLAGS)
            except BlockingIOError:
                self._wait(select.POLLOUT, deadline)
                continue
            ancillary = []

    def _read_frame(self, deadline: float) -> tuple[bytes, list[int]]:
        fds: list[int] = []
        try:
            header = self._fill(MESSAGE_HEADER_SIZE, deadline, fds, first=True)
            size = _HEADER.unpack_from(header)[1]
            if not MESSAGE_HEADER_SIZE <= size <= MAX_MESSAGE_SIZE:
                raise ProtocolError(f"{self.name}: MessageSize {size} is out of bounds", field="MessageSize")
            return header + self._fill(size - MESSAGE_HEADER_SIZE, deadline, fds, first=False), fds
        except BaseException:
            _close_all(fds)
            raise

    def _fill(self, size: int, deadline: float, fds: list[int], *, first: bool) -> bytes:
        data = b""
        while len(data) < size:
            try:
                chunk, ancillary, flags, _ = self._sock.recvmsg(
                    size - len(data), _ANCILLARY_SIZE, _RECEIVE_FLAGS
                )
            except BlockingIOError:
                self._wait(select.POLLIN, deadline)
                continue
            except ConnectionResetError:
                chunk, ancillary, flags = b"", [], 0  # the peer went away: its end of the stream
            for level, kind, payload in ancillary:
                if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                    usable = len(payload) - len(payload) % 4
                    fds.extend(struct.unpack(f"{usable // 4}i", payload[:usable]))
            if flags & _socket.MSG_CTRUNC:
                raise ProtocolError(f"{self.name}: file descriptors were cut off (MSG_CTRUNC)")
            if not chunk:
                if first and not data:
                    raise ChannelClosed(f"{self.name}: closed by the peer")
                raise ProtocolError(f"{self.name}: truncated message: the peer closed the channel")
            data += chunk
        return data

    def _wait(self, events: int, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"{self.name}: no answer within {self.timeout:g} s")
        poller = select.poll()
        poller.register(self._sock.fileno(), events)
        poller.poll(max(1, int(remaining * 1000) + 1))

    def _decode(self, schema: FastSchema, data: bytes, fds: list[int], expect_fds: int) -> FastMessage:
        if len(fds) > _MAX_FDS:
            raise self._error(f"{len(fds)} file descriptors with one message", schema, "")
        if len(fds) != expect_fds:
            raise self._error(f"{len(fds)} file descriptor(s) arrived, expected {expect_fds}", schema, "")
        return schema.parse(data)

    def _error(self, text: str, schema: FastSchema, field: str) -> ProtocolError:
        where = f"Header.{field}" if field else None
        return ProtocolError(f"{self.name}: {text}", struct=schema.name, field=where)


def _close_all(fds: list[int]) -> None:
    while fds:
        fd = fds.pop()
        try:
            os.close(fd)
        except OSError:
            continue
