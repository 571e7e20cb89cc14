"""The channel port's copying loop (``pywsl.wire.port_engine``), driven frame by frame.

One engine runs in a thread on one end of a socket pair; the test is the other side of the port
(it writes and reads frames) and the user of each channel's local end.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from pywsl.wire.port_engine import Endpoint, PortEngine
from pywsl.wire.port_mux import MAX_PAYLOAD, WINDOW, Frame, FrameKind, FrameReader, encode_frame

TIMEOUT = 20.0


class RecordingEngine(PortEngine):
    """An engine that records the frames it does not handle and the channels that end."""

    def __init__(self, port_fd: int) -> None:
        super().__init__(port_fd)
        self.other_frames: list[Frame] = []
        self.closed: list[int] = []
        self.closed_event = threading.Event()

    def on_frame(self, frame: Frame) -> None:
        self.other_frames.append(frame)

    def on_closed(self, endpoint: Endpoint) -> None:
        self.closed.append(endpoint.channel)
        self.closed_event.set()


@dataclass
class Port:
    """The test's end of the port."""

    sock: socket.socket
    engine: RecordingEngine
    thread: threading.Thread
    reader: FrameReader = field(default_factory=FrameReader)
    frames: list[Frame] = field(default_factory=list)

    def send(self, channel: int, kind: FrameKind, payload: bytes = b"") -> None:
        self.sock.sendall(encode_frame(channel, kind, payload))

    def next_frame(self) -> Frame:
        while not self.frames:
            data = self.sock.recv(1 << 20)
            assert data, "the engine closed the port"
            self.frames.extend(self.reader.feed(data))
        return self.frames.pop(0)

    def frame_of_kind(self, kind: FrameKind) -> Frame:
        """The next frame of ``kind`` (CREDIT frames in between are skipped)."""
        while True:
            frame = self.next_frame()
            if frame.kind is kind:
                return frame
            assert frame.kind is FrameKind.CREDIT, frame


@pytest.fixture
def port() -> Iterator[Port]:
    ours, theirs = socket.socketpair()
    ours.settimeout(TIMEOUT)
    theirs.setblocking(False)
    engine = RecordingEngine(theirs.fileno())
    thread = threading.Thread(target=engine.run, daemon=True)
    port = Port(ours, engine, thread)
    try:
        yield port
    finally:
        ours.close()  # the engine sees the port end and stops
        thread.join(TIMEOUT)
        assert not thread.is_alive()
        theirs.close()
        for endpoint in list(engine.endpoints.values()):
            endpoint.close_fds()


def _socket_endpoint(port: Port, channel: int) -> socket.socket:
    local, user = socket.socketpair()
    fd = local.detach()
    port.engine.add(Endpoint(channel, fd, fd, is_socket=True))
    user.settimeout(TIMEOUT)
    return user


def _receive_all(user: socket.socket) -> bytes:
    received = bytearray()
    while chunk := user.recv(1 << 20):
        received += chunk
    return bytes(received)


def test_bytes_flow_both_ways_with_credit_and_eof(port: Port) -> None:
    user = _socket_endpoint(port, 7)
    port.thread.start()
    port.send(7, FrameKind.DATA, b"hello")
    assert user.recv(100) == b"hello"
    credit = port.next_frame()
    assert (credit.channel, credit.kind, credit.payload) == (7, FrameKind.CREDIT, (5).to_bytes(4, "little"))
    user.sendall(b"world")
    data = port.frame_of_kind(FrameKind.DATA)
    assert (data.channel, data.payload) == (7, b"world")
    port.send(7, FrameKind.CREDIT, (5).to_bytes(4, "little"))
    # The other side's EOF ends this direction; the user's EOF the other one, and the channel.
    port.send(7, FrameKind.EOF)
    assert user.recv(100) == b""
    user.shutdown(socket.SHUT_WR)
    assert port.frame_of_kind(FrameKind.EOF).channel == 7
    assert port.engine.closed_event.wait(TIMEOUT)
    assert port.engine.closed == [7]
    user.close()


