"""MessageChannel: WSL's SocketChannel (SocketChannel.h) over a connected stream socket.

It frames messages (``framing.py``), stamps and checks the header's transaction fields the way
SocketChannel does, enforces one sender and one receiver at a time, and, on AF_UNIX sockets,
carries file descriptors (SCM_RIGHTS) alongside a message where WSL would use hvsocket ports.
"""

from __future__ import annotations

import _socket
import _thread
import array
import itertools
import os
import select
import time

from pywsl.lean_context import suppress
from pywsl.wire import unix_sockets as socket
from pywsl.wire.errors import ChannelClosed, ProtocolError
from pywsl.wire.framing import (
    HEADER_SIZE,
    MESSAGE_TYPE_ANY,
    MessageHeader,
    check_message_size,
    check_outgoing,
    id_distance,
    parse_header,
    stamp_transaction,
)
from pywsl.wire.message_types import TransactionStep as TRANSACTION_STEP

TYPE_CHECKING = False  # `typing` would cost the guest's start: loaded only for MessageSchemaLike
if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import TracebackType
    from typing import Any, TypeVar, overload

__all__ = ["MAX_FDS", "MessageChannel", "MessageSchemaLike", "Transaction"]

# The most file descriptors a single message may carry. More is a protocol error.
MAX_FDS = 16
# Linux's SCM_MAX_FD: the receive buffer holds every descriptor one sendmsg can carry, so that a
# peer sending too many gets a clear error instead of a silently truncated set.
_SCM_MAX_FD = 253
_UNIX_ANCBUFSIZE = socket.CMSG_SPACE(_SCM_MAX_FD * 4) + socket.CMSG_SPACE(64)
_U32 = 0xFFFFFFFF

if TYPE_CHECKING:
    M = TypeVar("M")

Payload = bytes | bytearray | memoryview
_CMsg = tuple[int, int, bytes]


class _Ancillary:
    """File descriptors gathered while reading one frame, and whether the kernel cut any off."""

    __slots__ = ("fds", "truncated")

    def __init__(self) -> None:
        self.fds: list[int] = []
        self.truncated = False

    def close(self) -> None:
        _close_fds(self.fds)
        self.fds.clear()


if TYPE_CHECKING:
    from pywsl.wire.message_schema import MessageSchemaLike
else:

    def __getattr__(name: str) -> object:
        """``MessageSchemaLike`` (``pywsl.wire.message_schema``, with ``typing``), loaded the first
        time something asks for it."""
        if name != "MessageSchemaLike":
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        from pywsl.wire.message_schema import MessageSchemaLike

        globals()["MessageSchemaLike"] = MessageSchemaLike
        return MessageSchemaLike


def _deadline(timeout: float | None) -> float | None:
    if timeout is None:
        return None
    if timeout < 0 or timeout != timeout:  # (NaN; `math` is not loaded for it)
        raise ValueError(f"timeout must be a non-negative number of seconds, got {timeout!r}")
    return time.monotonic() + timeout


def _close_fds(fds: Sequence[int]) -> None:
    for fd in fds:
        with suppress(OSError):
            os.close(fd)


class _Exclusive:
    """``with``: `lock` taken for one sender or receiver, a RuntimeError when another one has it."""

    __slots__ = ("_lock", "_name", "_role")

    def __init__(self, lock: _thread.LockType, name: str, role: str) -> None:
        self._lock = lock
        self._name = name
        self._role = role

    def __enter__(self) -> None:
        if not self._lock.acquire(blocking=False):
            raise RuntimeError(f"incorrect channel usage on {self._name}: a second concurrent {self._role}")

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._lock.release()


