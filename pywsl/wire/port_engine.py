"""The copying loop both ends of the channel port run (``pywsl.wire.port_mux``'s frames).

One thread, ``poll``, nothing blocks: every channel has a local end (a socket, or a pipe's read
and/or write end) and a window (``WINDOW`` bytes in flight, returned by ``CREDIT`` frames), the
port has an output queue. A channel ends when both directions have ended (``EOF`` each way) or at
once on ``CLOSE``. Subclasses (the host's monitor, the guest's demultiplexer) say how channels are
opened and how descriptors that travel with the bytes are handled.

Local descriptors are used without ``O_NONBLOCK`` where they may be shared with another process:
sockets with ``MSG_DONTWAIT``, other descriptors only after ``poll`` says they are ready (a
caller's FIFO is reopened, non-blocking, before it gets here; a regular file never blocks long).
"""

from __future__ import annotations

import array
import errno
import fcntl
import logging
import os
import select
import socket
import stat
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from pywsl.lean_context import suppress
from pywsl.wire.errors import ProtocolError
from pywsl.wire.port_mux import (
    MAX_PAYLOAD,
    WINDOW,
    AttachEntry,
    AttachKind,
    Frame,
    FrameKind,
    FrameReader,
    encode_frame,
)

__all__ = ["READ_SIZE", "STREAM_BUFFER", "Endpoint", "PortEngine", "large_buffers", "stream_endpoint"]

log = logging.getLogger("pywsl.port")

READ_SIZE = 256 * 1024  # a local read (and a DATA frame) at most
PORT_READ_SIZE = 1024 * 1024
CREDIT_BATCH = 64 * 1024
MAX_RECEIVED_FDS = 16
STREAM_BUFFER = 1024 * 1024  # the pipes and socket pairs made for a process's streams


@dataclass
class Endpoint:
    """The local end of one channel."""

    channel: int
    read_fd: int  # bytes from here go to the port; -1: this end only receives
    write_fd: int  # bytes from the port go here; -1: this end only sends
    is_socket: bool = False
    owns_fds: bool = True
    pending: deque[tuple[memoryview, list[int]]] = field(default_factory=deque)
    pending_bytes: int = 0  # received, not yet written here (at most WINDOW)
    in_flight: int = 0  # sent to the other side, not yet credited
    unreported: int = 0  # written here, not yet credited to the other side
    read_done: bool = False  # EOF sent (or nothing to read)
    peer_done: bool = False  # EOF received (or nothing to write)
    write_shut: bool = False
    next_fds: list[int] = field(default_factory=list)  # go with the next bytes from the port
    data: object = None  # what the subclass keeps with the channel

    def __post_init__(self) -> None:
        self.read_done = self.read_fd < 0
        self.peer_done = self.write_fd < 0
        self.write_shut = self.write_fd < 0

    def close_fds(self) -> None:
        for fds in [self.next_fds, *(fds for _data, fds in self.pending)]:
            for fd in fds:
                with suppress(OSError):
                    os.close(fd)
        self.pending.clear()
        self.next_fds = []
        if self.owns_fds:
            for fd in {self.read_fd, self.write_fd} - {-1}:
                with suppress(OSError):
                    os.close(fd)
        self.read_fd = self.write_fd = -1


class _Watch:
    """The descriptors one turn of the loop waits for, and what handles each."""

    def __init__(self) -> None:
        self.masks: dict[int, int] = {}
        self.handlers: dict[int, list[Callable[[int], None]]] = {}

    def add(self, fd: int, events: int, handler: Callable[[int], None]) -> None:
        self.masks[fd] = self.masks.get(fd, 0) | events
        self.handlers.setdefault(fd, []).append(handler)

    def poll(self, timeout_ms: int | None) -> list[tuple[int, int]]:
        poller = select.poll()
        for fd, mask in self.masks.items():
            poller.register(fd, mask)
        return poller.poll(timeout_ms)


