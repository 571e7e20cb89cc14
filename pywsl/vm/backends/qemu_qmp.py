"""QEMU's QMP monitor, as the VM's monitor process uses it: one command at a time.

The monitor holds one end of a socket pair whose other end is QEMU's QMP socket. ``QmpLink``
reads QEMU's greeting and negotiates the capabilities at its first command (so the boot never
waits on it), passes descriptors with a command (``SCM_RIGHTS``, for ``add-fd``), and keeps the
events QEMU sends between replies, so that a caller can wait for one (``DEVICE_DELETED``). Every
read is bounded by ``QMP_TIMEOUT``; after a failure the link stays failed.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Sequence

__all__ = ["QMP_TIMEOUT", "QmpError", "QmpLink"]

QMP_TIMEOUT = 5.0
MAX_KEPT_EVENTS = 256


class QmpError(Exception):
    pass


class QmpLink:
    """A QMP connection over ``sock`` (the monitor's end), opened at the first command."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock: socket.socket | None = sock
        self.ready = False
        self.buffer = b""
        self.events: list[dict[str, object]] = []

    def _socket(self) -> socket.socket:
        if self.sock is None:
            raise QmpError("the QMP monitor failed earlier")
        return self.sock

    def _read(self, deadline: float) -> dict[str, object]:
        sock = self._socket()
        while b"\n" not in self.buffer:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            data = sock.recv(65536)
            if not data:
                raise ConnectionResetError("QEMU closed its QMP monitor")
            self.buffer += data
        line, _newline, self.buffer = self.buffer.partition(b"\n")
        reply = json.loads(line)
        return reply if isinstance(reply, dict) else {}

    def _open(self) -> None:
        if self.ready:
            return
        self._read(time.monotonic() + QMP_TIMEOUT)  # the greeting
        self.ready = True
        self._command("qmp_capabilities", (), {})

    def execute(
        self, command: str, arguments: dict[str, object] | None = None, fds: Sequence[int] = ()
    ) -> object:
        """Run ``command`` (with ``fds`` passed along); its reply's ``return``. QmpError for QEMU's
        error or a broken link."""
        try:
            self._open()
            return self._command(command, fds, arguments or {})
        except (OSError, ValueError) as error:
            self.close()
            raise QmpError(f"QMP {command}: {error}") from None

    def _command(self, command: str, fds: Sequence[int], arguments: dict[str, object]) -> object:
        request: dict[str, object] = {"execute": command}
        if arguments:
            request["arguments"] = arguments
        data = json.dumps(request).encode() + b"\n"
        sock = self._socket()
        sock.settimeout(QMP_TIMEOUT)
        if fds:
            socket.send_fds(sock, [data], list(fds))
        else:
            sock.sendall(data)
        deadline = time.monotonic() + QMP_TIMEOUT
        while True:
            reply = self._read(deadline)
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                error = reply["error"]
                desc = error.get("desc") if isinstance(error, dict) else error
                raise QmpError(f"{command}: {desc}")
            if "event" in reply:
                self.events = [*self.events[-MAX_KEPT_EVENTS:], reply]

    def wait_event(self, name: str, device: str, timeout: float) -> bool:
        """Wait until QEMU sent event ``name`` about ``device`` (kept events count); False on timeout."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                for index, event in enumerate(self.events):
                    data = event.get("data")
                    if event.get("event") == name and isinstance(data, dict) and data.get("device") == device:
                        del self.events[index]
                        return True
                if time.monotonic() >= deadline:
                    return False
                try:
                    reply = self._read(deadline)
                except TimeoutError:
                    return False
                if "event" in reply:
                    self.events = [*self.events[-MAX_KEPT_EVENTS:], reply]
        except (OSError, ValueError) as error:
            self.close()
            raise QmpError(f"waiting for {name}: {error}") from None

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None