class MessageChannel:
    """A WSL message channel over a connected stream socket (AF_UNIX mostly, any stream works).

    Sending: ``send(schema, fds=(), timeout=None, **values)`` builds the message with
    ``schema.build(**values)``; ``send(data)`` sends an already built message (its MessageSize must
    equal its length). A non-transactional send stamps TransactionStep 0 and TransactionId = the
    channel's count of such sends (the first is 1). Sends are complete or raise.

    Receiving: ``receive(schema=None, timeout=None, expect_fds=None)`` returns
    ``(message, fds)``: ``schema.parse`` of the frame (or the whole frame as ``bytes`` when schema
    is None), and the list of file descriptors that arrived with it (close-on-exec, now owned by
    the caller). ``expect_fds`` = the exact count the caller accepts (None: up to ``MAX_FDS``).
    Each frame received that way advances the channel's receive counter, and the frame must carry
    step 0 and that id, unless ``ignore_sequence_numbers()`` was called (a receive that times out
    or finds the channel closed does not advance it). A schema whose ``message_type`` is None or 0
    (LxMiniInitMessageAny) accepts any MessageType; otherwise the type must match (or be one of
    the schema's ``accepted_types`` when it has that attribute, as LX_MINI_INIT_MESSAGE does),
    and the frame must be at least ``schema.sizeof`` bytes. Whenever a received message is
    rejected or discarded, the descriptors that came with it are closed.

    Transactions: ``start_transaction(timeout)`` (initiator; ids 0, 1, 2, ... per channel) and
    ``receive_transaction(timeout)`` (responder; adopts the id of the first REQUEST it receives)
    return a ``Transaction`` whose ``send``/``receive`` count the steps (see ``Transaction``).
    ``request(schema, reply_schema, fds=(), timeout=None, **values)`` is one whole exchange.

    Raw I/O for WSL's unframed paths: ``send_raw(data, fds=())`` and ``receive_exact(n)``.

    Errors: ``ChannelClosed`` when the peer closed before a new frame (or before a raw read's
    first byte); ``ProtocolError`` for a malformed, truncated, unexpected or out-of-sequence
    message; ``TimeoutError`` when a timeout (seconds; None = wait forever) expires;
    ``RuntimeError`` when a second thread sends (or receives) while one already does, as WSL's
    try-lock; ``BrokenPipeError``/``ConnectionResetError`` from a send to a closed peer. After an
    error in the middle of a frame the direction is out of step and every later call on it
    raises ProtocolError.

    The channel owns the socket (``close()`` closes it) and puts it in blocking mode: timeouts
    are its own. Sent descriptors stay owned by the caller.
    """

    def __init__(self, sock: _socket.socket, *, name: str = "channel") -> None:
        if sock.type != socket.SOCK_STREAM:
            raise ValueError(f"{name}: a message channel needs a stream socket, got {sock.type!r}")
        sock.settimeout(None)
        self._sock = sock
        self.name = name
        self._unix = sock.family == socket.AF_UNIX
        self._ancbufsize = _UNIX_ANCBUFSIZE if self._unix else 0
        self._send_lock = _thread.allocate_lock()  # (`threading`'s Lock, without `threading`)
        self._receive_lock = _thread.allocate_lock()
        self._sent_messages = 0
        self._received_messages = 0
        self._transaction_seed = itertools.count()
        self._ignore_sequence = False
        self._frame_started = False
        self._send_broken: str | None = None
        self._receive_broken: str | None = None

    # -- plumbing -------------------------------------------------------------------------------

    def fileno(self) -> int:
        return self._sock.fileno()

    @property
    def closed(self) -> bool:
        return self._sock.fileno() < 0

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> MessageChannel:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<MessageChannel {self.name!r} fd={self._sock.fileno()}>"

    def ignore_sequence_numbers(self) -> None:
        """Stop checking the ids of non-transactional messages received (IgnoreSequenceNumbers)."""
        self._ignore_sequence = True

    # -- non-transactional messages ------------------------------------------------------------

    def send(
        self,
        message: MessageSchemaLike[object] | Payload,
        /,
        *,
        fds: Sequence[int] = (),
        timeout: float | None = None,
        **values: Any,
    ) -> None:
        """Send one non-transactional message (step 0, id = ++sent counter)."""
        self._send_message(message, values, fds, _deadline(timeout), TRANSACTION_STEP.NONE, 0)

    if TYPE_CHECKING:

        @overload
        def receive(
            self, schema: None = None, *, timeout: float | None = None, expect_fds: int | None = None
        ) -> tuple[bytes, list[int]]: ...

        @overload
        def receive(
            self,
            schema: MessageSchemaLike[M],
            *,
            timeout: float | None = None,
            expect_fds: int | None = None,
        ) -> tuple[M, list[int]]: ...

    def receive(
        self,
        schema: MessageSchemaLike[M] | None = None,
        *,
        timeout: float | None = None,
        expect_fds: int | None = None,
    ) -> tuple[M | bytes, list[int]]:
        """Receive one non-transactional message: ``(message, fds)``."""
        message, fds, _ = self._receive_message(
            schema, _deadline(timeout), expect_fds, TRANSACTION_STEP.NONE, 0
        )
        return message, fds

    # -- transactions ----------------------------------------------------------------------------

    def start_transaction(self, timeout: float | None = None) -> Transaction:
        """Begin a transaction as the initiator (StartTransaction): id = seed++, first send step 1."""
        transaction_id = next(self._transaction_seed) & _U32
        return Transaction(self, transaction_id, _deadline(timeout))

    def receive_transaction(self, timeout: float | None = None) -> Transaction:
        """Begin a transaction as the responder (ReceiveTransaction).

        Nothing is read yet: the transaction's first ``receive`` waits for a REQUEST with any id
        (discarding anything else) and adopts its id; its sends then carry steps 2, 3, ...
        """
        return Transaction(self, 0, _deadline(timeout))

    if TYPE_CHECKING:

        @overload
        def request(
            self,
            schema: MessageSchemaLike[object] | Payload,
            reply_schema: None,
            /,
            *,
            fds: Sequence[int] = (),
            timeout: float | None = None,
            **values: Any,
        ) -> bytes: ...

        @overload
        def request(
            self,
            schema: MessageSchemaLike[object] | Payload,
            reply_schema: MessageSchemaLike[M],
            /,
            *,
            fds: Sequence[int] = (),
            timeout: float | None = None,
            **values: Any,
        ) -> M: ...

    def request(
        self,
        schema: MessageSchemaLike[object] | Payload,
        reply_schema: MessageSchemaLike[M] | None,
        /,
        *,
        fds: Sequence[int] = (),
        timeout: float | None = None,
        **values: Any,
    ) -> M | bytes:
        """One transaction (SocketChannel::Transaction): send the request, return the reply.

        The reply must carry no file descriptors. ``timeout`` covers the whole exchange.
        """
        with self.start_transaction(timeout) as transaction:
            transaction.send(schema, fds=fds, **values)
            reply, _ = transaction.receive(reply_schema, expect_fds=0)
        return reply

    # -- raw I/O ---------------------------------------------------------------------------------

    def send_raw(self, data: Payload, *, fds: Sequence[int] = (), timeout: float | None = None) -> None:
        """Write bytes that are not a framed message (e.g. the export result int32)."""
        deadline = _deadline(timeout)
        ancillary = self._fd_ancillary(fds)
        with self._exclusive(self._send_lock, "sender"):
            self._write(memoryview(bytes(data)), ancillary, deadline)

    def receive_exact(self, size: int, *, timeout: float | None = None) -> bytes:
        """Read exactly ``size`` unframed bytes. EOF before the first byte raises ChannelClosed."""
        if size < 0:
            raise ValueError(f"cannot read {size} bytes")
        deadline = _deadline(timeout)
        with self._exclusive(self._receive_lock, "receiver"):
            self._check_receive_state()
            buffer = bytearray(size)
            ancillary = _Ancillary()
            try:
                got = self._fill(memoryview(buffer), deadline, ancillary)
                if got == 0 and size > 0:
                    raise ChannelClosed(f"{self.name}: closed by the peer")
                if got < size:
                    raise self._desync(f"truncated data: got {got} of {size} bytes before end of stream")
                self._frame_started = False
                if ancillary.truncated or ancillary.fds:
                    raise ProtocolError(f"{self.name}: unexpected file descriptors with raw data")
            except BaseException as error:
                ancillary.close()
                self._note_interrupted(error)
                raise
            return bytes(buffer)

    # -- internals: sending -----------------------------------------------------------------------

    def _send_message(
        self,
        message: MessageSchemaLike[object] | Payload,
        values: dict[str, Any],
        fds: Sequence[int],
        deadline: float | None,
        step: int,
        transaction_id: int,
    ) -> None:
        if isinstance(message, bytes | bytearray | memoryview):
            if values:
                raise TypeError("field values can only be given together with a schema")
            data = bytearray(message)
        else:
            data = bytearray(message.build(**values))
            if len(data) < message.sizeof:
                raise ValueError(f"{message.name}: built {len(data)} bytes, sizeof is {message.sizeof}")
        check_outgoing(data)
        ancillary = self._fd_ancillary(fds)
        with self._exclusive(self._send_lock, "sender"):
            if step == TRANSACTION_STEP.NONE:
                self._sent_messages = (self._sent_messages + 1) & _U32
                stamp_transaction(data, self._sent_messages, TRANSACTION_STEP.NONE)
            else:
                stamp_transaction(data, transaction_id, step)
            self._write(memoryview(data), ancillary, deadline)

    def _write(self, view: memoryview, ancillary: list[_CMsg], deadline: float | None) -> None:
        if self._send_broken is not None:
            raise ProtocolError(f"{self.name}: cannot send after an interrupted send ({self._send_broken})")
        if ancillary and not len(view):
            raise ValueError("file descriptors need at least one byte of data to travel with")
        sent = 0
        try:
            while sent < len(view):
                try:
                    count = self._sock.sendmsg(
                        [view[sent:]], ancillary, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL
                    )
                except BlockingIOError:
                    self._wait(select.POLLOUT, deadline, "send")
                    continue
                ancillary = []
                sent += count
        except BaseException as error:
            if sent:
                self._send_broken = f"{sent} of {len(view)} bytes sent: {error!r}"
            raise

    def _fd_ancillary(self, fds: Sequence[int]) -> list[_CMsg]:
        if not fds:
            return []
        if not self._unix:
            raise ValueError(f"{self.name}: file descriptors can only travel over AF_UNIX sockets")
        if len(fds) > MAX_FDS:
            raise ValueError(f"{self.name}: at most {MAX_FDS} file descriptors per message, got {len(fds)}")
        for fd in fds:
            if not isinstance(fd, int) or isinstance(fd, bool) or fd < 0:
                raise ValueError(f"{self.name}: not a file descriptor: {fd!r}")
        return [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]

    # -- internals: receiving ---------------------------------------------------------------------

    def _receive_message(
        self,
        schema: MessageSchemaLike[M] | None,
        deadline: float | None,
        expect_fds: int | None,
        step: int,
        transaction_id: int,
    ) -> tuple[M | bytes, list[int], MessageHeader]:
        expected = schema.name if schema is not None else None
        with self._exclusive(self._receive_lock, "receiver"):
            while True:
                data, ancillary = self._read_frame(deadline)
                if step == TRANSACTION_STEP.NONE:
                    # WSL counts before receiving; counting once a frame is in keeps a receive
                    # that timed out (or found the channel closed) from shifting the sequence.
                    self._received_messages = (self._received_messages + 1) & _U32
                try:
                    header = parse_header(data)
                    if self._accept(header, step, transaction_id, expected):
                        self._check_ancillary(ancillary, expected)
                        fds = ancillary.fds
                        return self._decode(schema, data, header, fds, expect_fds), fds, header
                except BaseException:
                    ancillary.close()
                    raise
                ancillary.close()

    def _check_ancillary(self, ancillary: _Ancillary, expected: str | None) -> None:
        if ancillary.truncated:
            raise self._error("file descriptors were cut off (MSG_CTRUNC)", expected, None)
        if len(ancillary.fds) > MAX_FDS:
            raise self._error(
                f"{len(ancillary.fds)} file descriptors with one message (at most {MAX_FDS})", expected, None
            )

    def _accept(self, header: MessageHeader, step: int, transaction_id: int, expected: str | None) -> bool:
        """SocketChannel's sequence rules: True = take it, False = discard it, or raise."""
        received_step = header.transaction_step
        if step == TRANSACTION_STEP.NONE:
            if self._ignore_sequence:
                return True
            if received_step != TRANSACTION_STEP.NONE:
                raise self._error(
                    f"unexpected transaction message (type {header.message_type}, step "
                    f"{received_step}) on a non-transaction receive",
                    expected,
                    "Header.TransactionStep",
                )
            if header.transaction_id != self._received_messages:
                raise self._error(
                    f"unexpected non-transaction message id {header.transaction_id}, "
                    f"expected {self._received_messages}",
                    expected,
                    "Header.TransactionId",
                )
            return True
        if received_step == TRANSACTION_STEP.NONE:
            return False  # a stale non-transaction message
        if step == TRANSACTION_STEP.REQUEST:
            return received_step == TRANSACTION_STEP.REQUEST
        distance = id_distance(header.transaction_id, transaction_id)
        if distance < 0:
            return False  # a stale message of an earlier transaction
        if distance > 0:
            raise self._error(
                f"unexpected transaction id {header.transaction_id}, expected {transaction_id}",
                expected,
                "Header.TransactionId",
            )
        if received_step != step:
            raise self._error(
                f"unexpected transaction step {received_step}, expected {step}",
                expected,
                "Header.TransactionStep",
            )
        return True

    def _decode(
        self,
        schema: MessageSchemaLike[M] | None,
        data: bytes,
        header: MessageHeader,
        fds: list[int],
        expect_fds: int | None,
    ) -> M | bytes:
        expected = schema.name if schema is not None else None
        if expect_fds is not None and len(fds) != expect_fds:
            raise self._error(f"{len(fds)} file descriptor(s) arrived, expected {expect_fds}", expected, None)
        if schema is None:
            return data
        if len(data) < schema.sizeof:
            raise self._error(
                f"message of {len(data)} bytes (type {header.message_type}) is shorter than "
                f"sizeof {schema.sizeof}",
                expected,
                "Header.MessageSize",
            )
        wanted = schema.message_type
        if wanted is not None and wanted != MESSAGE_TYPE_ANY:
            accepted = getattr(schema, "accepted_types", None) or {wanted}
            if header.message_type not in accepted:
                raise self._error(
                    f"unexpected MessageType {header.message_type}, expected "
                    + " or ".join(str(t) for t in sorted(accepted)),
                    expected,
                    "Header.MessageType",
                )
        return schema.parse(data)

    def _read_frame(self, deadline: float | None) -> tuple[bytes, _Ancillary]:
        """RecvMessage: one whole frame and the descriptors that came with it."""
        self._check_receive_state()
        ancillary = _Ancillary()
        try:
            header = bytearray(HEADER_SIZE)
            got = self._fill(memoryview(header), deadline, ancillary)
            if got == 0:
                raise ChannelClosed(f"{self.name}: closed by the peer")
            if got < HEADER_SIZE:
                raise self._desync(f"truncated header: {got} of {HEADER_SIZE} bytes before end of stream")
            size = parse_header(header).message_size
            try:
                check_message_size(size)
            except ProtocolError as error:
                raise self._desync(str(error)) from None
            frame = bytearray(size)
            frame[:HEADER_SIZE] = header
            got = self._fill(memoryview(frame)[HEADER_SIZE:], deadline, ancillary)
            if got < size - HEADER_SIZE:
                raise self._desync(
                    f"truncated message: {HEADER_SIZE + got} of {size} bytes before end of stream"
                )
            self._frame_started = False
            return bytes(frame), ancillary
        except BaseException as error:
            ancillary.close()
            self._note_interrupted(error)
            raise

    def _note_interrupted(self, error: BaseException) -> None:
        """After an error in the middle of a frame the byte stream is out of step for good."""
        if self._frame_started and self._receive_broken is None:
            self._receive_broken = f"interrupted frame: {error!r}"
        self._frame_started = False

    def _fill(self, view: memoryview, deadline: float | None, ancillary: _Ancillary) -> int:
        """Read into ``view`` until it is full or the stream ends; returns the byte count."""
        filled = 0
        while filled < len(view):
            try:
                count, ancdata, flags, _ = self._sock.recvmsg_into(
                    [view[filled:]], self._ancbufsize, socket.MSG_DONTWAIT | socket.MSG_CMSG_CLOEXEC
                )
            except BlockingIOError:
                self._wait(select.POLLIN, deadline, "receive")
                continue
            except ConnectionResetError:
                return filled
            self._collect_fds(ancdata, flags, ancillary)
            if count == 0:
                return filled
            filled += count
            self._frame_started = True
        return filled

    @staticmethod
    def _collect_fds(ancdata: list[_CMsg], flags: int, ancillary: _Ancillary) -> None:
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                received = array.array("i")
                received.frombytes(payload[: len(payload) - len(payload) % received.itemsize])
                ancillary.fds.extend(received)
        if flags & socket.MSG_CTRUNC:
            ancillary.truncated = True

    def _wait(self, events: int, deadline: float | None, what: str) -> None:
        timeout_ms: int | None = None
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.name}: {what} timed out")
            timeout_ms = max(1, -int(-remaining * 1000 // 1))  # rounded up
        poller = select.poll()
        poller.register(self._sock.fileno(), events)
        if not poller.poll(timeout_ms):
            raise TimeoutError(f"{self.name}: {what} timed out")

    def _check_receive_state(self) -> None:
        if self._receive_broken is not None:
            raise ProtocolError(
                f"{self.name}: cannot receive after an interrupted frame ({self._receive_broken})"
            )

    def _desync(self, message: str) -> ProtocolError:
        """A framing error that leaves the receive direction out of step."""
        self._receive_broken = message
        return ProtocolError(f"{self.name}: {message}")

    def _error(self, message: str, struct: str | None, field: str | None) -> ProtocolError:
        return ProtocolError(f"{message} on {self.name}", struct=struct, field=field)

    def _exclusive(self, lock: _thread.LockType, role: str) -> _Exclusive:
        return _Exclusive(lock, self.name, role)


class Transaction:
    """One WSL transaction on a channel (``wsl::shared::Transaction``).

    Initiator (``channel.start_transaction()``)::

        with channel.start_transaction(timeout=5) as transaction:
            transaction.send(request_schema, fds=[...], **values)   # step 1
            reply, fds = transaction.receive(reply_schema)          # expects step 2

    Responder (``channel.receive_transaction()``)::

        transaction = channel.receive_transaction()
        request, fds = transaction.receive()       # a step-1 message with any id; id adopted
        transaction.send(reply_schema, **values)   # step 2, then 3, ...

    Every send or receive moves the step on by one. While waiting, stale step-0 messages are
    discarded; a responder waiting for its request discards other steps; an initiator discards
    replies to older transactions and rejects a newer id or a wrong step (ProtocolError). The
    timeout given when the transaction began is a deadline for all of its operations. Leaving the
    ``with`` block ends the transaction; using it afterwards raises RuntimeError.
    """

    def __init__(self, channel: MessageChannel, transaction_id: int, deadline: float | None) -> None:
        self._channel = channel
        self._id = transaction_id
        self._step: int = TRANSACTION_STEP.REQUEST
        self._deadline = deadline
        self._finished = False

    @property
    def id(self) -> int:
        return self._id

    @property
    def step(self) -> int:
        """The step of the next send or receive."""
        return self._step

    def __enter__(self) -> Transaction:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._finished = True

    def send(
        self,
        message: MessageSchemaLike[object] | Payload,
        /,
        *,
        fds: Sequence[int] = (),
        **values: Any,
    ) -> None:
        self._check_open()
        self._channel._send_message(message, values, fds, self._deadline, self._step, self._id)
        self._step += 1

    if TYPE_CHECKING:

        @overload
        def receive(
            self, schema: None = None, *, expect_fds: int | None = None
        ) -> tuple[bytes, list[int]]: ...

        @overload
        def receive(
            self, schema: MessageSchemaLike[M], *, expect_fds: int | None = None
        ) -> tuple[M, list[int]]: ...

    def receive(
        self, schema: MessageSchemaLike[M] | None = None, *, expect_fds: int | None = None
    ) -> tuple[M | bytes, list[int]]:
        self._check_open()
        message, fds, header = self._channel._receive_message(
            schema, self._deadline, expect_fds, self._step, self._id
        )
        if self._step == TRANSACTION_STEP.REQUEST:
            self._id = header.transaction_id
        self._step += 1
        return message, fds

    def _check_open(self) -> None:
        if self._finished:
            raise RuntimeError(f"transaction {self._id} on {self._channel.name} has already ended")

    def __repr__(self) -> str:
        return f"<Transaction id={self._id} step={self._step} on {self._channel.name!r}>"
