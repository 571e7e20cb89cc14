"""The guest's port demultiplexer without a VM: its port a socket pair whose other end this test
reads and writes frame by frame as the host would, pid 1 a listening socket and the socket it
passes interop connections and released disks on. The channels' happy paths run end to end in
test_vm_qemu; these are the refusals and the bookkeeping around them."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pywsl.guest import port_demux
from pywsl.guest.port_demux import DISK_RELEASED, PortDemux
from pywsl.wire.port_mux import (
    GUEST_CHANNELS,
    AttachEntry,
    AttachKind,
    Frame,
    FrameKind,
    FrameReader,
    decode_attach,
    decode_names,
    decode_ports,
    encode_attach,
    encode_frame,
)

TIMEOUT = 10.0


class Guest:
    """A running demultiplexer and the host's end of its port."""

    def __init__(self, tmp_path: Path, *, listening: bool = True, report_ports: bool = False) -> None:
        self.address = f"\0pywsl-test-demux-{os.getpid()}-{time.monotonic_ns()}"
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if listening:
            self.server.bind(self.address)
            self.server.listen(8)
        self.server.settimeout(TIMEOUT)
        self.distributions = tmp_path / "distributions"
        self.distributions.mkdir()
        self.host, port = socket.socketpair()
        self.port = port
        port.setblocking(False)
        self.pid1, demux_end = socket.socketpair()
        self.demux_end = demux_end
        self.demux = PortDemux(
            port.fileno(),
            self.address,
            str(self.distributions),
            report_ports=report_ports,
            interop_source=demux_end,
        )
        self.thread = threading.Thread(target=self.demux.run, daemon=True)
        self.thread.start()
        self.reader = FrameReader()
        self.frames: list[Frame] = []
        self.host.settimeout(TIMEOUT)
        assert self.next_frame() == Frame(0, FrameKind.READY)

    def send(self, channel: int, kind: FrameKind, payload: bytes = b"") -> None:
        self.host.sendall(encode_frame(channel, kind, payload))

    def next_frame(self) -> Frame:
        """The next frame other than flow control (``CREDIT``)."""
        while True:
            while not self.frames:
                data = self.host.recv(65536)
                assert data, "the demultiplexer closed its port"
                self.frames += self.reader.feed(data)
            frame = self.frames.pop(0)
            if frame.kind is not FrameKind.CREDIT:
                return frame

    def next_frames(self, count: int) -> list[Frame]:
        return [self.next_frame() for _ in range(count)]

    def close(self) -> None:
        self.host.shutdown(socket.SHUT_RDWR)  # the host went away: the demultiplexer ends
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive()
        for sock in (self.host, self.port, self.pid1, self.demux_end, self.server):
            sock.close()


@pytest.fixture
def guest(tmp_path: Path) -> Iterator[Guest]:
    running = Guest(tmp_path)
    yield running
    running.close()


def test_channel_zero_and_a_channel_in_use_are_refused(guest: Guest) -> None:
    guest.send(0, FrameKind.OPEN)
    assert guest.next_frame() == Frame(0, FrameKind.CLOSE)
    guest.send(5, FrameKind.OPEN)
    accepted, _address = guest.server.accept()
    guest.send(5, FrameKind.DATA, b"hello")
    accepted.settimeout(TIMEOUT)
    assert accepted.recv(16) == b"hello"
    guest.send(5, FrameKind.OPEN)  # the host never opens a channel twice
    assert guest.next_frame() == Frame(5, FrameKind.CLOSE)
    accepted.close()


def test_a_channel_pid1_does_not_accept_is_closed(tmp_path: Path) -> None:
    guest = Guest(tmp_path, listening=False)
    try:
        guest.send(7, FrameKind.OPEN)
        assert guest.next_frame() == Frame(7, FrameKind.CLOSE)
    finally:
        guest.close()


def test_a_shared_folder_is_passed_opened_and_reported_released(guest: Guest) -> None:
    (guest.distributions / "12").mkdir()
    guest.send(3, FrameKind.OPEN)
    accepted, _address = guest.server.accept()
    guest.send(3, FrameKind.ATTACH, encode_attach([AttachEntry(AttachKind.DIRECTORY, 0, "12")]))
    assert guest.next_frame() == Frame(0, FrameKind.RELEASED, b"12")
    guest.send(3, FrameKind.DATA, b"with it")
    data, fds, _flags, _address = socket.recv_fds(accepted, 64, 4)
    assert data == b"with it" and len(fds) == 1
    assert os.readlink(f"/proc/self/fd/{fds[0]}") == str(guest.distributions / "12")
    os.close(fds[0])
    accepted.close()


