"""mini_init's channel server inside a real VM (the ``qemu`` backend), first stage.

It accepts mini_init channels on a listening socket (the port demultiplexer connects one per host
connection), greets each with ``GuestCapabilities`` (the running kernel's release), and serves
``EarlyConfig`` (host name), ``InitialConfig``, ``QueryInstances``, ``AttachNotify`` and
``ShutdownVm``. ``LaunchInit``, ``Import`` and ``Export`` carry descriptors on the namespaces
backend; no descriptor crosses a VM boundary, so here they are refused (the channel is closed with
a log line) until their socket-based form exists. The server exits after ``vmIdleTimeout`` ms
without a request (negative = never) or on ``ShutdownVm``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import struct
import time

from pywsl.guest import network_files, syscalls
from pywsl.guest.requests import receive_request
from pywsl.wire import schema
from pywsl.wire.channel import MessageChannel, Transaction
from pywsl.wire.enums import LX_MESSAGE_TYPE, PYWSL_MESSAGE_TYPE
from pywsl.wire.errors import ChannelClosed, ProtocolError
from pywsl.wire.extensions import instance_entries

log = logging.getLogger("pywsl.vm_mini_init")

RECEIVE_TIMEOUT = 10.0
SEND_TIMEOUT = 5.0

GUEST_CAPABILITIES = schema("LX_INIT_GUEST_CAPABILITIES")
EARLY_CONFIG = schema("LX_MINI_INIT_EARLY_CONFIG_MESSAGE")
INITIAL_CONFIG = schema("LX_MINI_INIT_CONFIG_MESSAGE")
INSTANCE_LIST = schema("PYWSL_INSTANCE_LIST")
SHUTDOWN_VM = schema("PYWSL_SHUTDOWN_VM")

T = LX_MESSAGE_TYPE
P = PYWSL_MESSAGE_TYPE
_NEEDS_DESCRIPTORS = {
    T.LxMiniInitMessageLaunchInit: "LaunchInit",
    T.LxMiniInitMessageImport: "Import",
    T.LxMiniInitMessageExport: "Export",
}


class VmMiniInit:
    """The channel server of pid 1 in a real VM."""

    def __init__(self, listener: socket.socket, vm_idle_timeout_ms: int) -> None:
        self.listener = listener
        self.listener.setblocking(False)
        self.vm_idle_timeout_ms = vm_idle_timeout_ms
        self.selector = selectors.DefaultSelector()
        self.channels: dict[int, MessageChannel] = {}
        self.notify: set[int] = set()
        self.last_request = time.monotonic()
        self.stopping = False
        self.capabilities = GUEST_CAPABILITIES.build(
            SeccompAvailable=True, HvPciSwiotlbBase=0, HvPciSwiotlbSize=0, Buffer=os.uname().release
        )

    def serve(self) -> None:
        self.selector.register(self.listener, selectors.EVENT_READ, None)
        log.info("utility VM ready (kernel %s)", os.uname().release)
        while not self.stopping:
            for key, _events in self.selector.select(self._timeout()):
                if key.data is None:
                    self._accept()
                else:
                    self._on_channel(key.data)
            if self._idle_expired():
                log.info("utility VM idle for %d ms, exiting", self.vm_idle_timeout_ms)
                break
        for channel in list(self.channels.values()):
            channel.close()
        self.channels.clear()

    def _timeout(self) -> float | None:
        if self.vm_idle_timeout_ms < 0:
            return None
        return max(0.0, self.last_request + self.vm_idle_timeout_ms / 1000 - time.monotonic())

    def _idle_expired(self) -> bool:
        return (
            self.vm_idle_timeout_ms >= 0
            and time.monotonic() - self.last_request >= self.vm_idle_timeout_ms / 1000
        )

    def _accept(self) -> None:
        while True:
            try:
                sock, _address = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            channel = MessageChannel(sock, name="mini_init channel")
            try:
                channel.send(self.capabilities, timeout=SEND_TIMEOUT)
            except (OSError, TimeoutError) as error:
                log.warning("cannot greet a new connection: %s", error)
                channel.close()
                continue
            self.channels[channel.fileno()] = channel
            self.selector.register(channel, selectors.EVENT_READ, channel)
            self.last_request = time.monotonic()

    def _drop(self, channel: MessageChannel) -> None:
        fd = channel.fileno()
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(channel)
        self.channels.pop(fd, None)
        self.notify.discard(fd)
        channel.close()

    def _on_channel(self, channel: MessageChannel) -> None:
        if channel.fileno() in self.notify:
            self._drop(channel)  # nothing is ever sent on a notify channel: readable means closed
            return
        try:
            transaction, data, fds = receive_request(channel, RECEIVE_TIMEOUT)
        except ChannelClosed:
            self._drop(channel)
            return
        except (ProtocolError, TimeoutError, OSError) as error:
            log.error("closing a mini_init channel: %s", error)
            self._drop(channel)
            return
        for fd in fds:
            os.close(fd)
        self.last_request = time.monotonic()
        try:
            self._dispatch(channel, transaction, data)
        except (ProtocolError, OSError, TimeoutError) as error:
            log.error("closing a mini_init channel: %s", error)
            self._drop(channel)

    def _dispatch(self, channel: MessageChannel, transaction: Transaction, data: bytes) -> None:
        message_type = struct.unpack_from("<I", data)[0]
        if message_type == T.LxMiniInitMessageEarlyConfig:
            early = EARLY_CONFIG.parse(data)
            if early.Hostname:
                syscalls.sethostname(network_files.clean_hostname(early.Hostname))
        elif message_type == T.LxMiniInitMessageInitialConfig:
            INITIAL_CONFIG.parse(data)
        elif message_type == P.PywslQueryInstances:
            transaction.send(INSTANCE_LIST, Entries=instance_entries({}))
        elif message_type == P.PywslAttachNotify:
            self.notify.add(channel.fileno())
        elif message_type == P.PywslShutdownVm:
            log.info("shutting down the utility VM%s", " (forced)" if SHUTDOWN_VM.parse(data).Force else "")
            self.stopping = True
        elif message_type in _NEEDS_DESCRIPTORS:
            raise ProtocolError(
                f"{_NEEDS_DESCRIPTORS[message_type]} is not served over the qemu backend's channel port yet",
                struct="LX_MINI_INIT_MESSAGE",
            )
        else:
            raise ProtocolError(
                f"unexpected message type {message_type} on the mini_init channel",
                struct="MESSAGE_HEADER",
                field="MessageType",
            )
