"""MessageChannel: framing, sequence numbers, transactions and descriptor passing on real sockets."""

from __future__ import annotations

import contextlib
import fcntl
import os
import resource
import select
import signal
import socket
import struct
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from pywsl.wire import schema
from pywsl.wire.channel import MAX_FDS, MessageChannel
from pywsl.wire.errors import ChannelClosed, ProtocolError
from pywsl.wire.framing import HEADER, MAX_MESSAGE_SIZE, parse_header

# A short bound for every blocking call, so that a bug fails a test instead of hanging it.
T = 5.0


@dataclass(frozen=True)
class FakeSchema:
    """A minimal schema: header + uint32 Value (+ optional UTF-8 text), like RESULT_MESSAGE."""

    name: str
    message_type: int | None
    sizeof: int = 20

    def build(self, **values: Any) -> bytes:
        text = str(values.get("Text", "")).encode()
        body = struct.pack("<I", values.get("Value", 0)) + text
        size = max(16 + len(body), self.sizeof)
        body = body.ljust(size - 16, b"\0")
        return HEADER.pack(self.message_type or 0, size, 0, 0) + body

    def parse(self, data: bytes) -> dict[str, Any]:
        header = parse_header(data)
        return {
            "type": header.message_type,
            "id": header.transaction_id,
            "step": header.transaction_step,
            "Value": struct.unpack_from("<I", data, 16)[0],
            "Text": data[20:].rstrip(b"\0").decode(),
        }


PING = FakeSchema("PING", 7)
PONG = FakeSchema("PONG", 8)
ANY = FakeSchema("ANY", 0, sizeof=16)


def frame(message_type: int, transaction_id: int, step: int, body: bytes = b"\0\0\0\0") -> bytes:
    return HEADER.pack(message_type, 16 + len(body), transaction_id, step) + body


@pytest.fixture
def pair() -> Iterator[tuple[MessageChannel, MessageChannel]]:
    left, right = socket.socketpair()
    with MessageChannel(left, name="left") as a, MessageChannel(right, name="right") as b:
        yield a, b


@pytest.fixture
def raw_pair() -> Iterator[tuple[socket.socket, MessageChannel]]:
    """A plain socket to write hand-made bytes into, and the channel that reads them."""
    left, right = socket.socketpair()
    with left, MessageChannel(right, name="reader") as channel:
        yield left, channel