def test_a_list_that_cannot_be_made_closes_the_channel_and_everything_made_for_it(guest: Guest) -> None:
    """A bad folder name after a socket: the socket's channel is closed on both sides, the
    channel that asked is closed, and the disk named after it is given back to the host."""
    guest.send(4, FrameKind.OPEN)
    accepted, _address = guest.server.accept()
    entries = [
        AttachEntry(AttachKind.SOCKET, 40),
        AttachEntry(AttachKind.DIRECTORY, 0, "../etc"),
        AttachEntry(AttachKind.DISK, 2),
    ]
    guest.send(4, FrameKind.ATTACH, encode_attach(entries))
    frames = guest.next_frames(4)
    assert frames == [
        Frame(40, FrameKind.CLOSE),
        Frame(0, FrameKind.DETACH, b"2"),
        Frame(4, FrameKind.CLOSE),
        Frame(0, FrameKind.RELEASED, b"../etc"),
    ]
    accepted.settimeout(TIMEOUT)
    assert accepted.recv(16) == b""  # pid 1's end of the channel is closed
    accepted.close()


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        # for a channel nobody opened: made, then dropped (the socket's channel closed again)
        ([AttachEntry(AttachKind.SOCKET, 41)], [Frame(41, FrameKind.CLOSE)]),
        # a channel number of the guest's own range: refused, and nothing of the guest's closed
        ([AttachEntry(AttachKind.PIPE_IN, GUEST_CHANNELS + 1)], []),
    ],
)
def test_a_list_for_a_channel_that_is_not_open_is_dropped(
    guest: Guest, entries: list[AttachEntry], expected: list[Frame]
) -> None:
    guest.send(9, FrameKind.ATTACH, encode_attach(entries))
    guest.send(0, FrameKind.OPEN)  # a frame that is answered: the one before was dealt with
    frames = guest.next_frames(len(expected) + 1)
    assert frames == [*expected, Frame(0, FrameKind.CLOSE)]


def test_a_garbled_list_closes_the_channel(guest: Guest) -> None:
    guest.send(6, FrameKind.OPEN)
    accepted, _address = guest.server.accept()
    guest.send(6, FrameKind.ATTACH, b"\x01")
    assert guest.next_frame() == Frame(6, FrameKind.CLOSE)
    accepted.close()


def test_released_disks_from_pid1_are_detached_on_the_host(guest: Guest) -> None:
    lun = (3).to_bytes(4, "little")
    guest.pid1.sendall(b"?" + DISK_RELEASED + lun[:2])  # an unknown byte is skipped; a LUN in two
    guest.pid1.sendall(lun[2:] + DISK_RELEASED + (70).to_bytes(4, "little"))
    frames = guest.next_frames(1)
    names = decode_names(frames[0].payload)
    if names == ["3"]:  # the two pieces read apart
        names += decode_names(guest.next_frame().payload)
    assert frames[0].kind is FrameKind.DETACH and names == ["3", "70"]


def _interop_call(guest: Guest, fds: list[int]) -> tuple[socket.socket, int]:
    """A caller's connection passed on by pid 1: its end, and the channel it became."""
    caller, connection = socket.socketpair()
    socket.send_fds(guest.pid1, [b"I"], [connection.fileno()])
    connection.close()
    frame = guest.next_frame()
    assert frame.kind is FrameKind.INTEROP and frame.channel >= GUEST_CHANNELS
    socket.send_fds(caller, [b"request"], fds)
    return caller, frame.channel


def test_an_interop_request_needs_exactly_three_descriptors(guest: Guest) -> None:
    read_end, write_end = os.pipe()
    caller, channel = _interop_call(guest, [read_end, write_end])
    assert guest.next_frame() == Frame(channel, FrameKind.CLOSE)
    caller.settimeout(TIMEOUT)
    assert caller.recv(16) == b""
    caller.close()
    for fd in (read_end, write_end):
        os.close(fd)


def test_an_interop_requests_streams_become_channels_of_their_own(guest: Guest) -> None:
    stdin_read, stdin_write = os.pipe()
    out_read, out_write = os.pipe()
    caller, channel = _interop_call(guest, [stdin_read, out_write, out_write])
    attach = guest.next_frame()
    assert attach.channel == channel and attach.kind is FrameKind.ATTACH
    entries = decode_attach(attach.payload)
    assert [entry.kind for entry in entries] == [AttachKind.PIPE_IN, AttachKind.PIPE_OUT, AttachKind.SAME]
    assert entries[2].channel == 1  # 2>&1: stderr is stdout's stream
    assert guest.next_frame() == Frame(channel, FrameKind.DATA, b"request")
    guest.send(entries[1].channel, FrameKind.DATA, b"from the host")
    assert os.read(out_read, 64) == b"from the host"
    for fd in (stdin_read, stdin_write, out_read, out_write):
        os.close(fd)
    caller.close()


def test_pid1_going_away_leaves_the_port_running(guest: Guest) -> None:
    guest.pid1.close()
    guest.send(0, FrameKind.OPEN)
    assert guest.next_frame() == Frame(0, FrameKind.CLOSE)
    assert guest.demux_end.fileno() not in guest.demux.extra


def test_listening_ports_on_every_address_are_reported(tmp_path: Path) -> None:
    with socket.socket() as everywhere, socket.socket() as local:
        everywhere.bind(("0.0.0.0", 0))
        everywhere.listen(1)
        local.bind(("127.0.0.1", 0))
        local.listen(1)
        port, local_port = everywhere.getsockname()[1], local.getsockname()[1]
        found = port_demux.listening_ports()
        assert port in found and local_port not in found
        guest = Guest(tmp_path, report_ports=True)
        try:
            frame = guest.next_frame()
            assert frame.kind is FrameKind.PORTS and port in decode_ports(frame.payload)
        finally:
            guest.close()


def test_a_port_that_is_not_there_is_not_found() -> None:
    assert port_demux.find_port("pywsl.no-such-port") is None
