"""The guest end of the channel port (``pywsl.wire.port_mux``): one local stream per channel.

The host multiplexes every connection to the VM's ``mini_init.sock`` over one virtio-serial port.
In the guest a process of its own (``run_demux``) splits the port again: for each ``OPEN`` it
connects to pid 1's listening socket (an abstract AF_UNIX name, so mini_init accepts channels as
it would on any listener). Descriptors never cross the VM: for an ``ATTACH`` it makes each one
here (a socket pair, a pipe, a folder of the shared distributions folder opened ``O_PATH``),
keeps its own end as a new channel and passes the other with the next bytes of the channel, so
mini_init, init and the relays get descriptors exactly as on the namespaces backend. With a
network (NAT) it reports every second the TCP ports listening on all addresses (``PORTS``), for
``localhostForwarding``.
The port closing (the host side went away) ends the process.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import time

from pywsl.wire.errors import ProtocolError
from pywsl.wire.port_engine import Endpoint, PortEngine
from pywsl.wire.port_mux import (
    AttachEntry,
    AttachKind,
    Frame,
    FrameKind,
    decode_attach,
    encode_names,
    encode_ports,
)

log = logging.getLogger("pywsl.port_demux")

PORT_NAME = "pywsl.mux"
PORTS_FOLDER = "/sys/class/virtio-ports"
DISTRIBUTIONS_FOLDER = "/run/pywsl/distributions"
PORT_SCAN_INTERVAL = 1.0
STREAM_BUFFER = 1024 * 1024  # the pipes and socket pairs made for a process's streams
_TCP_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")
_LISTEN = "0A"
_ANY_ADDRESSES = {"00000000", "00000000000000000000000000000000"}


def find_port(name: str = PORT_NAME) -> str | None:
    """The device node of the virtio-serial port called ``name`` (``/dev/vportNpM``), if present."""
    try:
        entries = sorted(os.listdir(PORTS_FOLDER))
    except OSError:
        return None
    for entry in entries:
        try:
            with open(os.path.join(PORTS_FOLDER, entry, "name")) as handle:
                if handle.read().strip() == name:
                    return f"/dev/{entry}"
        except OSError:
            continue
    return None


def listening_ports() -> list[int]:
    """TCP ports a socket listens on for every address (what the host can forward to)."""
    ports: set[int] = set()
    for table in _TCP_TABLES:
        with contextlib.suppress(OSError), open(table) as handle:
            for line in handle.readlines()[1:]:
                words = line.split()
                if len(words) > 3 and words[3] == _LISTEN:
                    address, _colon, port = words[1].partition(":")
                    if address in _ANY_ADDRESSES:
                        ports.add(int(port, 16))
    return sorted(ports)


class PortDemux(PortEngine):
    """Splits the port into local streams; channels the host opens connect to ``listen_address``."""

    def __init__(
        self,
        port_fd: int,
        listen_address: str,
        distributions: str = DISTRIBUTIONS_FOLDER,
        *,
        report_ports: bool = False,
    ) -> None:
        super().__init__(port_fd)
        self.listen_address = listen_address
        self.distributions = distributions
        self.report_ports = report_ports
        self.reported_ports: list[int] = []
        self.next_scan = 0.0

    def run(self) -> None:
        self.send_frame(0, FrameKind.READY)
        try:
            super().run()
        finally:
            for endpoint in list(self.endpoints.values()):
                endpoint.close_fds()
            self.endpoints.clear()

    def tick(self) -> float | None:
        """Send the listening ports when they changed (looked at every ``PORT_SCAN_INTERVAL``)."""
        if not self.report_ports:
            return None
        now = time.monotonic()
        if now >= self.next_scan:
            self.next_scan = now + PORT_SCAN_INTERVAL
            ports = listening_ports()
            if ports != self.reported_ports:
                self.reported_ports = ports
                self.send_frame(0, FrameKind.PORTS, encode_ports(ports))
        return self.next_scan - now

    def on_frame(self, frame: Frame) -> None:
        if frame.kind is FrameKind.OPEN:
            self._open(frame.channel)
        elif frame.kind is FrameKind.ATTACH:
            self._attach(frame)

    def _open(self, channel: int) -> None:
        if channel in self.endpoints or channel == 0:
            self.send_frame(channel, FrameKind.CLOSE)
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(self.listen_address)
        except OSError as error:
            log.error("cannot reach pid 1 for a new channel: %s", error)
            sock.close()
            self.send_frame(channel, FrameKind.CLOSE)
            return
        sock.setblocking(False)
        fd = sock.detach()
        self.add(Endpoint(channel, fd, fd, is_socket=True))

    def _attach(self, frame: Frame) -> None:
        """Make the descriptors of an ``ATTACH``; they go with the channel's next bytes."""
        endpoint = self.endpoints.get(frame.channel)
        made: list[int] = []
        opened: list[str] = []
        try:
            entries = decode_attach(frame.payload)
            for entry in entries:
                made.append(self._make(entry, made, opened))
        except (OSError, ProtocolError, UnicodeDecodeError) as error:
            log.error("cannot make the descriptors of channel %d: %s", frame.channel, error)
            for fd in made:
                os.close(fd)
            if endpoint is not None:
                self.close(endpoint, tell_peer=True)
            return
        finally:
            if opened:
                self.send_frame(0, FrameKind.RELEASED, encode_names(opened))
        if endpoint is None:
            for fd in made:
                os.close(fd)
            return
        endpoint.next_fds.extend(made)

    def _make(self, entry: AttachEntry, made: list[int], opened: list[str]) -> int:
        """The descriptor to pass for ``entry``; this side's end becomes channel ``entry.channel``."""
        if entry.kind is AttachKind.SAME:
            return os.dup(made[entry.channel])
        if entry.kind is AttachKind.DIRECTORY:
            opened.append(entry.name)
            if not entry.name.isdigit():
                raise OSError(f"invalid shared folder name {entry.name!r}")
            flags = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
            return os.open(os.path.join(self.distributions, entry.name), flags)
        if entry.channel in self.endpoints or entry.channel == 0:
            raise OSError(f"channel {entry.channel} is in use")
        if entry.kind is AttachKind.SOCKET:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            for sock in (ours, theirs):
                _large_buffers(sock)
            ours.setblocking(False)
            fd = ours.detach()
            self.add(Endpoint(entry.channel, fd, fd, is_socket=True))
            return theirs.detach()
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        with contextlib.suppress(OSError):
            fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, STREAM_BUFFER)
        if entry.kind is AttachKind.PIPE_IN:
            os.set_blocking(write_end, False)
            self.add(Endpoint(entry.channel, -1, write_end))
            return read_end
        os.set_blocking(read_end, False)
        self.add(Endpoint(entry.channel, read_end, -1))
        return write_end


def _large_buffers(sock: socket.socket) -> None:
    for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, option, STREAM_BUFFER)


def run_demux(port_fd: int, listen_address: str) -> None:
    """The demultiplexer's process: copy until the port closes."""
    os.set_blocking(port_fd, False)
    report_ports = os.environ.get("PYWSL_NETWORK") == "nat"  # the kernel command line's setting
    PortDemux(port_fd, listen_address, report_ports=report_ports).run()