@contextlib.contextmanager
def forked(child: Callable[[], None], *, close_in_parent: tuple[socket.socket, ...] = ()) -> Iterator[int]:
    """Run ``child`` in a forked process; on leaving, require it to exit 0 within the time bound."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            child()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    for sock in close_in_parent:
        sock.close()
    try:
        yield pid
    finally:
        deadline = time.monotonic() + T
        status = None
        while status is None:
            done, raw = os.waitpid(pid, os.WNOHANG)
            if done:
                status = raw
            elif time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail("child process did not finish")
            else:
                time.sleep(0.005)
    assert os.waitstatus_to_exitcode(status) == 0


@dataclass
class Pipe:
    """A pipe whose write end a test may close early; the fixture closes whatever is left."""

    read_end: int
    write_end: int

    def close_write(self) -> None:
        os.close(self.write_end)
        self.write_end = -1


@pytest.fixture
def pipe() -> Iterator[Pipe]:
    ends = Pipe(*os.pipe())
    try:
        yield ends
    finally:
        for fd in (ends.read_end, ends.write_end):
            if fd >= 0:
                os.close(fd)


def read_eof(fd: int) -> bool:
    """True when every write end of the pipe ``fd`` reads from has been closed."""
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 1) == b""
    except BlockingIOError:
        return False


# -- round trips and sequence numbers --------------------------------------------------------------


def test_round_trip_stamps_non_transaction_ids(pair: tuple[MessageChannel, MessageChannel]) -> None:
    a, b = pair
    a.send(PING, Value=1)
    a.send(PING, Value=2, Text="hello")
    a.send(PING.build(Value=3))
    for expected_id, value in ((1, 1), (2, 2), (3, 3)):
        message, fds = b.receive(PING, timeout=T)
        assert fds == []
        assert (message["id"], message["step"], message["Value"]) == (expected_id, 0, value)
    b.send(PONG, Value=9)
    reply, _ = a.receive(PONG, timeout=T)
    assert reply["id"] == 1  # each direction counts on its own


def test_receive_without_schema_returns_the_whole_frame(pair: tuple[MessageChannel, MessageChannel]) -> None:
    a, b = pair
    a.send(PING, Value=5, Text="x" * 100)
    data, _ = b.receive(timeout=T)
    assert isinstance(data, bytes) and len(data) == 120
    assert parse_header(data) == (7, 120, 1, 0)
    a.send(PONG, Value=1)
    message, _ = b.receive(ANY, timeout=T)  # message_type 0 accepts any type
    assert message["type"] == 8


def test_sequence_mismatch_is_rejected(raw_pair: tuple[socket.socket, MessageChannel]) -> None:
    writer, channel = raw_pair
    writer.sendall(frame(7, 2, 0))  # the first message must carry id 1
    with pytest.raises(ProtocolError, match=r"PING\.Header\.TransactionId.*id 2, expected 1"):
        channel.receive(PING, timeout=T)
    writer.sendall(frame(7, 2, 0))  # the counter moved on, as in WSL
    assert channel.receive(PING, timeout=T)[0]["id"] == 2
    writer.sendall(frame(7, 3, 1))  # a transaction step on a non-transaction receive
    with pytest.raises(ProtocolError, match="TransactionStep"):
        channel.receive(PING, timeout=T)


def test_ignore_sequence_numbers(raw_pair: tuple[socket.socket, MessageChannel]) -> None:
    writer, channel = raw_pair
    channel.ignore_sequence_numbers()
    writer.sendall(frame(7, 0xDEADBEEF, 0) + frame(7, 5, 3))
    assert channel.receive(PING, timeout=T)[0]["id"] == 0xDEADBEEF
    assert channel.receive(PING, timeout=T)[0]["step"] == 3


def test_type_and_size_checks_name_the_struct(raw_pair: tuple[socket.socket, MessageChannel]) -> None:
    writer, channel = raw_pair
    writer.sendall(frame(8, 1, 0))
    with pytest.raises(
        ProtocolError, match=r"^PING\.Header\.MessageType: unexpected MessageType 8, expected 7"
    ):
        channel.receive(PING, timeout=T)
    writer.sendall(frame(7, 2, 0, b"\1\2"))  # 18 bytes < sizeof 20
    with pytest.raises(ProtocolError, match=r"^PING\.Header\.MessageSize: .*shorter than sizeof 20"):
        channel.receive(PING, timeout=T)
    writer.sendall(frame(7, 3, 0))
    assert channel.receive(PING, timeout=T)[0]["id"] == 3  # still in step after rejections


@dataclass(frozen=True)
class SharedStructSchema(FakeSchema):
    """One struct for several message types, as LX_MINI_INIT_MESSAGE (LaunchInit, Import, Export)."""

    accepted_types: frozenset[int] = frozenset()


def test_schema_accepted_types(raw_pair: tuple[socket.socket, MessageChannel]) -> None:
    writer, channel = raw_pair
    shared = SharedStructSchema("SHARED", 29, accepted_types=frozenset({29, 30, 32}))
    writer.sendall(frame(30, 1, 0) + frame(31, 2, 0))
    assert channel.receive(shared, timeout=T)[0]["type"] == 30
    with pytest.raises(ProtocolError, match="unexpected MessageType 31, expected 29 or 30 or 32"):
        channel.receive(shared, timeout=T)


def test_outgoing_messages_are_checked(pair: tuple[MessageChannel, MessageChannel]) -> None:
    a, _ = pair
    with pytest.raises(ValueError, match="does not match"):
        a.send(HEADER.pack(7, 99, 0, 0) + b"\0" * 4)
    with pytest.raises(ValueError, match="at least"):
        a.send(b"short")
    with pytest.raises(TypeError):
        a.send(frame(7, 0, 0), Value=1)


# -- transactions ---------------------------------------------------------------------------------


def test_transaction_ids_and_steps(pair: tuple[MessageChannel, MessageChannel]) -> None:
    a, b = pair
    for expected_id in range(3):
        with a.start_transaction(timeout=T) as transaction:
            assert transaction.id == expected_id
            transaction.send(PING, Value=expected_id)
            responder = b.receive_transaction(timeout=T)
            request, _ = responder.receive(PING)
            assert (request["id"], request["step"]) == (expected_id, 1)
            assert responder.id == expected_id
            responder.send(PONG, Value=100)
            responder.send(PONG, Value=101)
            first, _ = transaction.receive(PONG)
            second, _ = transaction.receive(PONG)
            assert (first["id"], first["step"], second["step"]) == (expected_id, 2, 3)
            transaction.send(PING, Value=1)  # step 4 from the initiator
            follow_up, _ = responder.receive(PING)
            assert follow_up["step"] == 4
    with pytest.raises(RuntimeError, match="ended"):
        transaction.send(PING)
    # Transactions do not consume the non-transaction counters.
    a.send(PING)
    assert b.receive(PING, timeout=T)[0]["id"] == 1


def test_responder_discards_everything_but_a_request(raw_pair: tuple[socket.socket, MessageChannel]) -> None:
    writer, channel = raw_pair
    writer.sendall(frame(7, 1, 0) + frame(7, 4, 2) + frame(7, 9, 3) + frame(7, 41, 1, struct.pack("<I", 77)))
    transaction = channel.receive_transaction(timeout=T)
    request, _ = transaction.receive(PING)
    assert (request["id"], request["Value"]) == (41, 77)
    assert (transaction.id, transaction.step) == (41, 2)


def test_initiator_skips_stale_replies_and_rejects_the_future(
    raw_pair: tuple[socket.socket, MessageChannel],
) -> None:
    writer, channel = raw_pair
    channel.start_transaction()  # id 0, abandoned
    channel.start_transaction()  # id 1, abandoned
    transaction = channel.start_transaction(timeout=T)
    assert transaction.id == 2
    transaction.send(PING)
    writer.recv(100)
    # A stale step-0 message and replies of older transactions are skipped.
    writer.sendall(frame(8, 7, 0) + frame(8, 0, 2) + frame(8, 1, 2) + frame(8, 2, 2, struct.pack("<I", 5)))
    reply, _ = transaction.receive(PONG)
    assert reply["Value"] == 5
    writer.sendall(frame(8, 3, 3))  # a newer transaction id
    with pytest.raises(ProtocolError, match="unexpected transaction id 3, expected 2"):
        transaction.receive(PONG)
    writer.sendall(frame(8, 2, 5))  # right id, wrong step
    with pytest.raises(ProtocolError, match="unexpected transaction step 5, expected 3"):
        transaction.receive(PONG)


def test_transaction_ids_wrap_like_uint32(raw_pair: tuple[socket.socket, MessageChannel]) -> None:
    writer, channel = raw_pair
    transaction = channel.receive_transaction(timeout=T)
    writer.sendall(frame(7, 0xFFFFFFFF, 1))
    transaction.receive(PING)
    writer.sendall(frame(7, 0xFFFFFFFE, 2) + frame(7, 0xFFFFFFFF, 2))  # the first one is older: skipped
    assert transaction.receive(PING)[0]["id"] == 0xFFFFFFFF
    writer.sendall(frame(7, 0, 3))  # 0 comes after 0xFFFFFFFF: from the future
    with pytest.raises(ProtocolError, match="unexpected transaction id 0"):
        transaction.receive(PING)


def test_request_across_processes() -> None:
    parent_sock, child_sock = socket.socketpair()

    def serve() -> None:
        parent_sock.close()
        with MessageChannel(child_sock, name="server") as server:
            while True:
                transaction = server.receive_transaction(timeout=T)
                try:
                    request, fds = transaction.receive(PING)
                except ChannelClosed:
                    return
                for fd in fds:
                    os.write(fd, b"via fd %d" % request["Value"])
                    os.close(fd)
                transaction.send(PONG, Value=request["Value"] * 2, Text=request["Text"].upper())

    with forked(serve, close_in_parent=(child_sock,)), MessageChannel(parent_sock, name="client") as client:
        for value in range(5):
            reply = client.request(PING, PONG, timeout=T, Value=value, Text=f"n{value}")
            assert (reply["Value"], reply["Text"], reply["id"], reply["step"]) == (
                value * 2,
                f"N{value}",
                value,
                2,
            )
        read_end, write_end = os.pipe()
        with open(read_end, "rb") as reader:
            reply = client.request(PING, PONG, fds=[write_end], timeout=T, Value=42)
            os.close(write_end)
            assert reader.read() == b"via fd 42"
        assert reply["Value"] == 84


# -- file descriptors -----------------------------------------------------------------------------


def test_fd_passing_delivers_a_usable_cloexec_descriptor(
    pair: tuple[MessageChannel, MessageChannel], pipe: Pipe
) -> None:
    a, b = pair
    a.send(PING, fds=[pipe.write_end, pipe.read_end], Value=1)
    message, fds = b.receive(PING, timeout=T, expect_fds=2)
    assert len(fds) == 2 and message["Value"] == 1
    for fd in fds:
        assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    os.write(fds[0], b"through")
    assert os.read(pipe.read_end, 100) == b"through"
    for fd in fds:
        os.close(fd)
    # A message without descriptors that follows is not mixed up with them.
    a.send(PING, Value=2)
    assert b.receive(PING, timeout=T) == ({**message, "id": 2, "Value": 2}, [])


def test_fds_of_a_rejected_message_are_closed(
    pair: tuple[MessageChannel, MessageChannel], pipe: Pipe
) -> None:
    a, b = pair
    a.send(PONG, fds=[pipe.write_end])  # the receiver expects PING
    a.send(PING, fds=[pipe.write_end])  # right type, but the receiver wants no descriptors
    pipe.close_write()
    with pytest.raises(ProtocolError, match="unexpected MessageType"):
        b.receive(PING, timeout=T)
    with pytest.raises(ProtocolError, match=r"1 file descriptor.*expected 0"):
        b.receive(PING, timeout=T, expect_fds=0)
    assert read_eof(pipe.read_end)  # every copy of the write end is gone


def test_fds_of_discarded_messages_are_closed(
    pair: tuple[MessageChannel, MessageChannel], pipe: Pipe
) -> None:
    a, b = pair
    a.send(PING, fds=[pipe.write_end])  # a step-0 message: stale for a transaction receive
    with a.start_transaction() as transaction:
        transaction.send(PING, Value=3)
    pipe.close_write()
    request, fds = b.receive_transaction(timeout=T).receive(PING)
    assert request["Value"] == 3 and fds == []
    assert read_eof(pipe.read_end)


def test_too_many_fds_are_closed_and_rejected(
    raw_pair: tuple[socket.socket, MessageChannel], pipe: Pipe
) -> None:
    writer, channel = raw_pair
    fds = [pipe.write_end] * (MAX_FDS + 1)
    writer.sendmsg(
        [frame(7, 1, 0)], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))]
    )
    pipe.close_write()
    with pytest.raises(ProtocolError, match=f"{MAX_FDS + 1} file descriptors"):
        channel.receive(PING, timeout=T)
    assert read_eof(pipe.read_end)
    writer.sendall(frame(7, 2, 0))
    assert channel.receive(PING, timeout=T)[0]["id"] == 2  # still in step


def test_sender_refuses_bad_fd_lists(pair: tuple[MessageChannel, MessageChannel]) -> None:
    a, _ = pair
    with pytest.raises(ValueError, match=f"at most {MAX_FDS}"):
        a.send(PING, fds=[0] * (MAX_FDS + 1))
    with pytest.raises(ValueError, match="not a file descriptor"):
        a.send(PING, fds=[-1])


def test_truncated_ancillary_data_is_a_protocol_error() -> None:
    parent_sock, child_sock = socket.socketpair()
    read_end, write_end = os.pipe()

    def receive_with_few_free_descriptors() -> None:
        parent_sock.close()
        os.close(write_end)
        with MessageChannel(child_sock, name="limited") as channel:
            # Fill the gaps in the descriptor table, so that the limit below leaves exactly 2 free.
            in_use = {int(name) for name in os.listdir("/proc/self/fd")}
            null = os.open("/dev/null", os.O_RDONLY)
            for gap in set(range(max(in_use))) - in_use - {null}:
                os.dup2(null, gap)
            before = sorted(os.listdir("/proc/self/fd"))
            highest = max(int(name) for name in before)
            resource.setrlimit(
                resource.RLIMIT_NOFILE, (highest + 3, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
            )
            try:
                channel.receive(PING, timeout=T)
            except ProtocolError as error:
                assert "MSG_CTRUNC" in str(error)
            else:
                raise AssertionError("truncated descriptors were accepted")
            assert sorted(os.listdir("/proc/self/fd")) == before  # the ones that did arrive are closed
            assert channel.receive(PING, timeout=T)[0]["id"] == 2  # the frame itself was consumed

    with forked(receive_with_few_free_descriptors, close_in_parent=(child_sock,)):
        with MessageChannel(parent_sock, name="sender") as sender:
            sender.send(PING, fds=[write_end] * 8)
            sender.send(PING)
        os.close(write_end)
    assert read_eof(read_end)
    os.close(read_end)


def test_fds_need_a_unix_socket() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        client_sock = socket.create_connection(server.getsockname(), timeout=T)
        accepted, _ = server.accept()
        with MessageChannel(client_sock, name="tcp-client") as client, MessageChannel(accepted) as peer:
            with pytest.raises(ValueError, match="AF_UNIX"):
                client.send(PING, fds=[0])
            client.send(PING, Value=11, Text="over tcp")
            message, fds = peer.receive(PING, timeout=T)
            assert (message["Value"], message["Text"], fds) == (11, "over tcp", [])
            peer.send(PONG, Value=3)
            assert client.receive(PONG, timeout=T)[0]["Value"] == 3


# -- framing errors -------------------------------------------------------------------------------


def test_eof_before_a_header_is_a_clean_close(raw_pair: tuple[socket.socket, MessageChannel]) -> None:
    writer, channel = raw_pair
    writer.close()
    with pytest.raises(ChannelClosed):
        channel.receive(PING, timeout=T)
    with pytest.raises(ChannelClosed):
        channel.receive_exact(4, timeout=T)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (HEADER.pack(7, 15, 1, 0), "MessageSize: 15 is smaller than the 16-byte header"),
        (HEADER.pack(7, 0, 1, 0), "MessageSize: 0 is smaller"),
        (HEADER.pack(7, MAX_MESSAGE_SIZE + 1, 1, 0), "exceeds the 16777216-byte limit"),
        (HEADER.pack(7, 20, 1, 0)[:7], "truncated header: 7 of 16"),
        (HEADER.pack(7, 100, 1, 0) + b"abc", "truncated message: 19 of 100"),
    ],
)
def test_framing_errors(raw_pair: tuple[socket.socket, MessageChannel], data: bytes, match: str) -> None:
    writer, channel = raw_pair
    writer.sendall(data)
    writer.shutdown(socket.SHUT_WR)
    with pytest.raises(ProtocolError, match=match):
        channel.receive(PING, timeout=T)
    # The stream is out of step now: later receives fail at once instead of misreading it.
    with pytest.raises(ProtocolError, match="interrupted"):
        channel.receive(PING, timeout=T)


def test_largest_frame_is_accepted(pair: tuple[MessageChannel, MessageChannel]) -> None:
    a, b = pair
    big = FakeSchema("BIG", 9, sizeof=MAX_MESSAGE_SIZE)
    errors: list[BaseException] = []

    def send() -> None:
        try:
            a.send(big, timeout=T)
        except BaseException as error:
            errors.append(error)

    sender = threading.Thread(target=send)
    sender.start()
    data, _ = b.receive(timeout=T)
    sender.join(T)
    assert not errors and len(data) == MAX_MESSAGE_SIZE


def test_receive_timeout_keeps_the_channel_usable(pair: tuple[MessageChannel, MessageChannel]) -> None:
    a, b = pair
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        b.receive(PING, timeout=0.05)
    assert time.monotonic() - start < 1
    a.send(PING, Value=4)
    assert b.receive(PING, timeout=T)[0]["Value"] == 4


def test_timeout_inside_a_frame_breaks_the_receive_side(
    raw_pair: tuple[socket.socket, MessageChannel],
) -> None:
    writer, channel = raw_pair
    writer.sendall(HEADER.pack(7, 40, 1, 0))
    with pytest.raises(TimeoutError):
        channel.receive(PING, timeout=0.05)
    writer.sendall(b"\0" * 24)
    with pytest.raises(ProtocolError, match="interrupted"):
        channel.receive(PING, timeout=T)


def test_transaction_deadline_covers_every_step(pair: tuple[MessageChannel, MessageChannel]) -> None:
    a, _ = pair
    transaction = a.start_transaction(timeout=0.05)
    transaction.send(PING)
    time.sleep(0.06)
    with pytest.raises(TimeoutError):
        transaction.receive(PONG)


def test_send_timeout_and_interrupted_send(pair: tuple[MessageChannel, MessageChannel]) -> None:
    a, _ = pair
    big = FakeSchema("BIG", 9, sizeof=8 * 1024 * 1024)  # more than the socket buffers hold
    with pytest.raises(TimeoutError):
        a.send(big, timeout=0.05)
    with pytest.raises(ProtocolError, match="interrupted send"):
        a.send(PING, timeout=T)


def test_send_to_a_closed_peer(pair: tuple[MessageChannel, MessageChannel]) -> None:
    a, b = pair
    b.close()
    assert b.closed and b.fileno() == -1
    with pytest.raises(BrokenPipeError):
        a.send(PING, timeout=T)


# -- raw helpers ----------------------------------------------------------------------------------


def test_raw_int32_after_messages(pair: tuple[MessageChannel, MessageChannel]) -> None:
    a, b = pair
    a.send(PING, Value=1)
    a.send_raw(struct.pack("<i", -2))
    a.send(PING, Value=2)
    assert b.receive(PING, timeout=T)[0]["Value"] == 1
    assert struct.unpack("<i", b.receive_exact(4, timeout=T)) == (-2,)
    assert b.receive(PING, timeout=T)[0]["id"] == 2
    assert b.receive_exact(0) == b""


def test_raw_read_truncated(raw_pair: tuple[socket.socket, MessageChannel]) -> None:
    writer, channel = raw_pair
    writer.sendall(b"\1\2")
    writer.close()
    with pytest.raises(ProtocolError, match="truncated data: got 2 of 4"):
        channel.receive_exact(4, timeout=T)


# -- one sender and one receiver at a time --------------------------------------------------------


def test_concurrent_senders_are_refused(pair: tuple[MessageChannel, MessageChannel]) -> None:
    """A second sender is refused while a first one is blocked in send (the peer is not reading);
    the first one completes once the peer reads."""
    a, b = pair
    big = FakeSchema("BIG", 9, sizeof=8 * 1024 * 1024)
    outcome: list[BaseException] = []

    def blocked_send() -> None:
        try:
            a.send(big, timeout=4 * T)
        except BaseException as error:
            outcome.append(error)

    sender = threading.Thread(target=blocked_send)
    sender.start()
    try:
        # The first bytes reaching the peer show the first sender inside send(): it holds the
        # channel until all 8 MiB are written, which cannot happen while nobody reads.
        readable, _, _ = select.select([b.fileno()], [], [], 2 * T)
        assert readable and sender.is_alive()
        with pytest.raises(RuntimeError, match="second concurrent sender"):
            a.send_raw(b"", timeout=0)
        message, _fds = b.receive(big, timeout=2 * T)
        assert message["type"] == 9
    finally:
        sender.join(4 * T)
    assert not sender.is_alive() and outcome == []


def test_concurrent_receivers_are_refused(pair: tuple[MessageChannel, MessageChannel]) -> None:
    a, b = pair
    received: list[object] = []
    receiver = threading.Thread(target=lambda: received.append(b.receive(PING, timeout=T)))
    receiver.start()
    try:
        refused = None
        deadline = time.monotonic() + 2
        while refused is None and time.monotonic() < deadline:
            try:
                b.receive(PING, timeout=0)
            except RuntimeError as error:
                refused = error
            except TimeoutError:
                pass
        assert refused is not None and "second concurrent receiver" in str(refused)
    finally:
        a.send(PING, Value=8)
        receiver.join(T)
    assert len(received) == 1


# -- with the real WSL schemas --------------------------------------------------------------------


def test_real_schemas_give_wsl_bytes(pair: tuple[MessageChannel, MessageChannel]) -> None:
    host, init = pair
    create_session = schema("LX_INIT_CREATE_SESSION")
    create_session_response = schema("LX_INIT_CREATE_SESSION_RESPONSE")
    exit_status = schema("LX_INIT_PROCESS_EXIT_STATUS")
    for _ in range(3):
        host.start_transaction()  # the fourth transaction of a channel has id 3
    with host.start_transaction(timeout=T) as transaction:
        transaction.send(create_session, ConsoleId=0x600000001)
        responder = init.receive_transaction(timeout=T)
        request, _ = responder.receive()
        assert request.hex() == "020000001800000003000000010000000100000006000000"
        responder.send(create_session_response, Port=0xC491)
        reply, _ = transaction.receive()
        assert reply.hex() == "0300000014000000030000000200000091c40000"
        assert create_session_response.parse(reply).Port == 0xC491
    for code in (0, 1, 2, 127):
        init.send(exit_status, ExitCode=code)  # the fourth non-transaction message has id 4
    for _ in range(3):
        host.receive(exit_status, timeout=T)
    data, _ = host.receive(timeout=T)
    assert data.hex() == "090000001400000004000000000000007f000000"


def test_real_schema_mismatch_names_the_struct(pair: tuple[MessageChannel, MessageChannel]) -> None:
    a, b = pair
    a.send(schema("RESULT_MESSAGE<uint32_t>"), Result=1)
    with pytest.raises(
        ProtocolError, match=r"^LX_INIT_PROCESS_EXIT_STATUS\.Header\.MessageType: .* 78, expected 9"
    ):
        b.receive(schema("LX_INIT_PROCESS_EXIT_STATUS"), timeout=T)


def test_create_session_across_processes() -> None:
    """The host asks init for a session leader, handing it the leader's channel end; the leader
    reports an exit status on that channel."""
    host_sock, init_sock = socket.socketpair()
    leader_host_end, leader_init_end = socket.socketpair()

    def init() -> None:
        host_sock.close()
        leader_host_end.close()
        leader_init_end.close()
        with MessageChannel(init_sock, name="init") as channel:
            transaction = channel.receive_transaction(timeout=T)
            request, fds = transaction.receive(schema("LX_INIT_CREATE_SESSION"), expect_fds=1)
            assert request.Header.TransactionStep == 1
            with MessageChannel(socket.socket(fileno=fds[0]), name="leader") as leader:
                transaction.send(schema("LX_INIT_CREATE_SESSION_RESPONSE"), Port=os.getpid())
                leader.send(schema("LX_INIT_PROCESS_EXIT_STATUS"), ExitCode=7)
            request, fds = channel.receive_transaction(timeout=T).receive(schema("RESULT_MESSAGE<uint32_t>"))
            assert request.Result == 0xFFFFFFFF and fds == []

    with forked(init, close_in_parent=(init_sock,)) as pid, MessageChannel(host_sock, name="host") as host:
        reply = host.request(
            schema("LX_INIT_CREATE_SESSION"),
            schema("LX_INIT_CREATE_SESSION_RESPONSE"),
            fds=[leader_init_end.fileno()],
            timeout=T,
            ConsoleId=0,
        )
        leader_init_end.close()
        assert reply.Port == pid
        assert (reply.Header.TransactionId, reply.Header.TransactionStep) == (0, 2)
        with MessageChannel(leader_host_end, name="leader-host") as leader:
            status, fds = leader.receive(schema("LX_INIT_PROCESS_EXIT_STATUS"), timeout=T)
            assert (status.ExitCode, status.Header.TransactionId, fds) == (7, 1, [])
            with pytest.raises(ChannelClosed):
                leader.receive(timeout=T)
        with host.start_transaction(timeout=T) as transaction:
            transaction.send(schema("RESULT_MESSAGE<uint32_t>"), Result=0xFFFFFFFF)