class PortEngine:
    """Copies between the port and the channels' local ends until the port closes or ``stop``."""

    def __init__(self, port_fd: int) -> None:
        self.port_fd = port_fd
        self.reader = FrameReader()
        self.out = bytearray()
        self.endpoints: dict[int, Endpoint] = {}
        self.stopping = False
        self.extra: dict[int, Callable[[], None]] = {}  # more descriptors to watch for input

    # -- what subclasses provide -----------------------------------------------------------------

    def on_frame(self, frame: Frame) -> None:
        """A frame that is not about data: OPEN, ATTACH, RELEASED, PORTS, READY."""

    def on_local_data(self, endpoint: Endpoint, data: bytes, fds: list[int]) -> None:
        """Bytes read from a local end, with the descriptors that came with them (refused here)."""
        for fd in fds:
            os.close(fd)
        if data:
            self.send_data(endpoint, data)

    def read_limit(self, endpoint: Endpoint) -> int:
        """At most how many bytes the next read of ``endpoint`` may take (a message boundary)."""
        return READ_SIZE

    def on_closed(self, endpoint: Endpoint) -> None:
        """A channel ended (its descriptors are closed already)."""

    def tick(self) -> float | None:
        """Called on every turn of the loop; the seconds until the next call is needed (None: never)."""
        return None

    # -- sending -----------------------------------------------------------------------------------

    def send_frame(self, channel: int, kind: FrameKind, payload: bytes = b"") -> None:
        self.out += encode_frame(channel, kind, payload)

    def send_data(self, endpoint: Endpoint, data: bytes) -> None:
        for start in range(0, len(data), MAX_PAYLOAD):
            self.send_frame(endpoint.channel, FrameKind.DATA, data[start : start + MAX_PAYLOAD])
        endpoint.in_flight += len(data)

    def add(self, endpoint: Endpoint) -> Endpoint:
        old = self.endpoints.pop(endpoint.channel, None)
        if old is not None:
            old.close_fds()
        self.endpoints[endpoint.channel] = endpoint
        return endpoint

    def attached_descriptor(self, entry: AttachEntry, made: list[int]) -> int:
        """The descriptor to pass on for a ``SAME``, ``SOCKET``, ``PIPE_IN`` or ``PIPE_OUT`` entry
        of an ``ATTACH`` (``made``: those of the entries before it); this side's end becomes
        channel ``entry.channel``. OSError for anything else."""
        if entry.kind is AttachKind.SAME:
            return os.dup(made[entry.channel])
        if entry.channel in self.endpoints or entry.channel == 0:
            raise OSError(f"channel {entry.channel} is in use")
        if entry.kind is AttachKind.SOCKET:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            for sock in (ours, theirs):
                large_buffers(sock)
            ours.setblocking(False)
            fd = ours.detach()
            self.add(Endpoint(entry.channel, fd, fd, is_socket=True))
            return theirs.detach()
        if entry.kind not in (AttachKind.PIPE_IN, AttachKind.PIPE_OUT):
            raise OSError(f"a {entry.kind.name} entry cannot be made here")
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        with suppress(OSError):
            fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, STREAM_BUFFER)
        if entry.kind is AttachKind.PIPE_IN:
            os.set_blocking(write_end, False)
            self.add(Endpoint(entry.channel, -1, write_end))
            return read_end
        os.set_blocking(read_end, False)
        self.add(Endpoint(entry.channel, read_end, -1))
        return write_end

    def close(self, endpoint: Endpoint, *, tell_peer: bool) -> None:
        if self.endpoints.get(endpoint.channel) is endpoint:
            del self.endpoints[endpoint.channel]
        endpoint.close_fds()
        if tell_peer:
            self.send_frame(endpoint.channel, FrameKind.CLOSE)
        self.on_closed(endpoint)

    # -- the loop ----------------------------------------------------------------------------------

    def run(self) -> None:
        while not self.stopping:
            watch = _Watch()
            watch.add(self.port_fd, select.POLLIN | (select.POLLOUT if self.out else 0), self._on_port)
            for fd, callback in list(self.extra.items()):
                watch.add(fd, select.POLLIN, _ignoring_events(callback))
            for endpoint in list(self.endpoints.values()):
                self._watch_endpoint(endpoint, watch)
            wait = self.tick()
            try:
                ready = watch.poll(None if wait is None else max(0, int(wait * 1000)))
            except InterruptedError:
                continue
            for fd, events in ready:
                for handler in watch.handlers.get(fd, []):
                    handler(events)
                    if self.stopping:
                        return

    def _watch_endpoint(self, endpoint: Endpoint, watch: _Watch) -> None:
        if endpoint.read_fd >= 0 and not endpoint.read_done and endpoint.in_flight < WINDOW:
            watch.add(endpoint.read_fd, select.POLLIN, lambda events: self._readable(endpoint, events))
        if endpoint.write_fd >= 0 and not endpoint.write_shut:
            events = select.POLLOUT if endpoint.pending else 0
            if endpoint.write_fd != endpoint.read_fd or events:
                watch.add(endpoint.write_fd, events, lambda events: self._writable(endpoint, events))

    # -- the port ----------------------------------------------------------------------------------

    def _on_port(self, events: int) -> None:
        if events & select.POLLOUT and self.out:
            self._write_port()
        if events & (select.POLLIN | select.POLLHUP | select.POLLERR):
            self._read_port()

    def _write_port(self) -> None:
        """Write until the port takes no more (a virtio console takes 32 KiB per call)."""
        while self.out:
            try:
                written = os.write(self.port_fd, self.out[:PORT_READ_SIZE])
            except BlockingIOError:
                return
            except OSError as error:
                log.error("the channel port failed: %s", error)
                self.stopping = True
                return
            del self.out[:written]

    def _read_port(self) -> None:
        """Read until the port has no more, up to ``PORT_READ_SIZE`` (a virtio console gives one
        buffer, a page, per call: one poll per page would cost more than the copying)."""
        received = bytearray()
        while len(received) < PORT_READ_SIZE:
            try:
                data = os.read(self.port_fd, PORT_READ_SIZE - len(received))
            except BlockingIOError:
                break
            except OSError as error:
                log.error("the channel port failed: %s", error)
                self.stopping = True
                return
            if not data:
                self.stopping = True
                break
            received += data
        try:
            frames = self.reader.feed(bytes(received))
        except ProtocolError as error:
            log.error("the channel port: %s", error)
            self.stopping = True
            return
        for frame in frames:
            self._dispatch(frame)

    def _dispatch(self, frame: Frame) -> None:
        endpoint = self.endpoints.get(frame.channel)
        if frame.kind is FrameKind.DATA:
            if endpoint is not None and not endpoint.write_shut:
                endpoint.pending.append((memoryview(frame.payload), endpoint.next_fds))
                endpoint.next_fds = []
                endpoint.pending_bytes += len(frame.payload)
                if endpoint.pending_bytes > WINDOW:
                    log.error("channel %d: the other side sent more than its window", frame.channel)
                    self.close(endpoint, tell_peer=True)
        elif frame.kind is FrameKind.CREDIT:
            if endpoint is not None and len(frame.payload) == 4:
                endpoint.in_flight = max(0, endpoint.in_flight - int.from_bytes(frame.payload, "little"))
        elif frame.kind is FrameKind.EOF:
            if endpoint is not None:
                endpoint.peer_done = True
                self._after_write(endpoint)
        elif frame.kind is FrameKind.CLOSE:
            if endpoint is not None:
                self.close(endpoint, tell_peer=False)
        else:
            self.on_frame(frame)

    # -- local ends --------------------------------------------------------------------------------

    def _readable(self, endpoint: Endpoint, _events: int) -> None:
        if self.endpoints.get(endpoint.channel) is not endpoint or endpoint.read_done:
            return
        size = min(self.read_limit(endpoint), WINDOW - endpoint.in_flight)
        fds: list[int] = []
        try:
            if endpoint.is_socket:
                data, fds = _receive(endpoint.read_fd, size)
            else:
                data = os.read(endpoint.read_fd, size)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close(endpoint, tell_peer=True)
            return
        if data or fds:
            self.on_local_data(endpoint, data, fds)
        else:
            endpoint.read_done = True
            self.send_frame(endpoint.channel, FrameKind.EOF)
            self._finish_if_done(endpoint)

    def _writable(self, endpoint: Endpoint, events: int) -> None:
        if self.endpoints.get(endpoint.channel) is not endpoint:
            return
        if not endpoint.pending:
            if events & (select.POLLERR | select.POLLHUP) and not endpoint.is_socket:
                self.close(endpoint, tell_peer=True)  # the reader went away
            return
        data, fds = endpoint.pending[0]
        try:
            written = _send(endpoint, data, fds)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close(endpoint, tell_peer=True)
            return
        for fd in fds:
            os.close(fd)
        endpoint.pending[0] = (data[written:], [])
        endpoint.pending_bytes -= written
        if not endpoint.pending[0][0]:
            endpoint.pending.popleft()
        endpoint.unreported += written
        if endpoint.unreported >= CREDIT_BATCH or (not endpoint.pending and endpoint.unreported):
            self.send_frame(endpoint.channel, FrameKind.CREDIT, endpoint.unreported.to_bytes(4, "little"))
            endpoint.unreported = 0
        self._after_write(endpoint)

    def _after_write(self, endpoint: Endpoint) -> None:
        """Once the other side's EOF and everything before it are written, end this direction."""
        if not endpoint.peer_done or endpoint.pending or endpoint.write_shut:
            self._finish_if_done(endpoint)
            return
        endpoint.write_shut = True
        if endpoint.is_socket:
            with suppress(OSError):
                _shutdown_write(endpoint.write_fd)
        elif endpoint.write_fd >= 0 and endpoint.write_fd != endpoint.read_fd:
            if endpoint.owns_fds:
                os.close(endpoint.write_fd)
            endpoint.write_fd = -1
        self._finish_if_done(endpoint)

    def _finish_if_done(self, endpoint: Endpoint) -> None:
        if endpoint.read_done and endpoint.write_shut and not endpoint.pending:
            self.close(endpoint, tell_peer=False)


