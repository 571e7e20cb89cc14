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

Interop the other way round: pid 1 passes each interop connection of a distribution here (on
the socket ``interop_source``); it becomes a channel the guest opens (``INTEROP``, numbered from
``GUEST_CHANNELS``), and the request's stdin, stdout and stderr become channels of their own
(``ATTACH`` to the host: pipes the host makes, this side reading or writing the caller's
descriptors), so the host's interop worker gets descriptors as on the namespaces backend. Only the
first message of the connection (the request) may carry descriptors, exactly three.
The port closing (the host side went away) ends the process.
"""

from __future__ import annotations

import _socket
import errno
import os
import struct
import time

from pywsl.guest import disks, guest_log
from pywsl.lean_context import suppress
from pywsl.wire import unix_sockets as socket
from pywsl.wire.errors import ProtocolError
from pywsl.wire.port_engine import Endpoint, PortEngine, stream_endpoint
from pywsl.wire.port_mux import (
    GUEST_CHANNELS,
    AttachEntry,
    AttachKind,
    Frame,
    FrameKind,
    decode_attach,
    encode_attach,
    encode_names,
    encode_ports,
)

log = guest_log.getLogger("pywsl.port_demux")

PORT_NAME = "pywsl.mux"
PORTS_FOLDER = "/sys/class/virtio-ports"
DISTRIBUTIONS_FOLDER = "/run/pywsl/distributions"
PORT_SCAN_INTERVAL = 1.0
DISK_RELEASED = b"D"  # pid 1 -> here, with the LUN (u32): a use of that disk ended
_LUN = struct.Struct("<I")
INTEROP_STREAMS = 3  # stdin, stdout, stderr of an interop request
_TCP_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")
_LISTEN = "0A"
_ANY_ADDRESSES = {"00000000", "00000000000000000000000000000000"}


def _open_disk(lun: int) -> int:
    """The device node of the disk the host attached at ``lun``, opened for the message; a disk
    attached read-only is opened read-only. A disk just plugged in answers ENXIO until the
    kernel has finished probing it: that is waited for, bounded like its node's appearance."""
    deadline = time.monotonic() + disks.DEVICE_TIMEOUT
    while True:
        try:
            device = disks.device_for_lun(lun, max(0.0, deadline - time.monotonic()))
            try:
                return os.open(device, os.O_RDWR | os.O_CLOEXEC)
            except OSError as error:
                if error.errno not in (errno.EROFS, errno.EACCES):
                    raise
                return os.open(device, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as error:
            if error.errno in (errno.ENXIO, errno.ENOMEDIUM) and time.monotonic() < deadline:
                time.sleep(0.005)
                continue
            raise OSError(error.errno, f"disk at LUN {lun}: {error.strerror}") from None


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
        with suppress(OSError), open(table) as handle:
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
        interop_source: _socket.socket | None = None,
    ) -> None:
        super().__init__(port_fd)
        self.listen_address = listen_address
        self.distributions = distributions
        self.report_ports = report_ports
        self.reported_ports: list[int] = []
        self.next_scan = 0.0
        self.next_channel = GUEST_CHANNELS
        self.interop_source = interop_source
        self.from_pid1 = bytearray()
        if interop_source is not None:
            self.extra[interop_source.fileno()] = self._receive_interop

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
        entries: list[AttachEntry] = []
        try:
            entries = decode_attach(frame.payload)
            for entry in entries:
                made.append(self._make(entry, made, opened))
        except (OSError, ProtocolError, UnicodeDecodeError) as error:
            log.error("cannot make the descriptors of channel %d: %s", frame.channel, error)
            self._drop_attached(made, entries)
            if endpoint is not None:
                self.close(endpoint, tell_peer=True)
            return
        finally:
            if opened:
                self.send_frame(0, FrameKind.RELEASED, encode_names(opened))
        if endpoint is None:
            self._drop_attached(made, entries)
            return
        endpoint.next_fds.extend(made)

    def _drop_attached(self, made: list[int], entries: list[AttachEntry]) -> None:
        """Descriptors that will not be delivered: closed; the channels the host made for them
        closed on both sides (so that nobody waits on them); the host's disk uses for them ended."""
        for fd in made:
            os.close(fd)
        for entry in entries:
            if entry.kind in (AttachKind.SOCKET, AttachKind.PIPE_IN, AttachKind.PIPE_OUT):
                endpoint = self.endpoints.get(entry.channel)
                if endpoint is not None:
                    self.close(endpoint, tell_peer=True)
                elif entry.channel < GUEST_CHANNELS:
                    self.send_frame(entry.channel, FrameKind.CLOSE)
        lost = [str(entry.channel) for entry in entries if entry.kind is AttachKind.DISK]
        if lost:
            self.send_frame(0, FrameKind.DETACH, encode_names(lost))

    def _make(self, entry: AttachEntry, made: list[int], opened: list[str]) -> int:
        """The descriptor to pass for ``entry``; this side's end becomes channel ``entry.channel``."""
        if entry.kind is AttachKind.DIRECTORY:
            opened.append(entry.name)
            if not entry.name.isdigit():
                raise OSError(f"invalid shared folder name {entry.name!r}")
            flags = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
            return os.open(os.path.join(self.distributions, entry.name), flags)
        if entry.kind is AttachKind.DISK:
            return _open_disk(entry.channel)
        if entry.channel >= GUEST_CHANNELS:
            raise OSError(f"channel {entry.channel} is the guest's to open")
        return self.attached_descriptor(entry, made)

    # -- interop: channels the guest opens ---------------------------------------------------------

    def _new_channel(self) -> int:
        channel = self.next_channel
        self.next_channel = channel + 1 if channel < 0xFFFF_FFFF else GUEST_CHANNELS
        return channel

    def _receive_interop(self) -> None:
        """From pid 1: interop connections (``I`` with the descriptor), each a new channel
        (``INTEROP``); and disks whose use ended (``D`` and the LUN, u32), for the host to detach."""
        assert self.interop_source is not None
        try:
            data, fds, _flags, _address = socket.recv_fds(
                self.interop_source, 256, 4, socket.MSG_DONTWAIT | socket.MSG_CMSG_CLOEXEC
            )
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data, fds = b"", []
        if not data and not fds:  # pid 1 is gone (the machine restarts)
            del self.extra[self.interop_source.fileno()]
            return
        self.from_pid1 += data
        released: list[str] = []
        while self.from_pid1:
            if self.from_pid1[:1] == DISK_RELEASED:
                if len(self.from_pid1) < 1 + _LUN.size:
                    break
                released.append(str(_LUN.unpack_from(self.from_pid1, 1)[0]))
                del self.from_pid1[: 1 + _LUN.size]
            else:
                del self.from_pid1[:1]
        if released:
            self.send_frame(0, FrameKind.DETACH, encode_names(released))
        for fd in fds:
            channel = self._new_channel()
            if channel in self.endpoints:
                os.close(fd)
                continue
            self.add(Endpoint(channel, fd, fd, is_socket=True, data=InteropCall()))
            self.send_frame(channel, FrameKind.INTEROP)

    def on_local_data(self, endpoint: Endpoint, data: bytes, fds: list[int]) -> None:
        call = endpoint.data
        if isinstance(call, InteropCall) and not call.request_seen:
            call.request_seen = True
            if fds:
                try:
                    entries = self._interop_streams(fds)
                except OSError as error:
                    log.error("interop channel %d: %s", endpoint.channel, error)
                    self.close(endpoint, tell_peer=True)
                    return
                self.send_frame(endpoint.channel, FrameKind.ATTACH, encode_attach(entries))
                fds = []
        super().on_local_data(endpoint, data, fds)

    def _interop_streams(self, fds: list[int]) -> list[AttachEntry]:
        """The request's stdin, stdout and stderr (all taken over) as channels this side reads or
        writes; ``2>&1`` stays one stream."""
        entries: list[AttachEntry] = []
        made: list[Endpoint] = []
        seen: dict[tuple[int, int], int] = {}
        try:
            if len(fds) != INTEROP_STREAMS:
                raise OSError(f"{len(fds)} descriptors with an interop request, not {INTEROP_STREAMS}")
            for index, fd in enumerate(fds):
                fds[index] = -1
                info = os.fstat(fd)
                key = (info.st_dev, info.st_ino)
                if index and key in seen:
                    os.close(fd)
                    entries.append(AttachEntry(AttachKind.SAME, seen[key]))
                    continue
                channel = self._new_channel()
                made.append(self.add(stream_endpoint(channel, fd, local_reads=index == 0)))
                entries.append(
                    AttachEntry(AttachKind.PIPE_IN if index == 0 else AttachKind.PIPE_OUT, channel)
                )
                if index:
                    seen[key] = index
        except OSError:
            for fd in fds:
                if fd >= 0:
                    os.close(fd)
            for endpoint in made:
                self.close(endpoint, tell_peer=False)
            raise
        return entries


class InteropCall:
    """What the demultiplexer keeps with an interop connection's channel."""

    def __init__(self) -> None:
        self.request_seen = False  # the first bytes (the request, with its descriptors) went on


def run_demux(port_fd: int, listen_address: str, interop_source: _socket.socket | None = None) -> None:
    """The demultiplexer's process: copy until the port closes."""
    os.set_blocking(port_fd, False)
    report_ports = os.environ.get("PYWSL_NETWORK") == "nat"  # the kernel command line's setting
    PortDemux(port_fd, listen_address, report_ports=report_ports, interop_source=interop_source).run()
