"""Interop for a ``qemu`` VM, the monitor's side: host programs called from a distribution.

The guest opens a channel for each interop connection (``INTEROP``); its stdin, stdout and stderr
come as pipes (``ATTACH`` from the guest, ``PortEngine.attached_descriptor``), passed on with the
request's first bytes. The monitor keeps one end of a socket pair as the channel's local end and
hands the other to the interop server process (``pywsl.guest.vm_interop_host``, started at the
first call, host root like the monitor), whose worker becomes the VM's owner before it reads a
byte and runs the program (``interop_server``), as on the namespaces backend.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys

__all__ = ["InteropHost"]

log = logging.getLogger("pywsl.qemu-interop")

STOP_TIMEOUT = 5.0
_PR_SET_PDEATHSIG = 1


class InteropHost:
    """The interop server process of one VM, started at the first call."""

    def __init__(self, owner_uid: int, log_fd: int) -> None:
        self.owner_uid = owner_uid
        self.log_fd = log_fd
        self.sock: socket.socket | None = None
        self.process: subprocess.Popen[bytes] | None = None

    def hand_over(self, fd: int) -> None:
        """Give the connection ``fd`` (the caller's to close) to the interop server."""
        if self.sock is None or self.process is None or self.process.poll() is not None:
            self.close()
            self._start()
        assert self.sock is not None
        socket.send_fds(self.sock, [b"I"], [fd])

    def _start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-S",
                    "-m",
                    "pywsl.guest.vm_interop_host",  # a process of its own: the vm layer imports no guest code
                    "--socket-fd",
                    str(theirs.fileno()),
                    "--owner",
                    str(self.owner_uid),
                ],
                stdin=subprocess.DEVNULL,
                stdout=self.log_fd,
                stderr=self.log_fd,
                pass_fds=(theirs.fileno(),),
                preexec_fn=_die_with_parent,
                cwd="/",
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.settimeout(STOP_TIMEOUT)
        self.sock = ours

    def close(self) -> None:
        """Stop the server (its workers end with their calls)."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.process is not None:
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                self.process.wait()
            self.process = None


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() == 1:
        os._exit(1)