def test_more_than_a_window_arrives_whole_as_credit_returns(port: Port) -> None:
    user = _socket_endpoint(port, 3)
    port.thread.start()
    payload = os.urandom(3 * WINDOW + 12345)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(_receive_all(user)))
    reader.start()
    sent = credited = 0
    while sent < len(payload):
        # Never more than the window in flight: wait for credit, as the other engine would.
        while sent - credited + MAX_PAYLOAD > WINDOW:
            frame = port.frame_of_kind(FrameKind.CREDIT)
            credited += int.from_bytes(frame.payload, "little")
        chunk = payload[sent : sent + MAX_PAYLOAD]
        port.send(3, FrameKind.DATA, chunk)
        sent += len(chunk)
    port.send(3, FrameKind.EOF)
    reader.join(TIMEOUT)
    assert received == [payload]
    user.close()


def test_a_local_end_that_reads_nothing_is_closed_when_the_window_is_exceeded(port: Port) -> None:
    read_end, write_end = os.pipe()  # nobody reads: the pipe fills, the rest stays pending
    os.set_blocking(write_end, False)  # as a caller's FIFO is reopened before it gets here
    port.engine.add(Endpoint(5, -1, write_end))
    port.thread.start()
    for _ in range(WINDOW // MAX_PAYLOAD + 2):
        port.send(5, FrameKind.DATA, b"x" * MAX_PAYLOAD)
    assert port.frame_of_kind(FrameKind.CLOSE).channel == 5
    assert port.engine.closed_event.wait(TIMEOUT) and port.engine.closed == [5]
    os.close(read_end)


def test_close_from_the_other_side_ends_the_channel_at_once(port: Port) -> None:
    user = _socket_endpoint(port, 9)
    port.thread.start()
    port.send(9, FrameKind.CLOSE)
    assert port.engine.closed_event.wait(TIMEOUT) and port.engine.closed == [9]
    assert user.recv(10) == b""  # the local end was closed
    user.close()


def test_frames_for_no_channel_and_other_kinds(port: Port) -> None:
    user = _socket_endpoint(port, 1)
    port.thread.start()
    for kind in (FrameKind.DATA, FrameKind.CREDIT, FrameKind.EOF, FrameKind.CLOSE):
        port.send(42, kind, b"\0\0\0\0")  # no such channel: ignored
    port.send(0, FrameKind.PORTS, b"")
    port.send(0, FrameKind.READY, b"")
    user.sendall(b"ping")  # still serving
    assert port.frame_of_kind(FrameKind.DATA).payload == b"ping"
    assert [frame.kind for frame in port.engine.other_frames] == [FrameKind.PORTS, FrameKind.READY]
    user.close()


def test_descriptors_sent_on_a_local_socket_are_refused_and_closed(port: Port) -> None:
    user = _socket_endpoint(port, 2)
    port.thread.start()
    passed_read, passed_write = os.pipe()
    socket.send_fds(user, [b"with fd"], [passed_read])
    os.close(passed_read)
    assert port.frame_of_kind(FrameKind.DATA).payload == b"with fd"
    # The engine closed its copy: the pipe's only reader is gone.
    with pytest.raises(BrokenPipeError):
        os.write(passed_write, b"x")
    os.close(passed_write)
    user.close()


def test_garbage_on_the_port_stops_the_engine(port: Port) -> None:
    port.thread.start()
    port.sock.sendall(b"\xff" * 64)
    port.thread.join(TIMEOUT)
    assert not port.thread.is_alive()


def test_a_local_end_whose_reader_left_is_closed(port: Port) -> None:
    read_end, write_end = os.pipe()
    port.engine.add(Endpoint(4, -1, write_end))
    os.close(read_end)
    port.thread.start()
    port.send(4, FrameKind.DATA, b"nobody reads this")
    assert port.frame_of_kind(FrameKind.CLOSE).channel == 4
    assert port.engine.closed_event.wait(TIMEOUT) and port.engine.closed == [4]
