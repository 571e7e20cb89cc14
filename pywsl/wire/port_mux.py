"""Several byte streams over one port: how the ``qemu`` backend carries its channels.

A VM without AF_VSOCK still has a virtio-serial port, one byte stream between the host and the
guest. Both sides cut it into frames: ``channel`` (u32), ``kind`` (u8), ``length`` (u32), then
``length`` bytes. Little-endian, as WSL's messages.

* ``READY`` (channel 0): the guest's first frame, pid 1 serves.
* ``OPEN``: the host opens a channel for every connection to the VM's ``mini_init.sock``; the
  guest accepts it as a new mini_init connection.
* ``DATA``: the channel's bytes. ``CREDIT`` (u32): the receiver wrote that many bytes out, so the
  sender may send as many more; each side has at most ``WINDOW`` bytes in flight per channel,
  so one stalled reader never stops the other channels.
* ``EOF``: the sender has no more bytes for this channel (a half close); ``CLOSE``: the channel is
  gone in both directions (an error, or a reader that went away).
* ``ATTACH``: the descriptors that go with the next ``DATA`` of the channel, each one a new
  channel (a socket, a pipe the receiver reads or a pipe the receiver writes), a directory of the
  shared distributions folder, a disk the host attached to the VM (by its SCSI LUN), or the same
  as an earlier entry. No descriptor crosses the VM:
  each becomes a stream over the port, and the receiver makes the other ends. Host → guest for
  WSL's messages; guest → host only pipes (and ``SAME``), for an interop call's stdin, stdout
  and stderr.
* ``INTEROP`` (guest → host): the guest opens a channel for an interop connection (a host program
  called from a distribution); the host hands its end to an interop worker. Channels the guest
  opens are numbered from ``GUEST_CHANNELS`` up, the host's below.
* ``RELEASED`` (guest → host): the guest opened these directories; the host may detach them.
* ``DETACH`` (guest → host): one use of each of these disks (LUNs) ended; the host detaches a
  disk from the VM when every use it attached the disk for has ended.
* ``PORTS`` (guest → host): the TCP ports the guest listens on (u16 each), for
  ``localhostForwarding``.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from pywsl.wire.errors import ProtocolError

__all__ = [
    "GUEST_CHANNELS",
    "HEADER",
    "MAX_PAYLOAD",
    "WINDOW",
    "AttachEntry",
    "AttachKind",
    "Frame",
    "FrameKind",
    "FrameReader",
    "decode_attach",
    "decode_names",
    "decode_ports",
    "encode_attach",
    "encode_frame",
    "encode_names",
    "encode_ports",
]

HEADER = struct.Struct("<IBI")
MAX_PAYLOAD = 256 * 1024
WINDOW = 1024 * 1024  # bytes in flight per channel and direction
_COUNT = struct.Struct("<I")
_ENTRY = struct.Struct("<BIH")
_PORT = struct.Struct("<H")
MAX_ATTACH = 16
GUEST_CHANNELS = 0xC000_0000  # the first channel number the guest opens (the host's are below)


class FrameKind(enum.IntEnum):
    READY = 0
    OPEN = 1
    DATA = 2
    CLOSE = 3
    EOF = 4
    CREDIT = 5
    ATTACH = 6
    RELEASED = 7
    PORTS = 8
    INTEROP = 9
    DETACH = 10


class AttachKind(enum.IntEnum):
    SOCKET = 1  # a stream socket: both directions
    PIPE_IN = 2  # the receiver gets a pipe's read end; the sender sends the bytes
    PIPE_OUT = 3  # the receiver gets a pipe's write end; the sender receives the bytes
    DIRECTORY = 4  # a folder of the shared distributions folder, by name
    SAME = 5  # the same descriptor as entry ``channel`` of this list
    DISK = 6  # a disk attached to the VM's SCSI controller; ``channel`` is its LUN


@dataclass(frozen=True)
class AttachEntry:
    kind: AttachKind
    channel: int = 0  # the new channel (SOCKET, PIPE_IN, PIPE_OUT), the entry index (SAME), the LUN (DISK)
    name: str = ""  # DIRECTORY: its name in the shared folder


@dataclass(frozen=True)
class Frame:
    channel: int
    kind: FrameKind
    payload: bytes = b""


def encode_frame(channel: int, kind: FrameKind, payload: bytes = b"") -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"a port frame carries at most {MAX_PAYLOAD} bytes, not {len(payload)}")
    return HEADER.pack(channel, kind, len(payload)) + payload


def encode_attach(entries: list[AttachEntry]) -> bytes:
    parts = [_COUNT.pack(len(entries))]
    for entry in entries:
        name = entry.name.encode()
        parts.append(_ENTRY.pack(entry.kind, entry.channel, len(name)) + name)
    return b"".join(parts)


def _error(message: str, field: str) -> ProtocolError:
    return ProtocolError(message, struct="PORT_ATTACH", field=field)


def decode_attach(payload: bytes) -> list[AttachEntry]:
    if len(payload) < _COUNT.size:
        raise _error("truncated descriptor list", "Count")
    (count,) = _COUNT.unpack_from(payload)
    if count > MAX_ATTACH:
        raise _error(f"{count} descriptors (at most {MAX_ATTACH})", "Count")
    entries, offset = [], _COUNT.size
    for index in range(count):
        if len(payload) < offset + _ENTRY.size:
            raise _error("truncated descriptor entry", "Entry")
        kind, channel, length = _ENTRY.unpack_from(payload, offset)
        offset += _ENTRY.size
        name = payload[offset : offset + length].decode("utf-8", "strict")
        offset += length
        try:
            attach_kind = AttachKind(kind)
        except ValueError:
            raise _error(f"unknown descriptor kind {kind}", "Kind") from None
        if attach_kind is AttachKind.SAME and channel >= index:
            raise _error("a SAME entry names a later entry", "Channel")
        entries.append(AttachEntry(attach_kind, channel, name))
    return entries


def encode_names(names: list[str]) -> bytes:
    return b"\0".join(name.encode() for name in names)


def decode_names(payload: bytes) -> list[str]:
    return [name.decode("utf-8", "replace") for name in payload.split(b"\0") if name]


def encode_ports(ports: list[int]) -> bytes:
    return b"".join(_PORT.pack(port) for port in sorted(set(ports)))


def decode_ports(payload: bytes) -> list[int]:
    return [port for (port,) in _PORT.iter_unpack(payload[: len(payload) - len(payload) % _PORT.size])]


class FrameReader:
    """Frames out of the bytes read from the port, whatever pieces they arrive in."""

    def __init__(self) -> None:
        self._pending = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        self._pending += data
        frames = []
        offset = 0
        while len(self._pending) - offset >= HEADER.size:
            channel, kind, length = HEADER.unpack_from(self._pending, offset)
            if length > MAX_PAYLOAD:
                raise ProtocolError(
                    f"port frame of {length} bytes (at most {MAX_PAYLOAD})",
                    struct="PORT_FRAME",
                    field="Length",
                )
            try:
                frame_kind = FrameKind(kind)
            except ValueError:
                raise ProtocolError(
                    f"unknown port frame kind {kind}", struct="PORT_FRAME", field="Kind"
                ) from None
            if len(self._pending) - offset < HEADER.size + length:
                break
            start = offset + HEADER.size
            frames.append(Frame(channel, frame_kind, bytes(self._pending[start : start + length])))
            offset = start + length
        del self._pending[:offset]
        return frames
