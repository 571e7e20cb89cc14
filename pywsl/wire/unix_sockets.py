"""The `socket` module's calls that pywsl's channels and the guest use, without `socket` itself.

`socket` wraps every constant of `_socket` in an enum when it loads (`enum` and the conversions:
several milliseconds, the largest part of what the VM's start loads of the standard library).
This module gives the same calls on `_socket`: :class:`socket` (with ``accept`` and the context
manager of `socket.socket`), :func:`socketpair`, :func:`send_fds` and :func:`recv_fds` as the
standard library has them (its ``flags`` and ``address`` of `send_fds` are ignored there too),
and the constants as plain integers. Code that only receives sockets takes `_socket.socket`,
which a `socket.socket` of the standard library is as well.
"""

from __future__ import annotations

import _socket
import array
from _socket import (
    AF_INET,
    AF_UNIX,
    CMSG_LEN,
    CMSG_SPACE,
    MSG_CMSG_CLOEXEC,
    MSG_CTRUNC,
    MSG_DONTWAIT,
    MSG_NOSIGNAL,
    MSG_PEEK,
    SCM_RIGHTS,
    SHUT_RD,
    SHUT_RDWR,
    SHUT_WR,
    SO_PEERCRED,
    SO_RCVBUF,
    SO_SNDBUF,
    SOCK_CLOEXEC,
    SOCK_DGRAM,
    SOCK_NONBLOCK,
    SOCK_SEQPACKET,
    SOCK_STREAM,
    SOL_SOCKET,
    gethostname,
    sethostname,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from types import TracebackType
    from typing import Any, Self

__all__ = [
    "AF_INET",
    "AF_UNIX",
    "CMSG_LEN",
    "CMSG_SPACE",
    "MSG_CMSG_CLOEXEC",
    "MSG_CTRUNC",
    "MSG_DONTWAIT",
    "MSG_NOSIGNAL",
    "MSG_PEEK",
    "SCM_RIGHTS",
    "SHUT_RD",
    "SHUT_RDWR",
    "SHUT_WR",
    "SOCK_CLOEXEC",
    "SOCK_DGRAM",
    "SOCK_NONBLOCK",
    "SOCK_SEQPACKET",
    "SOCK_STREAM",
    "SOL_SOCKET",
    "SO_PEERCRED",
    "SO_RCVBUF",
    "SO_SNDBUF",
    "gethostname",
    "recv_fds",
    "send_fds",
    "sethostname",
    "socket",
    "socketpair",
]


class socket(_socket.socket):
    """`_socket.socket` with what pywsl uses of `socket.socket` besides: ``accept`` returning a
    socket of this class, and ``with`` closing it."""

    __slots__ = ("__weakref__",)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def accept(self) -> tuple[socket, Any]:
        """A new connection and its address, as `socket.socket.accept`: the new socket blocks
        unless this one has a timeout (it then gets the same) or no default timeout is set."""
        fd, address = self._accept()  # type: ignore[attr-defined]  # (not in the stubs of _socket)
        connection = socket(self.family, self.type, self.proto, fileno=fd)
        if _socket.getdefaulttimeout() is None and self.gettimeout():
            connection.setblocking(True)
        return connection, address

    def __repr__(self) -> str:
        return f"<unix_sockets.socket fd={self.fileno()}, family={self.family}, type={self.type}>"


def socketpair(family: int = AF_UNIX, type: int = SOCK_STREAM, proto: int = 0) -> tuple[socket, socket]:
    """Two connected sockets of this module's class, as `socket.socketpair`."""
    first, second = _socket.socketpair(family, type, proto)
    return (
        socket(family, type, proto, fileno=first.detach()),
        socket(family, type, proto, fileno=second.detach()),
    )


def send_fds(
    sock: _socket.socket, buffers: Iterable[bytes], fds: Iterable[int], flags: int = 0, address: None = None
) -> int:
    """`socket.send_fds`: `buffers` with the descriptors `fds` (``flags`` and ``address`` are
    ignored, as there)."""
    return sock.sendmsg(buffers, [(SOL_SOCKET, SCM_RIGHTS, array.array("i", fds))])


def recv_fds(
    sock: _socket.socket, bufsize: int, maxfds: int, flags: int = 0
) -> tuple[bytes, list[int], int, Any]:
    """`socket.recv_fds`: (data, the descriptors received, the message flags, the address);
    ``flags`` is ignored, as there."""
    fds = array.array("i")
    data, ancillary, message_flags, address = sock.recvmsg(bufsize, CMSG_LEN(maxfds * fds.itemsize))
    for level, kind, payload in ancillary:
        if level == SOL_SOCKET and kind == SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
    return data, list(fds), message_flags, address
