"""pid 1 of a real utility VM (``qemu`` backend): ``python -S -m pywsl.guest.vm_pid1``.

The initramfs's ``/init`` mounts ``/proc``, ``/sys``, ``/dev``, the host's ``/usr`` and pywsl's
folders, loads the virtio modules and execs this. It finds the channel port, starts the port
demultiplexer (``port_demux``) on a thread, serves mini_init channels (``vm_mini_init``) until
``ShutdownVm`` or ``vmIdleTimeout``, then restarts the machine, which QEMU (``-no-reboot``) turns
into its own exit. Settings come from the kernel command line, which the kernel hands over as
environment variables: ``PYWSL_VM_IDLE_TIMEOUT`` (ms, negative = never).
"""

from __future__ import annotations

import ctypes
import logging
import os
import socket
import sys
import threading
import time

from pywsl.guest.port_demux import PortDemux, find_port
from pywsl.guest.vm_mini_init import VmMiniInit

log = logging.getLogger("pywsl.vm_pid1")

LISTEN_ADDRESS = "\0pywsl-mini-init"
PORT_WAIT = 10.0
LINUX_REBOOT_CMD_RESTART = 0x01234567
DEFAULT_VM_IDLE_TIMEOUT_MS = 60_000


def _wait_for_port() -> str:
    deadline = time.monotonic() + PORT_WAIT
    while True:
        port = find_port()
        if port is not None and os.path.exists(port):
            return port
        if time.monotonic() >= deadline:
            raise RuntimeError("the channel port did not appear")
        time.sleep(0.01)


def _restart_machine() -> None:
    """End the VM: with ``-no-reboot`` QEMU exits when the guest restarts."""
    os.sync()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.reboot(LINUX_REBOOT_CMD_RESTART)
    raise OSError(ctypes.get_errno(), "reboot failed")


def _idle_timeout() -> int:
    try:
        return int(os.environ.get("PYWSL_VM_IDLE_TIMEOUT", DEFAULT_VM_IDLE_TIMEOUT_MS))
    except ValueError:
        return DEFAULT_VM_IDLE_TIMEOUT_MS


def run() -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    listener.bind(LISTEN_ADDRESS)
    listener.listen(64)
    port_fd = os.open(_wait_for_port(), os.O_RDWR | os.O_CLOEXEC)
    demux = PortDemux(port_fd, LISTEN_ADDRESS)
    thread = threading.Thread(target=demux.run, name="port-demux", daemon=True)
    thread.start()
    VmMiniInit(listener, _idle_timeout()).serve()
    listener.close()


def main() -> int:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s: %(message)s"
    )
    try:
        run()
    except Exception:
        log.exception("pid 1 failed")
    if os.getpid() == 1:
        _restart_machine()
    return 1


if __name__ == "__main__":
    sys.exit(main())
