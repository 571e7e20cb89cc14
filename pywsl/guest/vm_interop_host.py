"""The host's interop server for a ``qemu`` VM: ``python -S -m pywsl.guest.vm_interop_host``.

On the namespaces backend the VM monitor hands each interop connection to ``InteropWorkers``
itself. The qemu backend's monitor belongs to the ``vm`` layer, which does not import the guest's
code, so at the first host program call it starts this process (host root, like the monitor):
``--socket-fd`` is its end of a socket pair on which each interop connection arrives (one
``b"I"`` with one descriptor: the host end of the call's channel, its stdin, stdout and stderr
still to come with the request), and ``--owner`` the uid the workers become before they read a
byte (``interop_workers``, ``interop_server``). It exits when the monitor closes the socket, and
with the monitor (``PR_SET_PDEATHSIG``, set by the monitor when it starts it).
"""

from __future__ import annotations

import argparse
import os
import sys

from pywsl.guest import guest_log
from pywsl.guest.interop_workers import InteropWorkers
from pywsl.lean_context import suppress
from pywsl.wire import unix_sockets as socket

log = guest_log.getLogger("pywsl.interop")

HAND_OVER = b"I"


def _reap() -> None:
    """Reap the workers that ended (they are this process's children)."""
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def serve(source: socket.socket, owner_uid: int) -> None:
    """Hand every connection that arrives on ``source`` to a worker, until ``source`` closes."""
    workers = InteropWorkers(owner_uid)
    try:
        while True:
            _reap()
            try:
                data, fds, _flags, _address = socket.recv_fds(source, 16, 1, socket.MSG_CMSG_CLOEXEC)
            except InterruptedError:
                continue
            if not data:
                return
            for fd in fds:
                try:
                    workers.serve(fd)
                except OSError as error:
                    log.error("interop: cannot start a worker: %s", error)
                finally:
                    os.close(fd)
    finally:
        workers.close()
        _reap()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pywsl.guest.vm_interop_host")
    parser.add_argument("--socket-fd", type=int, required=True)
    parser.add_argument("--owner", type=int, required=True)
    options = parser.parse_args(sys.argv[1:] if argv is None else argv)
    guest_log.configure(guest_log.INFO, sys.stderr, stamped=False)
    source = socket.socket(fileno=options.socket_fd)
    with suppress(KeyboardInterrupt):
        serve(source, options.owner)
    return 0


if __name__ == "__main__":
    sys.exit(main())
