"""LaunchLink: the launch client's channel, against MessageChannel and hand-made bytes on real sockets."""

from __future__ import annotations

import _socket
import contextlib
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pywsl.wire import launch_codec as codec
from pywsl.wire.channel import MessageChannel
from pywsl.wire.constants import MAX_MESSAGE_SIZE, MESSAGE_HEADER_SIZE
from pywsl.wire.errors import ChannelClosed, ProtocolError
from pywsl.wire.launch_codec import FastMessage, FastSchema
from pywsl.wire.launch_link import LaunchLink, connect_unix, socket_pair

# A bound for every blocking call, so that a bug fails a test instead of hanging it.
T = 5.0
SHORT = 0.2  # the deadline of the timeout tests
HEADER = struct.Struct("<IIII")
U32 = 0xFFFFFFFF

R = TypeVar("R")


# -- helpers ------------------------------------------------------------------------------------


def frame(schema: FastSchema, transaction_id: int, step: int, **values: Any) -> bytes:
    """``schema``'s message with the given header TransactionId and TransactionStep."""
    data = bytearray(schema.build(**values))
    struct.pack_into("<II", data, 8, transaction_id, step)
    return bytes(data)


def read_frame(sock: socket.socket) -> bytes:
    """One whole frame from a plain socket (which has a timeout)."""
    header = sock.recv(MESSAGE_HEADER_SIZE, socket.MSG_WAITALL)
    assert len(header) == MESSAGE_HEADER_SIZE
    size = HEADER.unpack(header)[1]
    body = sock.recv(size - MESSAGE_HEADER_SIZE, socket.MSG_WAITALL) if size > MESSAGE_HEADER_SIZE else b""
    assert len(body) == size - MESSAGE_HEADER_SIZE
    return header + body


def ids_and_step(data: bytes) -> tuple[int, int]:
    _, _, transaction_id, step = HEADER.unpack_from(data)
    return transaction_id, step


def send_with_fds(sock: socket.socket, data: bytes, fds: Sequence[int]) -> None:
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))] if fds else []
    assert sock.sendmsg([data], ancillary) == len(data)


def nothing_to_read(fd: int) -> bool:
    readable, _, _ = select.select([fd], [], [], 0)
    return not readable


def open_fds() -> set[int]:
    """The descriptors open in this process (the listing's own descriptor left out)."""
    found = set()
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            os.fstat(fd)
        except OSError:
            continue
        found.add(fd)
    return found


def identity(fd: int) -> tuple[int, int]:
    info = os.fstat(fd)
    return info.st_dev, info.st_ino


