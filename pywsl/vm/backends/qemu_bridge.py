"""The host end of the channel port: descriptors in WSL's messages become channels over the port.

``CoreVm`` and ``CoreInstance`` pass descriptors with their messages, as on the namespaces
backend. A descriptor cannot cross a VM, so the monitor reads each message channel's bytes with
their ``SCM_RIGHTS`` and replaces every descriptor before the bytes go on (``ATTACH``), by the
message's type and the descriptor's place in it:

* a stream socket (an init channel, a session leader's, a relay's control or exit channel, a
  console stream) becomes a new channel both ways; the ones that carry WSL messages (``LaunchInit``'s
  init channel, ``CreateSession``'s leader channel) are read the same way in turn;
* another stream (a pipe, a file, ``/dev/null``) becomes a channel one way: the guest reads it
  (stdin, an archive to import) or writes it (stdout, stderr, an exported archive); it must be
  open for that direction. A FIFO is reopened (``/proc/self/fd``, the same direction) so that it
  can be used without blocking and without changing the caller's own open file; a descriptor
  given twice (``2>&1``) stays one;
* a directory is attached to the VM's distributions folder (``qemu_shares``); in its place an
  image file or a block device (a distribution on a disk, a disk to mount) is attached to the
  VM's SCSI controller (``qemu_disks``) and named by its LUN.

Only the messages listed in ``ROLES`` may carry descriptors; any other descriptor is closed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
from dataclasses import dataclass, field
from enum import Enum

from pywsl.vm.backends.qemu_disks import DiskAttacher
from pywsl.vm.backends.qemu_shares import DistributionShare
from pywsl.wire.enums import LX_MESSAGE_TYPE
from pywsl.wire.framing import HEADER_SIZE, parse_header
from pywsl.wire.port_engine import Endpoint, PortEngine, stream_endpoint
from pywsl.wire.port_mux import GUEST_CHANNELS, AttachEntry, AttachKind, FrameKind, encode_attach

log = logging.getLogger("pywsl.qemu-bridge")

__all__ = ["ROLES", "MessageCursor", "Role", "translate"]


class Role(Enum):
    DIRECTORY = "directory"
    CHANNEL = "channel"  # a socket carrying WSL messages
    STREAM = "stream"  # a socket of raw bytes
    INPUT = "input"  # the guest reads it
    OUTPUT = "output"  # the guest writes it


T = LX_MESSAGE_TYPE
D, C, S, IN, OUT = Role.DIRECTORY, Role.CHANNEL, Role.STREAM, Role.INPUT, Role.OUTPUT
ROLES: dict[int, tuple[Role, ...]] = {
    T.LxMiniInitMessageLaunchInit: (D, C),
    T.LxMiniInitMessageImport: (D, S, IN, OUT),
    T.LxMiniInitMessageImportInplace: (D, S, IN, OUT),
    T.LxMiniInitMessageExport: (D, S, OUT, OUT),
    T.LxMiniInitMessageResizeDistribution: (D, S, OUT),
    T.LxMiniInitMessageMount: (D, S),
    T.LxMiniInitMessageDetach: (D, S),
    T.LxInitMessageCreateSession: (C,),
    T.LxInitMessageCreateProcessUtilityVm: (IN, OUT, OUT, S, S),
}


@dataclass
class MessageCursor:
    """Where WSL messages start in a stream read in pieces."""

    remaining: int = 0  # bytes of the current message still to come
    header: bytearray = field(default_factory=bytearray)

    def until_boundary(self) -> int:
        """Bytes up to the end of the current message (or of the next message's header): reading no
        more keeps a message's descriptors, which come with its first bytes, at a read's start."""
        return self.remaining or HEADER_SIZE - len(self.header)

    def feed(self, data: bytes) -> list[tuple[int, int | None]]:
        """(offset, message type) of each message that starts in ``data``."""
        starts: list[tuple[int, int | None]] = []
        offset = 0
        while offset < len(data):
            if self.remaining:
                step = min(self.remaining, len(data) - offset)
                self.remaining -= step
                offset += step
                continue
            if not self.header:
                starts.append((offset, None))
            need = HEADER_SIZE - len(self.header)
            self.header += data[offset : offset + need]
            offset += min(need, len(data) - offset)
            if len(self.header) == HEADER_SIZE:
                header = parse_header(self.header)
                if starts and starts[-1][1] is None:
                    starts[-1] = (starts[-1][0], header.message_type)
                self.remaining = max(0, header.message_size - HEADER_SIZE)
                self.header = bytearray()
        return starts


@dataclass
class Bridge:
    """What the monitor keeps to translate descriptors."""

    engine: PortEngine
    share: DistributionShare | None
    disks: DiskAttacher | None = None
    # channels made for descriptors (the host's own connections count up from 1; the guest's
    # channels start at GUEST_CHANNELS)
    next_channel: int = 1 << 31

    def new_channel(self) -> int:
        channel = self.next_channel
        self.next_channel = self.next_channel + 1 if self.next_channel + 1 < GUEST_CHANNELS else 1 << 31
        return channel


def _is_stream_socket(mode: int, fd: int) -> bool:
    if not stat.S_ISSOCK(mode):
        return False
    sock = socket.socket(fileno=fd)
    try:
        return sock.type == socket.SOCK_STREAM
    finally:
        sock.detach()


def _entry(bridge: Bridge, fd: int, role: Role, seen: dict[tuple[int, int], int], index: int) -> AttachEntry:
    """The entry for one descriptor (taken over: closed or kept by a new endpoint)."""
    info = os.fstat(fd)
    if role is Role.DIRECTORY:
        if stat.S_ISREG(info.st_mode) or stat.S_ISBLK(info.st_mode):
            if bridge.disks is None:
                os.close(fd)
                raise OSError("this VM takes no disks")
            return AttachEntry(AttachKind.DISK, bridge.disks.attach(fd))  # takes fd over
        try:
            if not stat.S_ISDIR(info.st_mode) or bridge.share is None:
                raise OSError("not a directory the VM can be given")
            return AttachEntry(AttachKind.DIRECTORY, 0, bridge.share.attach(fd))
        finally:
            os.close(fd)
    key = (info.st_dev, info.st_ino)
    if role is Role.OUTPUT and key in seen:
        os.close(fd)
        return AttachEntry(AttachKind.SAME, seen[key])
    channel = bridge.new_channel()
    if _is_stream_socket(info.st_mode, fd):
        endpoint = Endpoint(channel, fd, fd, is_socket=True)
        if role is Role.CHANNEL:
            endpoint.data = MessageCursor()
        bridge.engine.add(endpoint)
        kind = AttachKind.SOCKET
    elif role in (Role.INPUT, Role.OUTPUT):
        bridge.engine.add(stream_endpoint(channel, fd, local_reads=role is Role.INPUT))
        kind = AttachKind.PIPE_IN if role is Role.INPUT else AttachKind.PIPE_OUT
    else:
        os.close(fd)
        raise OSError("a channel descriptor is not a stream socket")
    if role is Role.OUTPUT:
        seen[key] = index
    return AttachEntry(kind, channel)


def _pass_through(bridge: Bridge, endpoint: Endpoint, data: bytes, fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)
    if fds:
        log.warning("channel %d: closed %d descriptor(s) no message may carry", endpoint.channel, len(fds))
    if data:
        bridge.engine.send_data(endpoint, data)


def _entries(bridge: Bridge, fds: list[int], roles: tuple[Role, ...]) -> list[AttachEntry]:
    """One entry per descriptor (all taken over); on failure every one is closed again."""
    entries: list[AttachEntry] = []
    try:
        if len(fds) != len(roles):
            raise OSError(f"{len(fds)} descriptors for a message that carries {len(roles)}")
        seen: dict[tuple[int, int], int] = {}
        for index, (fd, role) in enumerate(zip(fds, roles, strict=True)):
            fds[index] = -1
            entries.append(_entry(bridge, fd, role, seen, index))
    except OSError:
        for fd in fds:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        for entry in entries:
            if entry.kind is AttachKind.DISK and bridge.disks is not None:
                bridge.disks.release(entry.channel)
                continue
            made = bridge.engine.endpoints.get(entry.channel)
            if entry.kind in (AttachKind.SOCKET, AttachKind.PIPE_IN, AttachKind.PIPE_OUT) and made:
                bridge.engine.close(made, tell_peer=False)
        raise
    return entries


def translate(bridge: Bridge, endpoint: Endpoint, data: bytes, fds: list[int]) -> None:
    """Send ``data`` read from ``endpoint`` with ``fds`` in their place (``ATTACH`` before the
    message they came with). Descriptors a message may not carry are closed."""
    cursor = endpoint.data if isinstance(endpoint.data, MessageCursor) else None
    starts = cursor.feed(data) if cursor is not None else []
    if not fds or not starts or starts[-1][1] not in ROLES:
        _pass_through(bridge, endpoint, data, fds)
        return
    offset, message_type = starts[-1]
    try:
        entries = _entries(bridge, fds, ROLES[message_type or 0])
    except OSError as error:
        log.error("channel %d: cannot pass a message's descriptors into the VM: %s", endpoint.channel, error)
        bridge.engine.close(endpoint, tell_peer=True)
        return
    if offset:
        bridge.engine.send_data(endpoint, data[:offset])
    bridge.engine.send_frame(endpoint.channel, FrameKind.ATTACH, encode_attach(entries))
    bridge.engine.send_data(endpoint, data[offset:])
