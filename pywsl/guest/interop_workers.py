"""The VM monitor's interop workers: one connection at a time per worker, idle workers kept ready.

Each connection has a worker of its own while it lasts (a host program that never exits keeps
only its caller waiting). A worker is forked from the monitor and becomes the VM's owner before
it reads a byte (``interop_server``); forking the monitor and looking the owner up would be part
of every host program call, and a fork competes for the processors with the call itself, so a
worker is reused: when its connection is done it tells the monitor it is idle (``READY`` on its
socket pair) and waits for the next one. The monitor hands a connection (``SCM_RIGHTS``) to an
idle worker, and forks a new one only when none is idle after that, so that one always waits:
calls one after the other cost no fork at all, concurrent calls get a worker each. At most
``MAX_IDLE`` idle workers are kept (the others are let go). A worker holds no connection and
nothing of a distribution between calls; when the monitor exits its socket pair closes and the
worker exits with it. Without interop calls there is no worker.
"""

from __future__ import annotations

import os

from pywsl.guest import forking, guest_log, interop_server, syscalls
from pywsl.lean_context import suppress
from pywsl.wire import unix_sockets as socket

log = guest_log.getLogger("pywsl.interop")

__all__ = ["MAX_IDLE", "InteropWorkers"]

PROCESS_NAME = "pywsl-interop"
MAX_IDLE = 4
_HAND_OVER = b"I"
_READY = b"R"


class InteropWorkers:
    """Start the worker of each interop connection (the monitor's side)."""

    def __init__(self, owner_uid: int) -> None:
        self.owner_uid = owner_uid
        self.idle: list[tuple[socket.socket, int]] = []  # (the monitor's end of its pair, pid)
        self.busy: list[tuple[socket.socket, int]] = []

    @property
    def spare_pid(self) -> int:
        """The worker the next connection goes to (0 when none is idle)."""
        self._collect()
        return self.idle[-1][1] if self.idle else 0

    def serve(self, fd: int) -> None:
        """Give the connection ``fd`` to a worker (``fd`` stays the caller's to close), then make
        sure one is idle for the next."""
        self._collect()
        while True:
            worker = self.idle.pop() if self.idle else self._fork()
            if worker is None:
                return
            if self._hand_over(worker[0], fd):
                self.busy.append(worker)
                break
            worker[0].close()
        if not self.idle:
            spare = self._fork()
            if spare is not None:
                self.idle.append(spare)

    def close(self) -> None:
        """Let the workers go (each exits when its socket pair closes; the caller reaps them)."""
        for sock, _pid in self.idle + self.busy:
            sock.close()
        self.idle.clear()
        self.busy.clear()

    def _collect(self) -> None:
        """Busy workers that said they are idle again join ``idle``; those that ended are dropped."""
        still_busy: list[tuple[socket.socket, int]] = []
        for worker in self.busy:
            try:
                data = worker[0].recv(16, socket.MSG_DONTWAIT)
            except BlockingIOError:
                still_busy.append(worker)
                continue
            except OSError:
                data = b""
            if data == _READY and len(self.idle) < MAX_IDLE:
                self.idle.append(worker)
            else:
                worker[0].close()  # ended, or one idle worker too many: it exits
        self.busy = still_busy

    @staticmethod
    def _hand_over(sock: socket.socket, fd: int) -> bool:
        try:
            socket.send_fds(sock, [_HAND_OVER], [fd], socket.MSG_DONTWAIT)
            return True
        except OSError as error:
            log.info("interop: an idle worker is gone (%s)", error)
            return False

    def _fork(self) -> tuple[socket.socket, int] | None:
        """A new worker waiting on a socket pair of its own: (the monitor's end, its pid)."""
        try:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        except OSError as error:
            log.warning("interop: no worker: %s", error)
            return None
        try:
            pid = os.fork()
        except OSError as error:
            log.error("cannot start an interop worker: %s", error)
            ours.close()
            theirs.close()
            return None
        if pid == 0:
            code = 1
            try:
                forking.become_child([0, 1, 2, theirs.fileno()])
                os.setsid()
                syscalls.set_process_name(PROCESS_NAME)
                code = _run_worker(theirs, self.owner_uid)
            except BaseException:
                log.exception("the interop worker failed")
            forking.exit_now(code)
        theirs.close()
        return ours, pid


def _run_worker(waiting: socket.socket, owner_uid: int) -> int:
    """Serve connection after connection as the owner until the monitor's end closes."""
    owner = interop_server.become_owner(owner_uid)
    if owner is None:
        return 1
    try:
        while True:
            fd = _wait_for_connection(waiting)
            if fd < 0:
                return 0  # the monitor exited or let this worker go
            interop_server.serve_as(fd, owner)
            try:
                waiting.send(_READY)
            except OSError:
                return 0
    finally:
        waiting.close()


def _wait_for_connection(waiting: socket.socket) -> int:
    """The connection the monitor hands over; -1 when the monitor's end closed."""
    try:
        data, fds, _flags, _address = socket.recv_fds(waiting, 16, 1, socket.MSG_CMSG_CLOEXEC)
    except OSError:
        return -1
    if data == _HAND_OVER and len(fds) == 1:
        return fds[0]
    for received in fds:
        with suppress(OSError):
            os.close(received)
    return -1
