"""The VM monitor's interop workers: one process per interop connection, one kept ready.

Each connection has a worker of its own (a host program that never exits keeps only its caller
waiting), forked from the monitor, which becomes the VM's owner before it reads a byte
(``interop_server``). Forking the monitor and looking the owner up is part of every host program
call, so after the first connection the monitor keeps one *spare* worker: already forked,
already the owner, blocked on a socket pair of its own. A connection is handed to the spare
(``SCM_RIGHTS``) and a new spare is forked while the first one serves. The spare holds no
connection and nothing of a distribution; when the monitor exits, the spare's socket pair
closes and the spare exits with it. Without interop calls there is no spare.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket

from pywsl.guest import forking, interop_server, syscalls

log = logging.getLogger("pywsl.interop")

__all__ = ["InteropWorkers"]

PROCESS_NAME = "pywsl-interop"
_HAND_OVER = b"I"


class InteropWorkers:
    """Start the worker of each interop connection (the monitor's side)."""

    def __init__(self, owner_uid: int) -> None:
        self.owner_uid = owner_uid
        self.spare: socket.socket | None = None  # the monitor's end of the spare's socket pair
        self.spare_pid = 0

    def serve(self, fd: int) -> None:
        """Give the connection ``fd`` to a worker (``fd`` stays the caller's to close), then make
        the next spare ready."""
        if not self._hand_over(fd):
            self._fork(fd, None)
        self._fork_spare()

    def close(self) -> None:
        """Let the spare go (it exits when its socket pair closes; the caller reaps it)."""
        if self.spare is not None:
            self.spare.close()
            self.spare = None

    def _hand_over(self, fd: int) -> bool:
        spare, self.spare = self.spare, None
        if spare is None:
            return False
        try:
            socket.send_fds(spare, [_HAND_OVER], [fd], socket.MSG_DONTWAIT)
            return True
        except OSError as error:
            log.info("interop: the spare worker is gone (%s); forking one", error)
            return False
        finally:
            spare.close()

    def _fork_spare(self) -> None:
        try:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        except OSError as error:
            log.warning("interop: no spare worker: %s", error)
            return
        try:
            self.spare_pid = self._fork(-1, theirs)
            if self.spare_pid:
                self.spare = ours
            else:
                ours.close()
        finally:
            theirs.close()

    def _fork(self, fd: int, waiting: socket.socket | None) -> int:
        """A worker for ``fd``, or (``waiting``) a spare that takes its connection from that
        socket; its pid (0 when it could not be forked)."""
        try:
            pid = os.fork()
        except OSError as error:
            log.error("cannot start an interop worker: %s", error)
            return 0
        if pid == 0:
            code = 1
            try:
                forking.become_child([0, 1, 2, fd if waiting is None else waiting.fileno()])
                os.setsid()
                syscalls.set_process_name(PROCESS_NAME)
                code = _run_worker(fd, waiting, self.owner_uid)
            except BaseException:
                log.exception("the interop worker failed")
            forking.exit_now(code)
        return pid


def _run_worker(fd: int, waiting: socket.socket | None, owner_uid: int) -> int:
    owner = interop_server.become_owner(owner_uid)
    if owner is None:
        return 1
    if waiting is not None:
        fd = _wait_for_connection(waiting)
        if fd < 0:
            return 0  # the monitor exited: the VM is gone
    return interop_server.serve_as(fd, owner)


def _wait_for_connection(waiting: socket.socket) -> int:
    """The connection the monitor hands over; -1 when the monitor's end closed."""
    try:
        data, fds, _flags, _address = socket.recv_fds(waiting, 16, 1, socket.MSG_CMSG_CLOEXEC)
    except OSError:
        return -1
    finally:
        waiting.close()
    if data == _HAND_OVER and len(fds) == 1:
        return fds[0]
    for received in fds:
        with contextlib.suppress(OSError):
            os.close(received)
    return -1