def large_buffers(sock: socket.socket) -> None:
    for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        with suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, option, STREAM_BUFFER)


def _reopened(fd: int, flags: int) -> int:
    """A FIFO opened anew, non-blocking (the caller's open file is unchanged)."""
    return os.open(f"/proc/self/fd/{fd}", flags | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)


def stream_endpoint(channel: int, fd: int, *, local_reads: bool) -> Endpoint:
    """The local end of a one-way stream (this side reads ``fd`` and sends, or receives and
    writes it); takes ``fd`` over. The descriptor must have been opened for that direction:
    reopening never gives more access than the caller had. A FIFO is reopened non-blocking."""
    mode = os.fstat(fd).st_mode
    access = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
    wanted = (os.O_RDONLY, os.O_RDWR) if local_reads else (os.O_WRONLY, os.O_RDWR)
    if access not in wanted:
        os.close(fd)
        raise OSError(f"a descriptor to {'read' if local_reads else 'write'} is not open for it")
    if stat.S_ISFIFO(mode):
        try:
            reopened = _reopened(fd, os.O_RDONLY if local_reads else os.O_WRONLY)
        finally:
            os.close(fd)
        fd = reopened
    if local_reads:
        return Endpoint(channel, fd, -1)
    return Endpoint(channel, -1, fd)


