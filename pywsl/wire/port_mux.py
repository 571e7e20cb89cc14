"""Several byte streams over one port: how the ``qemu`` backend carries its channels.

A VM without AF_VSOCK still has a virtio-serial port, one byte stream between the host and the
guest. Both sides cut it into frames: ``channel`` (u32), ``kind`` (u8), ``length`` (u32), then
``length`` bytes. The host opens a channel (``OPEN``) for every connection to the VM's
``mini_init.sock``, the guest accepts it as a new mini_init connection; ``DATA`` carries the
channel's bytes and ``CLOSE`` ends it from either side. ``READY`` (channel 0) is the guest's first
frame: pid 1 serves. Little-endian, as WSL's messages.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from pywsl.wire.errors import ProtocolError

__all__ = ["HEADER", "MAX_PAYLOAD", "Frame", "FrameKind", "FrameReader", "encode_frame"]

HEADER = struct.Struct("<IBI")
MAX_PAYLOAD = 256 * 1024


class FrameKind(enum.IntEnum):
    READY = 0
    OPEN = 1
    DATA = 2
    CLOSE = 3


@dataclass(frozen=True)
class Frame:
    channel: int
    kind: FrameKind
    payload: bytes = b""


def encode_frame(channel: int, kind: FrameKind, payload: bytes = b"") -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"a port frame carries at most {MAX_PAYLOAD} bytes, not {len(payload)}")
    return HEADER.pack(channel, kind, len(payload)) + payload


class FrameReader:
    """Frames out of the bytes read from the port, whatever pieces they arrive in."""

    def __init__(self) -> None:
        self._pending = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        self._pending += data
        frames = []
        while len(self._pending) >= HEADER.size:
            channel, kind, length = HEADER.unpack_from(self._pending)
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
            if len(self._pending) < HEADER.size + length:
                break
            payload = bytes(self._pending[HEADER.size : HEADER.size + length])
            del self._pending[: HEADER.size + length]
            frames.append(Frame(channel, frame_kind, payload))
        return frames