def close_all(fds: Sequence[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


@contextlib.contextmanager
def pipes(count: int) -> Iterator[list[tuple[int, int]]]:
    """``count`` pipes, closed on leaving (whatever a test closed already is skipped)."""
    made = [os.pipe() for _ in range(count)]
    try:
        yield made
    finally:
        close_all([fd for pair in made for fd in pair])


@contextlib.contextmanager
def background(work: Callable[[], R]) -> Iterator[Callable[[], R]]:
    """Run ``work`` in a thread; the yielded callable waits for (and returns) its result."""
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(work)
        yield lambda: future.result(timeout=T)


def answer(
    peer: MessageChannel,
    request_schema: FastSchema,
    reply_schema: FastSchema,
    *,
    expect_fds: int = 0,
    **values: Any,
) -> tuple[FastMessage, list[int], int]:
    """MessageChannel as the responder of one transaction: (request, its fds, transaction id)."""
    transaction = peer.receive_transaction(timeout=T)
    request, fds = transaction.receive(request_schema, expect_fds=expect_fds)
    transaction.send(reply_schema, **values)
    return request, fds, transaction.id


def to_channel(sock: _socket.socket, name: str) -> MessageChannel:
    return MessageChannel(socket.socket(fileno=sock.detach()), name=name)


def to_plain(sock: _socket.socket) -> socket.socket:
    plain = socket.socket(fileno=sock.detach())
    plain.settimeout(T)
    return plain


@pytest.fixture
def linked() -> Iterator[tuple[LaunchLink, MessageChannel]]:
    """A LaunchLink and a MessageChannel at the two ends of a socket pair."""
    ours, theirs = socket_pair()
    link = LaunchLink(ours, "link", T)
    try:
        with to_channel(theirs, "peer") as peer:
            yield link, peer
    finally:
        link.close()


@pytest.fixture
def raw() -> Iterator[tuple[LaunchLink, socket.socket]]:
    """A LaunchLink and a plain socket at its other end, for hand-made bytes."""
    ours, theirs = socket_pair()
    link = LaunchLink(ours, "link", T)
    try:
        with to_plain(theirs) as peer:
            yield link, peer
    finally:
        link.close()


# -- the module's sockets -----------------------------------------------------------------------


def test_socket_pair_is_a_connected_close_on_exec_unix_stream_pair() -> None:
    first, second = socket_pair()
    with contextlib.closing(first), contextlib.closing(second):
        for sock in (first, second):
            assert sock.family == socket.AF_UNIX
            assert sock.type == socket.SOCK_STREAM
            assert not os.get_inheritable(sock.fileno())
        first.send(b"ping")
        assert second.recv(4) == b"ping"


def test_fileno_and_close() -> None:
    ours, theirs = socket_pair()
    with contextlib.closing(theirs):
        link = LaunchLink(ours, "link", T)
        assert link.fileno() == ours.fileno() >= 0
        link.close()
        assert ours.fileno() == -1
        assert theirs.recv(1) == b""  # the peer sees the close


# -- interoperability with MessageChannel -------------------------------------------------------


def test_request_is_answered_by_a_message_channel(linked: tuple[LaunchLink, MessageChannel]) -> None:
    link, peer = linked
    with background(
        lambda: answer(peer, codec.CREATE_SESSION, codec.CREATE_SESSION_RESPONSE, Port=50123)
    ) as result:
        reply = link.request(codec.CREATE_SESSION, codec.CREATE_SESSION_RESPONSE, ConsoleId=-7)
        request, fds, transaction_id = result()
    assert (request.ConsoleId, fds, transaction_id) == (-7, [], 0)
    assert (request.Header.TransactionId, request.Header.TransactionStep) == (0, 1)
    assert reply.Port == 50123
    assert (reply.Header.TransactionId, reply.Header.TransactionStep) == (0, 2)


def test_transaction_ids_advance_as_message_channel_does(linked: tuple[LaunchLink, MessageChannel]) -> None:
    link, peer = linked
    count = 4

    def serve() -> list[int]:
        seen = []
        for index in range(count):
            _, _, transaction_id = answer(peer, codec.EXIT_STATUS, codec.RESULT_UINT32, Result=100 + index)
            seen.append(transaction_id)
        return seen

    with background(serve) as served:
        results = [
            link.request(codec.EXIT_STATUS, codec.RESULT_UINT32, ExitCode=index).Result
            for index in range(count)
        ]
        link_ids = served()

    left, right = socket.socketpair()
    with MessageChannel(left, name="a") as initiator, right:
        channel_ids = [initiator.start_transaction(T).id for _ in range(count)]
    assert results == [100, 101, 102, 103]
    assert link_ids == channel_ids == [0, 1, 2, 3]


def test_send_is_received_by_a_message_channel(linked: tuple[LaunchLink, MessageChannel]) -> None:
    link, peer = linked
    for code in (0, -1, 2**31 - 1):
        link.send(codec.EXIT_STATUS, ExitCode=code)
    received = [peer.receive(codec.EXIT_STATUS, timeout=T) for _ in range(3)]
    assert [(message.ExitCode, fds) for message, fds in received] == [(0, []), (-1, []), (2**31 - 1, [])]
    assert [message.Header.TransactionId for message, _ in received] == [1, 2, 3]
    assert {message.Header.TransactionStep for message, _ in received} == {0}


def test_message_channel_send_is_received_by_the_link(linked: tuple[LaunchLink, MessageChannel]) -> None:
    link, peer = linked
    peer.send(codec.GUEST_CAPABILITIES, SeccompAvailable=True, HvPciSwiotlbSize=1 << 33, Buffer="6.6.87.2")
    peer.send(codec.EXIT_STATUS, ExitCode=3)
    peer.send(codec.EXIT_STATUS, ExitCode=-9)

    capabilities, fds = link.receive(codec.GUEST_CAPABILITIES)
    assert fds == []
    assert (capabilities.SeccompAvailable, capabilities.HvPciSwiotlbSize, capabilities.Buffer) == (
        True,
        1 << 33,
        "6.6.87.2",
    )
    assert [link.receive(codec.EXIT_STATUS)[0].ExitCode for _ in range(2)] == [3, -9]
    assert capabilities.Header.TransactionId == 1


def test_pipelined_requests_answered_in_order(linked: tuple[LaunchLink, MessageChannel]) -> None:
    """A launch sends its requests first and reads the replies afterwards."""
    link, peer = linked
    initialize = link.send_request(
        codec.INITIALIZE, Hostname="host", Domainname="", WindowsHosts="", DistributionName="Debian"
    )
    with pipes(1) as [(_, write_end)]:
        session = link.send_request(codec.CREATE_SESSION, [write_end], ConsoleId=0)
        assert (initialize, session) == (0, 1)

        first, _, first_id = answer(
            peer, codec.INITIALIZE, codec.INITIALIZE_RESPONSE, DefaultUid=1000, Flavor="debian", Version="12"
        )
        second, fds, second_id = answer(
            peer, codec.CREATE_SESSION, codec.CREATE_SESSION_RESPONSE, expect_fds=1, Port=7
        )
        try:
            assert identity(fds[0]) == identity(write_end)
        finally:
            close_all(fds)
    assert (first.DistributionName, first_id, second.ConsoleId, second_id) == ("Debian", 0, 0, 1)

    response = link.receive_reply(initialize, codec.INITIALIZE_RESPONSE)
    assert (response.DefaultUid, response.Flavor, response.Version) == (1000, "debian", "12")
    assert link.receive_reply(session, codec.CREATE_SESSION_RESPONSE).Port == 7


def test_transactions_and_messages_interleave_both_ways(linked: tuple[LaunchLink, MessageChannel]) -> None:
    link, peer = linked
    link.send(codec.WINDOW_SIZE_CHANGED, Rows=24, Columns=80)
    first = link.send_request(codec.CREATE_SESSION, ConsoleId=1)
    link.send(codec.WINDOW_SIZE_CHANGED, Rows=50, Columns=132)
    second = link.send_request(codec.CREATE_SESSION, ConsoleId=2)

    resize, _ = peer.receive(codec.WINDOW_SIZE_CHANGED, timeout=T)
    request_one, _, id_one = answer(peer, codec.CREATE_SESSION, codec.CREATE_SESSION_RESPONSE, Port=11)
    peer.send(codec.EXIT_STATUS, ExitCode=4)
    resize_two, _ = peer.receive(codec.WINDOW_SIZE_CHANGED, timeout=T)
    request_two, _, id_two = answer(peer, codec.CREATE_SESSION, codec.CREATE_SESSION_RESPONSE, Port=22)
    peer.send(codec.EXIT_STATUS, ExitCode=5)

    assert (
        resize.Rows,
        resize.Header.TransactionId,
        resize_two.Columns,
        resize_two.Header.TransactionId,
    ) == (
        24,
        1,
        132,
        2,
    )
    assert (request_one.ConsoleId, id_one, request_two.ConsoleId, id_two) == (1, 0, 2, 1)
    assert link.receive_reply(first, codec.CREATE_SESSION_RESPONSE).Port == 11
    exit_one, _ = link.receive(codec.EXIT_STATUS)
    assert link.receive_reply(second, codec.CREATE_SESSION_RESPONSE).Port == 22
    exit_two, _ = link.receive(codec.EXIT_STATUS)
    assert [(m.ExitCode, m.Header.TransactionId) for m in (exit_one, exit_two)] == [(4, 1), (5, 2)]


def test_connection_error_when_the_peer_goes_away_without_reading(
    raw: tuple[LaunchLink, socket.socket],
) -> None:
    link, peer = raw
    transaction = link.send_request(codec.CREATE_SESSION, ConsoleId=0)
    peer.close()  # our request is still unread there
    with pytest.raises(ConnectionError):
        link.receive_reply(transaction, codec.CREATE_SESSION_RESPONSE)


def test_send_to_a_closed_peer_is_a_broken_pipe(raw: tuple[LaunchLink, socket.socket]) -> None:
    link, peer = raw
    peer.close()
    with pytest.raises(BrokenPipeError):
        link.send(codec.EXIT_STATUS, ExitCode=0)


# -- the bytes on the wire ----------------------------------------------------------------------


def test_send_stamps_ids_from_one_and_step_zero(raw: tuple[LaunchLink, socket.socket]) -> None:
    link, peer = raw
    for code in (5, 6, 7):
        link.send(codec.EXIT_STATUS, ExitCode=code)
    frames = [read_frame(peer) for _ in range(3)]
    assert [ids_and_step(data) for data in frames] == [(1, 0), (2, 0), (3, 0)]
    for code, data in zip((5, 6, 7), frames, strict=True):
        built = codec.EXIT_STATUS.build(ExitCode=code)
        assert data[:8] == built[:8]  # MessageType, MessageSize
        assert data[16:] == built[16:]


def test_send_request_stamps_ids_from_zero_and_step_one(raw: tuple[LaunchLink, socket.socket]) -> None:
    link, peer = raw
    assert link.send_request(codec.CREATE_SESSION, ConsoleId=9) == 0
    link.send(codec.EXIT_STATUS, ExitCode=0)
    assert link.send_request(codec.CREATE_SESSION, ConsoleId=8) == 1
    link.send(codec.EXIT_STATUS, ExitCode=0)
    assert link.send_request(codec.CREATE_SESSION, ConsoleId=7) == 2
    frames = [read_frame(peer) for _ in range(5)]
    assert [ids_and_step(data) for data in frames] == [(0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]
    assert frames[0] == frame(codec.CREATE_SESSION, 0, 1, ConsoleId=9)
    assert frames[4] == frame(codec.CREATE_SESSION, 2, 1, ConsoleId=7)


def test_frames_are_byte_identical_to_message_channel_frames() -> None:
    def ops_link(link: LaunchLink) -> None:
        link.send(codec.WINDOW_SIZE_CHANGED, Rows=1, Columns=2)
        link.send_request(codec.INITIALIZE, Hostname="h", DistributionName="d", Timezone="UTC")
        link.send_request(codec.CREATE_SESSION, ConsoleId=0)
        link.send(codec.SIGNAL_PROCESS, Signal=2)

    def ops_channel(channel: MessageChannel) -> None:
        channel.send(codec.WINDOW_SIZE_CHANGED, Rows=1, Columns=2)
        channel.start_transaction(T).send(
            codec.INITIALIZE, Hostname="h", DistributionName="d", Timezone="UTC"
        )
        channel.start_transaction(T).send(codec.CREATE_SESSION, ConsoleId=0)
        channel.send(codec.SIGNAL_PROCESS, Signal=2)

    ours, theirs = socket_pair()
    link = LaunchLink(ours, "link", T)
    with contextlib.closing(link), to_plain(theirs) as reader:
        ops_link(link)
        from_link = [read_frame(reader) for _ in range(4)]
    left, right = socket.socketpair()
    right.settimeout(T)
    with MessageChannel(left, name="channel") as channel, right:
        ops_channel(channel)
        from_channel = [read_frame(right) for _ in range(4)]
    assert from_link == from_channel


# -- file descriptors ---------------------------------------------------------------------------


def test_request_fds_arrive_at_the_peer(linked: tuple[LaunchLink, MessageChannel], tmp_path: Path) -> None:
    link, peer = linked
    with pipes(1) as [(read_end, write_end)], open(tmp_path / "file", "wb") as file:
        transaction = link.send_request(codec.CREATE_SESSION, [write_end, file.fileno()], ConsoleId=0)
        _, fds, _ = answer(peer, codec.CREATE_SESSION, codec.CREATE_SESSION_RESPONSE, expect_fds=2, Port=1)
        try:
            assert [identity(fd) for fd in fds] == [identity(write_end), identity(file.fileno())]
            assert not set(fds) & {write_end, file.fileno()}  # new descriptors, same files
            os.write(fds[0], b"through the copy")
            assert os.read(read_end, 100) == b"through the copy"
            os.fstat(write_end)  # the sender's descriptors stay open
        finally:
            close_all(fds)
        assert link.receive_reply(transaction, codec.CREATE_SESSION_RESPONSE).Port == 1


def test_fds_with_a_message_are_returned_by_receive(linked: tuple[LaunchLink, MessageChannel]) -> None:
    link, peer = linked
    with pipes(2) as [(read_one, write_one), (read_two, _)]:
        peer.send(codec.EXIT_STATUS, fds=[write_one, read_two], ExitCode=1)
        message, fds = link.receive(codec.EXIT_STATUS, expect_fds=2)
        try:
            assert message.ExitCode == 1
            assert [identity(fd) for fd in fds] == [identity(write_one), identity(read_two)]
            assert not any(os.get_inheritable(fd) for fd in fds)  # close-on-exec
            os.write(fds[0], b"x")
            assert os.read(read_one, 1) == b"x"
        finally:
            close_all(fds)


def test_link_send_carries_fds_to_a_message_channel(linked: tuple[LaunchLink, MessageChannel]) -> None:
    link, peer = linked
    with pipes(1) as [(read_end, _)]:
        link.send(codec.EXIT_STATUS, [read_end], ExitCode=0)
        _, fds = peer.receive(codec.EXIT_STATUS, timeout=T, expect_fds=1)
        try:
            assert identity(fds[0]) == identity(read_end)
        finally:
            close_all(fds)


def test_fds_travel_once_with_a_frame_sent_in_pieces(linked: tuple[LaunchLink, MessageChannel]) -> None:
    """A frame larger than the socket buffer goes out in several writes; its fds go with the first."""
    link, peer = linked
    text = "p" * (4 << 20)
    with pipes(1) as [(read_end, _)]:
        with background(lambda: peer.receive(codec.GUEST_CAPABILITIES, timeout=T, expect_fds=1)) as received:
            link.send(codec.GUEST_CAPABILITIES, [read_end], Buffer=text)
            message, fds = received()
        try:
            assert message.Buffer == text
            assert [identity(fd) for fd in fds] == [identity(read_end)]
        finally:
            close_all(fds)


@pytest.mark.parametrize(("sent", "expected"), [(2, 1), (1, 0), (0, 1), (3, 16)])
def test_wrong_number_of_fds_is_refused_and_all_are_closed(
    linked: tuple[LaunchLink, MessageChannel], sent: int, expected: int
) -> None:
    link, peer = linked
    with pipes(2) as made:
        ends = [fd for pair in made for fd in pair][:sent]
        before = open_fds()
        peer.send(codec.EXIT_STATUS, fds=ends, ExitCode=0)
        with pytest.raises(ProtocolError, match="file descriptor"):
            link.receive(codec.EXIT_STATUS, expect_fds=expected)
        assert open_fds() == before


def test_more_than_sixteen_fds_arriving_are_refused_and_closed(raw: tuple[LaunchLink, socket.socket]) -> None:
    link, peer = raw
    with pipes(1) as [(read_end, _)]:
        before = open_fds()
        send_with_fds(peer, frame(codec.EXIT_STATUS, 1, 0, ExitCode=0), [read_end] * 17)
        with pytest.raises(ProtocolError, match="17 file descriptors"):
            link.receive(codec.EXIT_STATUS, expect_fds=17)
        assert open_fds() == before


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(frame(codec.EXIT_STATUS, 2, 0, ExitCode=0), id="wrong-id"),
        pytest.param(frame(codec.EXIT_STATUS, 1, 1, ExitCode=0), id="transaction-step"),
        pytest.param(frame(codec.RESULT_UINT32, 1, 0, Result=0), id="wrong-type"),
    ],
)
def test_fds_of_a_refused_message_are_closed(raw: tuple[LaunchLink, socket.socket], data: bytes) -> None:
    link, peer = raw
    with pipes(1) as [(read_end, write_end)]:
        before = open_fds()
        send_with_fds(peer, data, [read_end, write_end])
        with pytest.raises(ProtocolError):
            link.receive(codec.EXIT_STATUS, expect_fds=2)
        assert open_fds() == before


def test_a_reply_with_fds_is_refused_and_they_are_closed(raw: tuple[LaunchLink, socket.socket]) -> None:
    link, peer = raw
    transaction = link.send_request(codec.CREATE_SESSION, ConsoleId=0)
    with pipes(1) as [(read_end, write_end)]:
        before = open_fds()
        send_with_fds(
            peer, frame(codec.CREATE_SESSION_RESPONSE, transaction, 2, Port=1), [read_end, write_end]
        )
        with pytest.raises(ProtocolError, match="2 file descriptor"):
            link.receive_reply(transaction, codec.CREATE_SESSION_RESPONSE)
        assert open_fds() == before


def test_fds_of_skipped_messages_are_closed(raw: tuple[LaunchLink, socket.socket]) -> None:
    link, peer = raw
    link.send_request(codec.CREATE_SESSION, ConsoleId=0)
    transaction = link.send_request(codec.CREATE_SESSION, ConsoleId=0)
    with pipes(1) as [(read_end, write_end)]:
        before = open_fds()
        send_with_fds(peer, frame(codec.CREATE_SESSION_RESPONSE, 0, 2, Port=1), [read_end])
        send_with_fds(peer, frame(codec.EXIT_STATUS, 1, 0, ExitCode=0), [write_end, read_end])
        peer.sendall(frame(codec.CREATE_SESSION_RESPONSE, transaction, 2, Port=2))
        assert link.receive_reply(transaction, codec.CREATE_SESSION_RESPONSE).Port == 2
        assert open_fds() == before


def test_sixteen_fds_travel_and_seventeen_are_a_value_error(
    linked: tuple[LaunchLink, MessageChannel],
) -> None:
    link, peer = linked
    with pipes(1) as [(read_end, _)]:
        link.send(codec.EXIT_STATUS, [read_end] * 16, ExitCode=0)
        _, fds = peer.receive(codec.EXIT_STATUS, timeout=T, expect_fds=16)
        close_all(fds)
        assert len(fds) == 16

        with pytest.raises(ValueError, match="16 file descriptors"):
            link.send(codec.EXIT_STATUS, [read_end] * 17, ExitCode=0)
        with pytest.raises(ValueError, match="16 file descriptors"):
            link.send_request(codec.CREATE_SESSION, [read_end] * 17, ConsoleId=0)
        assert nothing_to_read(peer.fileno())


def test_a_refused_send_does_not_use_up_a_message_id(linked: tuple[LaunchLink, MessageChannel]) -> None:
    link, peer = linked
    with pipes(1) as [(read_end, _)], pytest.raises(ValueError):
        link.send(codec.EXIT_STATUS, [read_end] * 17, ExitCode=0)
    link.send(codec.EXIT_STATUS, ExitCode=0)
    message, _ = peer.receive(codec.EXIT_STATUS, timeout=T)
    assert message.Header.TransactionId == 1


# -- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize("newer", [1, 2, 0x7FFFFFFF])
def test_a_reply_with_a_newer_id_is_refused(raw: tuple[LaunchLink, socket.socket], newer: int) -> None:
    link, peer = raw
    transaction = link.send_request(codec.CREATE_SESSION, ConsoleId=0)
    peer.sendall(frame(codec.CREATE_SESSION_RESPONSE, transaction + newer, 2, Port=1))
    with pytest.raises(ProtocolError, match="unexpected transaction id") as error:
        link.receive_reply(transaction, codec.CREATE_SESSION_RESPONSE)
    assert (error.value.struct, error.value.field) == (
        "LX_INIT_CREATE_SESSION_RESPONSE",
        "Header.TransactionId",
    )


@pytest.mark.parametrize("step", [1, 3, 0xFFFFFFFF])
def test_a_reply_with_a_wrong_step_is_refused(raw: tuple[LaunchLink, socket.socket], step: int) -> None:
    link, peer = raw
    transaction = link.send_request(codec.CREATE_SESSION, ConsoleId=0)
    peer.sendall(frame(codec.CREATE_SESSION_RESPONSE, transaction, step, Port=1))
    with pytest.raises(ProtocolError, match="unexpected transaction step") as error:
        link.receive_reply(transaction, codec.CREATE_SESSION_RESPONSE)
    assert error.value.field == "Header.TransactionStep"


@pytest.mark.parametrize("message_id", [0, 2, 0xFFFFFFFF])
def test_a_message_with_the_wrong_id_is_refused(
    raw: tuple[LaunchLink, socket.socket], message_id: int
) -> None:
    link, peer = raw
    peer.sendall(frame(codec.EXIT_STATUS, message_id, 0, ExitCode=0))
    with pytest.raises(ProtocolError, match=f"id {message_id}, expected 1") as error:
        link.receive(codec.EXIT_STATUS)
    assert (error.value.struct, error.value.field) == ("LX_INIT_PROCESS_EXIT_STATUS", "Header.TransactionId")


@pytest.mark.parametrize("step", [1, 2])
def test_a_transaction_message_is_refused_by_receive(
    raw: tuple[LaunchLink, socket.socket], step: int
) -> None:
    link, peer = raw
    peer.sendall(frame(codec.EXIT_STATUS, 1, step, ExitCode=0))
    with pytest.raises(ProtocolError, match="unexpected transaction message") as error:
        link.receive(codec.EXIT_STATUS)
    assert error.value.field == "Header.TransactionStep"


def test_a_message_of_the_wrong_type_is_refused(raw: tuple[LaunchLink, socket.socket]) -> None:
    link, peer = raw
    peer.sendall(frame(codec.RESULT_UINT32, 1, 0, Result=0))
    with pytest.raises(ProtocolError) as error:
        link.receive(codec.EXIT_STATUS)
    assert error.value.field == "Header.MessageType"


@pytest.mark.parametrize("size", [0, 1, MESSAGE_HEADER_SIZE - 1, MAX_MESSAGE_SIZE + 1, U32])
@pytest.mark.parametrize("operation", ["receive", "receive_reply"])
def test_message_size_out_of_bounds_is_refused(
    raw: tuple[LaunchLink, socket.socket], size: int, operation: str
) -> None:
    link, peer = raw
    transaction = link.send_request(codec.CREATE_SESSION, ConsoleId=0)
    peer.sendall(HEADER.pack(codec.EXIT_STATUS.message_type, size, 1, 0) + bytes(8))
    with pytest.raises(ProtocolError, match=f"MessageSize {size} is out of bounds") as error:
        if operation == "receive":
            link.receive(codec.EXIT_STATUS)
        else:
            link.receive_reply(transaction, codec.CREATE_SESSION_RESPONSE)
    assert error.value.field == "MessageSize"


def test_the_largest_frame_is_accepted(raw: tuple[LaunchLink, socket.socket]) -> None:
    link, peer = raw
    text = "k" * (MAX_MESSAGE_SIZE - codec.GUEST_CAPABILITIES.sizeof - 1)
    data = frame(codec.GUEST_CAPABILITIES, 1, 0, Buffer=text)
    assert len(data) == MAX_MESSAGE_SIZE
    with background(lambda: peer.sendall(data)) as sent:
        message, _ = link.receive(codec.GUEST_CAPABILITIES)
        sent()
    assert message.Buffer == text


@pytest.mark.parametrize("operation", ["receive", "receive_reply"])
def test_a_close_before_a_header_is_channel_closed(
    raw: tuple[LaunchLink, socket.socket], operation: str
) -> None:
    link, peer = raw
    transaction = link.send_request(codec.CREATE_SESSION, ConsoleId=0)
    read_frame(peer)
    peer.close()
    with pytest.raises(ChannelClosed, match="closed by the peer"):
        if operation == "receive":
            link.receive(codec.EXIT_STATUS)
        else:
            link.receive_reply(transaction, codec.CREATE_SESSION_RESPONSE)


def test_a_close_after_a_skipped_message_is_channel_closed(raw: tuple[LaunchLink, socket.socket]) -> None:
    link, peer = raw
    transaction = link.send_request(codec.CREATE_SESSION, ConsoleId=0)
    read_frame(peer)
    peer.sendall(frame(codec.EXIT_STATUS, 1, 0, ExitCode=0))
    peer.close()
    with pytest.raises(ChannelClosed):
        link.receive_reply(transaction, codec.CREATE_SESSION_RESPONSE)


@pytest.mark.parametrize("cut", [1, MESSAGE_HEADER_SIZE - 1, MESSAGE_HEADER_SIZE, MESSAGE_HEADER_SIZE + 3])
@pytest.mark.parametrize("operation", ["receive", "receive_reply"])
def test_a_close_inside_a_frame_is_a_protocol_error(
    raw: tuple[LaunchLink, socket.socket], cut: int, operation: str
) -> None:
    link, peer = raw
    transaction = link.send_request(codec.CREATE_SESSION, ConsoleId=0)
    read_frame(peer)
    data = frame(codec.EXIT_STATUS, 1, 0, ExitCode=0)
    if operation == "receive_reply":
        data = frame(codec.CREATE_SESSION_RESPONSE, transaction, 2, Port=1)
    peer.sendall(data[:cut])
    peer.close()
    with pytest.raises(ProtocolError, match="truncated"):
        if operation == "receive":
            link.receive(codec.EXIT_STATUS)
        else:
            link.receive_reply(transaction, codec.CREATE_SESSION_RESPONSE)


def test_earlier_replies_and_stale_messages_are_skipped(raw: tuple[LaunchLink, socket.socket]) -> None:
    link, peer = raw
    for _ in range(3):
        transaction = link.send_request(codec.CREATE_SESSION, ConsoleId=0)
    assert transaction == 2
    peer.sendall(
        frame(codec.CREATE_SESSION_RESPONSE, 0, 2, Port=100)  # the reply to an earlier request
        + frame(codec.EXIT_STATUS, 1, 0, ExitCode=0)  # a stale non-transaction message
        + frame(codec.RESULT_UINT32, 1, 3, Result=0)  # a later step of an earlier transaction
        + frame(codec.EXIT_STATUS, 77, 0, ExitCode=0)  # stale messages' ids are not checked
        + frame(codec.CREATE_SESSION_RESPONSE, 2, 2, Port=102)
        + frame(codec.CREATE_SESSION_RESPONSE, 1, 2, Port=101)  # too late: skipped by the next read
        + frame(codec.CREATE_SESSION_RESPONSE, 2, 2, Port=202)
    )
    assert link.receive_reply(2, codec.CREATE_SESSION_RESPONSE).Port == 102
    assert link.receive_reply(2, codec.CREATE_SESSION_RESPONSE).Port == 202


@pytest.mark.parametrize("earlier", [U32, 0x80000000])
def test_earlier_ids_wrap_around(raw: tuple[LaunchLink, socket.socket], earlier: int) -> None:
    link, peer = raw
    transaction = link.send_request(codec.CREATE_SESSION, ConsoleId=0)
    assert transaction == 0
    peer.sendall(
        frame(codec.CREATE_SESSION_RESPONSE, earlier, 2, Port=1)
        + frame(codec.CREATE_SESSION_RESPONSE, transaction, 2, Port=2)
    )
    assert link.receive_reply(transaction, codec.CREATE_SESSION_RESPONSE).Port == 2


def _reply_outcome(receive: Callable[[], FastMessage]) -> str:
    try:
        result = receive().Result
    except ProtocolError as error:
        return f"refused {error.field}"
    return {1: "accepted", 2: "skipped"}[result]


@settings(max_examples=150, deadline=None)
@given(
    message_id=st.one_of(
        st.sampled_from([0, 1, 2, 3, 0x7FFFFFFF, 0x80000000, 0x80000001, U32]), st.integers(0, U32)
    ),
    step=st.integers(0, 4),
    earlier_requests=st.integers(0, 3),
)
def test_reply_rules_match_message_channel(message_id: int, step: int, earlier_requests: int) -> None:
    """Whatever arrives before the right reply, LaunchLink takes, skips or refuses as MessageChannel."""
    data = frame(codec.RESULT_UINT32, message_id, step, Result=1)

    ours, theirs = socket_pair()
    link = LaunchLink(ours, "link", T)
    with contextlib.closing(link), to_plain(theirs) as peer:
        for _ in range(earlier_requests):
            link.send_request(codec.CREATE_SESSION, ConsoleId=0)
        transaction = link.send_request(codec.CREATE_SESSION, ConsoleId=0)
        peer.sendall(data + frame(codec.RESULT_UINT32, transaction, 2, Result=2))
        by_link = _reply_outcome(lambda: link.receive_reply(transaction, codec.RESULT_UINT32))

    left, right = socket.socketpair()
    with MessageChannel(left, name="channel") as channel, right:
        for _ in range(earlier_requests):
            channel.start_transaction(T).send(codec.CREATE_SESSION, ConsoleId=0)
        with channel.start_transaction(T) as started:
            started.send(codec.CREATE_SESSION, ConsoleId=0)
            right.sendall(data + frame(codec.RESULT_UINT32, started.id, 2, Result=2))
            by_channel = _reply_outcome(lambda: started.receive(codec.RESULT_UINT32, expect_fds=0)[0])

    assert by_link == by_channel


# -- deadlines ----------------------------------------------------------------------------------


@pytest.mark.parametrize("operation", ["receive", "receive_reply", "request"])
def test_nothing_arriving_is_a_timeout(raw: tuple[LaunchLink, socket.socket], operation: str) -> None:
    link, _ = raw
    link.timeout = SHORT
    transaction = link.send_request(codec.CREATE_SESSION, ConsoleId=0)
    start = time.monotonic()
    with pytest.raises(TimeoutError, match=r"no answer within 0\.2 s"):
        if operation == "receive":
            link.receive(codec.EXIT_STATUS)
        elif operation == "receive_reply":
            link.receive_reply(transaction, codec.CREATE_SESSION_RESPONSE)
        else:
            link.request(codec.CREATE_SESSION, codec.CREATE_SESSION_RESPONSE, ConsoleId=0)
    elapsed = time.monotonic() - start
    assert SHORT * 0.9 <= elapsed < SHORT + 2.0


@pytest.mark.parametrize("part", [3, MESSAGE_HEADER_SIZE, MESSAGE_HEADER_SIZE + 2])
def test_a_partial_frame_is_a_timeout(raw: tuple[LaunchLink, socket.socket], part: int) -> None:
    link, peer = raw
    link.timeout = SHORT
    peer.sendall(frame(codec.EXIT_STATUS, 1, 0, ExitCode=0)[:part])
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        link.receive(codec.EXIT_STATUS)
    assert SHORT * 0.9 <= time.monotonic() - start < SHORT + 2.0


def test_skipped_messages_do_not_extend_the_deadline(raw: tuple[LaunchLink, socket.socket]) -> None:
    link, peer = raw
    link.timeout = 0.4
    transaction = link.send_request(codec.CREATE_SESSION, ConsoleId=0)
    stop = threading.Event()

    def trickle() -> None:  # a stale message every 50 ms, never the reply
        while not stop.wait(0.05):
            with contextlib.suppress(OSError):
                peer.sendall(frame(codec.EXIT_STATUS, 1, 0, ExitCode=0))

    with background(trickle) as finished:
        start = time.monotonic()
        try:
            with pytest.raises(TimeoutError):
                link.receive_reply(transaction, codec.CREATE_SESSION_RESPONSE)
        finally:
            stop.set()
            finished()
    assert 0.35 <= time.monotonic() - start < 0.4 + 2.0


def test_each_exchange_has_its_own_deadline(raw: tuple[LaunchLink, socket.socket]) -> None:
    link, peer = raw
    link.timeout = 0.5
    count = 5

    def slowly() -> None:
        for index in range(count):
            time.sleep(0.15)
            peer.sendall(frame(codec.EXIT_STATUS, index + 1, 0, ExitCode=index))

    with background(slowly) as finished:
        start = time.monotonic()
        codes = [link.receive(codec.EXIT_STATUS)[0].ExitCode for _ in range(count)]
        finished()
    assert codes == list(range(count))
    assert time.monotonic() - start > link.timeout  # longer than one deadline, all in time


def test_a_send_the_peer_does_not_read_is_a_timeout(raw: tuple[LaunchLink, socket.socket]) -> None:
    link, _ = raw
    link.timeout = SHORT
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        link.send(codec.GUEST_CAPABILITIES, Buffer="z" * (8 << 20))
    assert SHORT * 0.9 <= time.monotonic() - start < SHORT + 2.0


# -- connect_unix -------------------------------------------------------------------------------


def test_connect_unix_missing_path(tmp_path: Path) -> None:
    before = open_fds()
    assert connect_unix(str(tmp_path / "absent.sock")) is None
    assert connect_unix(str(tmp_path / "no-folder" / "x.sock")) is None
    assert open_fds() == before


@pytest.mark.parametrize("state", ["bound", "closed", "removed", "plain-file"])
def test_connect_unix_where_nothing_listens(tmp_path: Path, state: str) -> None:
    path = str(tmp_path / "s.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        if state == "plain-file":
            Path(path).touch()
        else:
            server.bind(path)
        if state in ("closed", "removed"):
            server.listen(1)
            server.close()  # a stale socket file stays behind
        if state == "removed":
            os.unlink(path)
        before = open_fds()
        assert connect_unix(path) is None
        assert open_fds() == before


def test_connect_unix_to_a_listener(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path)
        server.listen(1)
        server.settimeout(T)
        sock = connect_unix(path)
        assert sock is not None
        link = LaunchLink(sock, "connected", T)
        accepted, _ = server.accept()
        with contextlib.closing(link), MessageChannel(accepted, name="server") as peer:
            assert sock.getpeername() == path
            assert not os.get_inheritable(link.fileno())
            with background(
                lambda: answer(peer, codec.CREATE_SESSION, codec.CREATE_SESSION_RESPONSE, Port=5)
            ) as result:
                assert (
                    link.request(codec.CREATE_SESSION, codec.CREATE_SESSION_RESPONSE, ConsoleId=0).Port == 5
                )
                result()
