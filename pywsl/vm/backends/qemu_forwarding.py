"""``localhostForwarding`` for a ``qemu`` VM: the guest's listening TCP ports on the host's loopback.

WSL's localhost relay learns which ports listen in the VM and listens on the same ports of the
host's ``127.0.0.1``. Here the guest's port demultiplexer reports the TCP ports that listen on
every address (``PORTS`` frames) and the monitor asks QEMU's user networking to forward
``127.0.0.1:P`` of the host to ``P`` of the guest (``hostfwd_add`` through QMP), and removes a
forward when its port stops listening. A port the host already uses is not forwarded (QEMU
refuses it; the monitor logs it); ports below 1024 are never forwarded (the ports a user may bind:
QEMU listens with the VM's owner's ids, or root's when root owns the VM, and the guest must not get
a privileged port of the host either way), and at most ``MAX_FORWARDS`` at once.
"""

from __future__ import annotations

import logging

from pywsl.vm.backends.qemu_qmp import QmpError, QmpLink

log = logging.getLogger("pywsl.qemu-forwarding")

__all__ = ["QMP_SOCKET_NAME", "PortForwarder"]

QMP_SOCKET_NAME = "qmp.sock"
GUEST_ADDRESS = "10.0.2.15"
FIRST_PORT = 1024  # the ports an unprivileged user may bind
MAX_FORWARDS = 256


class PortForwarder:
    """Keeps QEMU's host forwards equal to the guest's listening ports, over ``qmp`` (QEMU's QMP
    monitor). After a QMP failure nothing more is forwarded."""

    def __init__(self, qmp: QmpLink) -> None:
        self.qmp: QmpLink | None = qmp
        self.forwarded: set[int] = set()

    def _human(self, line: str) -> str:
        if self.qmp is None:
            raise QmpError("the QMP monitor failed earlier")
        answer = self.qmp.execute("human-monitor-command", {"command-line": line})
        return answer if isinstance(answer, str) else ""

    def update(self, ports: list[int]) -> None:
        if self.qmp is None:
            return
        wanted = {port for port in ports if port >= FIRST_PORT}
        wanted = set(sorted(wanted)[:MAX_FORWARDS])
        try:
            for port in sorted(self.forwarded - wanted):
                self._human(f"hostfwd_remove net0 tcp:127.0.0.1:{port}")
                self.forwarded.discard(port)
            for port in sorted(wanted - self.forwarded):
                answer = self._human(f"hostfwd_add net0 tcp:127.0.0.1:{port}-{GUEST_ADDRESS}:{port}")
                if answer.strip():
                    log.warning("cannot forward port %d: %s", port, answer.strip())
                else:
                    self.forwarded.add(port)
        except (OSError, QmpError, ValueError) as error:
            log.warning("localhost forwarding failed: %s", error)
            self.close()

    def close(self) -> None:
        """Forward nothing more (the QMP link itself is the monitor's)."""
        self.qmp = None
