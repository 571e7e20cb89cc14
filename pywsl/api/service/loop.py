"""The service's connection loop: every connection watched by one thread, requests run by a bounded few.

One thread accepts connections and watches all of them with ``epoll``: an idle connection costs a
descriptor, not a thread. The loop reads what arrives (without ever waiting on a client), and
when a whole request is there it stops reading that connection and queues the request; a worker
thread runs it (at most ``WorkerLimits.total`` at once, ``per_owner`` per owner, owners served in
turn; the threads are reused, ``worker_threads``) and hands the connection back when the reply is
sent. Requests of one connection run in order, one at a time.

While a request waits or runs, the loop still watches its connection for the client going away
(``EPOLLRDHUP``/``EPOLLHUP``) and then cancels the request's ``CancelToken``.

``accept()`` errors never end the loop: running out of descriptors or memory (``EMFILE``,
``ENFILE``, ``ENOMEM``, ``ENOBUFS``) pauses accepting for a short, bounded back-off while the
connections already held are served; a connection that vanished before it was accepted
(``ECONNABORTED``, ``EPROTO``) is skipped.

Every descriptor received is closed on every path: the framing closes those of a refused or
broken message, the loop those of a request that never ran, the worker those of one that ran.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import functools
import logging
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

from pywsl.api.cancellation import CancelToken
from pywsl.api.service import rpc
from pywsl.api.service.limits import ConnectionLimits, RangeOwners, WorkerLimits
from pywsl.api.service.worker_threads import WorkerThreads

__all__ = ["ClientConnection", "PeerCredentials", "ServiceLoop", "peer_credentials"]

log = logging.getLogger("pywsl.service")

_UCRED = struct.Struct("3i")
_TIMEVAL = struct.Struct("ll")
# A reply (or progress) that the client does not read for this long ends its connection.
SEND_TIMEOUT_SECONDS = 30
ACCEPT_BACKOFF_FIRST = 0.01
ACCEPT_BACKOFF_MAX = 0.1
_ACCEPTS_PER_WAKE = 64
_SKIPPED_ACCEPT_ERRORS = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EINTR, errno.EAGAIN})
_BROKEN_LISTENER_ERRORS = frozenset({errno.EBADF, errno.ENOTSOCK, errno.EINVAL, errno.EOPNOTSUPP})
_HANGUP = select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
_IDLE_EVENTS = select.EPOLLIN | select.EPOLLRDHUP


class PeerCredentials(NamedTuple):
    """Who is on the other end of a connection, as the kernel recorded it at ``connect()``."""

    pid: int
    uid: int
    gid: int


def peer_credentials(sock: socket.socket) -> PeerCredentials:
    """``SO_PEERCRED`` of a connected socket."""
    pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return PeerCredentials(pid, uid, gid)


class _State(enum.Enum):
    IDLE = "idle"  # watched for the next request
    WAITING = "waiting"  # a whole request is queued for a worker
    RUNNING = "running"  # a worker handles its request
    CLOSED = "closed"


class ClientConnection:
    """One accepted connection: its framing, its peer, the owner it counts against."""

    def __init__(self, sock: socket.socket, peer: PeerCredentials, owner: int) -> None:
        self.connection = rpc.Connection(sock, send_limit=rpc.MAX_REPLY_SIZE)
        self.peer = peer
        self.owner = owner
        self.state = _State.IDLE
        self.token = CancelToken()
        self.pending: tuple[bytes, list[int]] | None = None
        self.hung_up = False
        self.failed = False
        self.watched = False

    @property
    def fd(self) -> int:
        return self.connection.sock.fileno()


Handler = Callable[[ClientConnection, bytes, list[int], CancelToken], None]


class ServiceLoop:
    """Accepts on ``listener`` and runs ``handler`` for each whole request, in a bounded worker.

    ``handler(client, data, fds, token)`` gets the bytes of one message (without its NUL), its
    descriptors (closed by the loop afterwards: the handler must not close them) and the token
    the loop cancels when the client goes away; it sends the reply itself. An exception from it
    ends that connection (it is logged).
    """

    def __init__(
        self,
        listener: socket.socket,
        handler: Handler,
        *,
        connections: ConnectionLimits,
        workers: WorkerLimits,
        owners: RangeOwners,
    ) -> None:
        self.listener = listener
        self.handler = handler
        self.connections = connections
        self.workers = workers
        self.owners = owners
        self._clients: dict[int, ClientConnection] = {}
        self._epoll = select.epoll()
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._lock = threading.Lock()
        self._finished: list[ClientConnection] = []
        self._stopping = False
        self._ended = False
        self._backoff = ACCEPT_BACKOFF_FIRST
        self._resume_accepting: float | None = None
        self._listener_fd = -1
        self._last_accept_warning = 0.0
        self._threads = WorkerThreads("pywsl-request")  # reused from request to request

    # -- control ----------------------------------------------------------------------------

    def stop(self) -> None:
        """Make ``run`` return soon (requests already running finish in their threads)."""
        with self._lock:
            self._stopping = True
            if not self._ended:
                with contextlib.suppress(OSError):
                    os.eventfd_write(self._wake, 1)

    def run(self) -> None:
        """Serve until ``stop``; everything idle is closed on the way out."""
        try:
            self.listener.setblocking(False)
            self._listener_fd = self.listener.fileno()
            self._epoll.register(self._wake, select.EPOLLIN)
            self._epoll.register(self._listener_fd, select.EPOLLIN)
        except (OSError, ValueError):
            self._end()
            if self._stopping:  # stopped, and its listener closed, before it started
                return
            raise
        try:
            while not self._stopping:
                for fd, events in self._epoll.poll(self._poll_timeout()):
                    self._on_event(fd, events)
                self._maybe_resume_accepting()
        finally:
            self._end()

    # -- the loop ---------------------------------------------------------------------------

    def _poll_timeout(self) -> float:
        if self._resume_accepting is None:
            return -1
        return max(0.0, self._resume_accepting - time.monotonic())

    def _on_event(self, fd: int, events: int) -> None:
        if fd == self._wake:
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(self._wake)
            self._collect_finished()
            return
        if fd == self._listener_fd:
            self._accept_some()
            return
        client = self._clients.get(fd)
        if client is None:
            return
        if client.state is _State.IDLE:
            self._read(client)
        elif events & _HANGUP:
            self._hung_up(client)

    def _end(self) -> None:
        with self._lock:
            self._ended = True
            finished, self._finished = self._finished, []
        for client in finished:
            self.workers.finished(client.owner)
            self._close(client)
        for client in list(self._clients.values()):
            if client.state is not _State.RUNNING:
                self._close(client)  # a running one is closed by its worker
        with contextlib.suppress(OSError, ValueError):
            self._epoll.unregister(self._listener_fd)
        self._epoll.close()
        os.close(self._wake)
        self._threads.close()

    # -- accepting --------------------------------------------------------------------------

    def _accept_some(self) -> None:
        for _ in range(_ACCEPTS_PER_WAKE):
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:
                return
            except OSError as error:
                if self._stopping:
                    return
                if error.errno in _SKIPPED_ACCEPT_ERRORS:
                    continue
                if error.errno in _BROKEN_LISTENER_ERRORS:
                    raise
                self._pause_accepting(error)
                return
            self._backoff = ACCEPT_BACKOFF_FIRST
            self._admit(sock)

    def _pause_accepting(self, error: OSError) -> None:
        """Stop watching the listener for a bounded while (the backlog keeps the connections)."""
        now = time.monotonic()
        if now - self._last_accept_warning >= 1.0:
            self._last_accept_warning = now
            log.warning(
                "cannot accept connections (%s); trying again in %d ms",
                error.strerror or error,
                int(self._backoff * 1000),
            )
        with contextlib.suppress(OSError):
            self._epoll.modify(self._listener_fd, 0)
        self._resume_accepting = now + self._backoff
        self._backoff = min(self._backoff * 2, ACCEPT_BACKOFF_MAX)

    def _maybe_resume_accepting(self) -> None:
        if self._resume_accepting is not None and time.monotonic() >= self._resume_accepting:
            self._resume_accepting = None
            with contextlib.suppress(OSError):
                self._epoll.modify(self._listener_fd, select.EPOLLIN)

    def _admit(self, sock: socket.socket) -> None:
        try:
            sock.setblocking(True)
            peer = peer_credentials(sock)
            owner = self.owners.owner_of(peer.uid)
        except OSError:
            sock.close()
            return
        if not self.connections.admit(owner):
            log.warning("refusing a connection from %s (owner uid %d): too many connections", peer, owner)
            refusal = rpc.encode_message(
                rpc.error_reply(rpc.ERROR_BUSY, {"message": "too many connections to the service"})
            )
            with contextlib.suppress(OSError):
                sock.send(refusal, socket.MSG_DONTWAIT)
            sock.close()
            return
        client = ClientConnection(sock, peer, owner)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _TIMEVAL.pack(SEND_TIMEOUT_SECONDS, 0))
            self._epoll.register(client.fd, _IDLE_EVENTS)
        except OSError as error:
            log.warning("cannot watch a connection from %s: %s", peer, error)
            client.connection.close()
            self.connections.release(owner)
            return
        client.watched = True
        self._clients[client.fd] = client
        log.debug("connection from %s (owner uid %d)", peer, owner)

    # -- reading ----------------------------------------------------------------------------

    def _read(self, client: ClientConnection) -> None:
        connection = client.connection
        try:
            open_ = connection.read_available()
            taken = connection.take_message()
        except rpc.InvalidMessage as error:
            log.info("bad message from %s: %s", client.peer, error)
            with contextlib.suppress(OSError, rpc.RpcError):
                connection.sock.send(rpc.encode_message(error.reply()), socket.MSG_DONTWAIT)
            self._close(client)
            return
        except OSError as error:
            log.debug("connection from %s ended: %s", client.peer, error)
            self._close(client)
            return
        if taken is not None:
            self._queue(client, taken)
        elif not open_:
            self._close(client)

    def _queue(self, client: ClientConnection, message: tuple[bytes, list[int]]) -> None:
        client.pending = message
        client.state = _State.WAITING
        client.token = CancelToken()
        try:
            self._epoll.modify(client.fd, select.EPOLLRDHUP)
        except OSError:
            self._close(client)
            return
        self.workers.queue(client.owner, client)
        self._dispatch()

    def _hung_up(self, client: ClientConnection) -> None:
        """The client went away while its request waits or runs: cancel it."""
        client.hung_up = True
        self._unwatch(client)
        client.token.cancel()

    # -- workers ----------------------------------------------------------------------------

    def _dispatch(self) -> None:
        while (ready := self.workers.next_ready()) is not None:
            owner, item = ready
            assert isinstance(item, ClientConnection)
            client = item
            message, client.pending = client.pending, None
            if client.state is _State.CLOSED or message is None:
                self.workers.finished(owner)
                if message is not None:
                    rpc.close_fds(message[1])
                continue
            client.state = _State.RUNNING
            data, fds = message
            try:
                self._threads.submit(functools.partial(self._work, client, data, fds))
            except RuntimeError as error:  # no thread could be made
                log.error("cannot start a worker for %s: %s", client.peer, error)
                rpc.close_fds(fds)
                self.workers.finished(owner)
                self._close(client)

    def _work(self, client: ClientConnection, data: bytes, fds: list[int]) -> None:
        threading.current_thread().name = f"pywsl-request-{client.peer.uid}"
        try:
            self.handler(client, data, fds, client.token)
        except OSError as error:  # the reply could not be sent: the client left or stopped reading
            client.failed = True
            log.debug("connection from %s ended: %s", client.peer, error)
        except Exception as error:
            client.failed = True
            log.exception("request from %s failed: %s", client.peer, error)
        finally:
            rpc.close_fds(fds)
            self._finish(client)

    def _finish(self, client: ClientConnection) -> None:
        """From a worker: hand the connection back to the loop (or close it once the loop ended)."""
        with self._lock:
            if not self._ended:
                self._finished.append(client)
                with contextlib.suppress(OSError):
                    os.eventfd_write(self._wake, 1)
                return
        self.workers.finished(client.owner)
        self._close(client)

    def _collect_finished(self) -> None:
        with self._lock:
            finished, self._finished = self._finished, []
        for client in finished:
            self.workers.finished(client.owner)
            self._resume(client)
        self._dispatch()

    def _resume(self, client: ClientConnection) -> None:
        """A request is answered: run the next one already read, or watch for more."""
        if client.hung_up or client.failed or client.connection.broken:
            self._close(client)
            return
        try:
            taken = client.connection.take_message()
        except rpc.InvalidMessage:
            self._close(client)
            return
        if taken is not None:
            self._queue(client, taken)
            return
        client.state = _State.IDLE
        try:
            self._epoll.modify(client.fd, _IDLE_EVENTS)
        except OSError:
            self._close(client)

    # -- closing ----------------------------------------------------------------------------

    def _unwatch(self, client: ClientConnection) -> None:
        if client.watched:
            client.watched = False
            with contextlib.suppress(OSError, ValueError):
                self._epoll.unregister(client.fd)

    def _close(self, client: ClientConnection) -> None:
        if client.state is _State.CLOSED:
            return
        if client.state is _State.WAITING:
            self.workers.withdraw(client.owner, client)
        fd = client.fd
        self._unwatch(client)
        if client.pending is not None:
            rpc.close_fds(client.pending[1])
            client.pending = None
        client.state = _State.CLOSED
        if self._clients.get(fd) is client:
            del self._clients[fd]
        client.connection.close()
        self.connections.release(client.owner)
