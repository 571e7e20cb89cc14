"""The guest end of the channel port (``pywsl.wire.port_mux``): one local connection per channel.

The host multiplexes every connection to the VM's ``mini_init.sock`` over one virtio-serial port.
In the guest a thread splits the port again: for each ``OPEN`` it connects to pid 1's listening
socket (an abstract AF_UNIX name, so the server accepts channels as it would on any listener) and
copies bytes both ways; a local connection that closes sends ``CLOSE``, a ``CLOSE`` from the host
closes the local connection. The port closing (the host side went away) ends the thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import threading

from pywsl.wire.errors import ProtocolError
from pywsl.wire.port_mux import MAX_PAYLOAD, FrameKind, FrameReader, encode_frame

log = logging.getLogger("pywsl.port_demux")

PORT_NAME = "pywsl.mux"
PORTS_FOLDER = "/sys/class/virtio-ports"
READ_SIZE = 64 * 1024


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


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class PortDemux:
    """Splits the port into local connections to ``listen_address``."""

    def __init__(self, port_fd: int, listen_address: str) -> None:
        self.port_fd = port_fd
        self.listen_address = listen_address
        self.selector = selectors.DefaultSelector()
        self.channels: dict[int, socket.socket] = {}
        self.reader = FrameReader()
        self._write_lock = threading.Lock()

    def send_frame(self, channel: int, kind: FrameKind, payload: bytes = b"") -> None:
        with self._write_lock:
            _write_all(self.port_fd, encode_frame(channel, kind, payload))

    def run(self) -> None:
        """Copy until the port closes."""
        self.selector.register(self.port_fd, selectors.EVENT_READ, None)
        self.send_frame(0, FrameKind.READY)
        try:
            while True:
                for key, _events in self.selector.select():
                    if key.data is None:
                        if not self._from_port():
                            return
                    else:
                        self._from_local(key.data)
        finally:
            for sock in self.channels.values():
                sock.close()
            self.channels.clear()
            self.selector.close()

    def _from_port(self) -> bool:
        try:
            data = os.read(self.port_fd, READ_SIZE)
        except OSError as error:
            log.error("the channel port failed: %s", error)
            return False
        if not data:
            return False
        try:
            frames = self.reader.feed(data)
        except ProtocolError as error:
            log.error("the channel port: %s", error)
            return False
        for frame in frames:
            if frame.kind is FrameKind.OPEN:
                self._open(frame.channel)
            elif frame.kind is FrameKind.DATA:
                sock = self.channels.get(frame.channel)
                if sock is not None:
                    try:
                        sock.sendall(frame.payload)
                    except OSError:
                        self._close(frame.channel, tell_host=True)
            elif frame.kind is FrameKind.CLOSE:
                self._close(frame.channel, tell_host=False)
        return True

    def _open(self, channel: int) -> None:
        if channel in self.channels or channel == 0:
            self._close(channel, tell_host=True)
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(self.listen_address)
        except OSError as error:
            log.error("cannot reach pid 1 for a new channel: %s", error)
            sock.close()
            self.send_frame(channel, FrameKind.CLOSE)
            return
        self.channels[channel] = sock
        self.selector.register(sock, selectors.EVENT_READ, channel)

    def _from_local(self, channel: int) -> None:
        sock = self.channels.get(channel)
        if sock is None:
            return
        try:
            data = sock.recv(min(READ_SIZE, MAX_PAYLOAD))
        except OSError:
            data = b""
        if data:
            self.send_frame(channel, FrameKind.DATA, data)
        else:
            self._close(channel, tell_host=True)

    def _close(self, channel: int, *, tell_host: bool) -> None:
        sock = self.channels.pop(channel, None)
        if sock is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(sock)
            sock.close()
        if tell_host:
            self.send_frame(channel, FrameKind.CLOSE)