def _ignoring_events(callback: Callable[[], None]) -> Callable[[int], None]:
    return lambda _events: callback()


def _receive(fd: int, size: int) -> tuple[bytes, list[int]]:
    sock = socket.socket(fileno=fd)
    try:
        data, ancillary, _flags, _address = sock.recvmsg(
            size, socket.CMSG_SPACE(MAX_RECEIVED_FDS * 4), socket.MSG_DONTWAIT | socket.MSG_CMSG_CLOEXEC
        )
    finally:
        sock.detach()
    fds: list[int] = []
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            received = array.array("i")
            received.frombytes(payload[: len(payload) - len(payload) % received.itemsize])
            fds.extend(received)
    return data, fds


def _send(endpoint: Endpoint, data: memoryview, fds: list[int]) -> int:
    if not endpoint.is_socket:
        return os.write(endpoint.write_fd, data[:READ_SIZE])
    sock = socket.socket(fileno=endpoint.write_fd)
    try:
        if fds:
            ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
            return sock.sendmsg([data[:READ_SIZE]], ancillary, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
        return sock.send(data[:READ_SIZE], socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
    finally:
        sock.detach()


def _shutdown_write(fd: int) -> None:
    sock = socket.socket(fileno=fd)
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError as error:
        if error.errno != errno.ENOTCONN:
            raise
    finally:
        sock.detach()
