"""`pywsl.wire.unix_sockets` and `pywsl.guest.lean_signal`: the standard library's calls without its enums.

The guest and the channels use these instead of `socket` and `signal` (which load `enum` at the
VM's start); each call is checked against the standard library's, and a socket of either kind
works with the other's helpers.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from pathlib import Path

import pytest

from pywsl.guest import lean_signal
from pywsl.wire import unix_sockets


def test_socketpair_gives_connected_sockets_of_the_lean_class() -> None:
    first, second = unix_sockets.socketpair(unix_sockets.AF_UNIX, unix_sockets.SOCK_SEQPACKET)
    with first, second:
        assert isinstance(first, unix_sockets.socket) and isinstance(second, unix_sockets.socket)
        assert (first.family, first.type) == (socket.AF_UNIX, socket.SOCK_SEQPACKET)
        first.sendall(b"hello")
        assert second.recv(16) == b"hello"
        assert not os.get_inheritable(first.fileno())
    assert first.fileno() == -1 and second.fileno() == -1  # closed by `with`


@pytest.mark.parametrize("sender", ["lean", "stdlib"])
def test_descriptors_pass_both_ways_between_the_lean_and_the_standard_helpers(sender: str) -> None:
    lean, standard = unix_sockets.socketpair()
    stdlib_end = socket.socket(fileno=standard.detach())
    read_end, write_end = os.pipe()
    try:
        if sender == "lean":
            assert unix_sockets.send_fds(lean, [b"fd"], [write_end]) == 2
            data, fds, _flags, _address = socket.recv_fds(stdlib_end, 16, 2)
        else:
            socket.send_fds(stdlib_end, [b"fd"], [write_end])
            data, fds, _flags, _address = unix_sockets.recv_fds(lean, 16, 2)
        assert data == b"fd" and len(fds) == 1
        os.write(fds[0], b"x")
        os.close(fds[0])
        assert os.read(read_end, 1) == b"x"
    finally:
        for fd in (read_end, write_end):
            os.close(fd)
        lean.close()
        stdlib_end.close()


def test_recv_fds_without_descriptors_and_with_too_many() -> None:
    first, second = unix_sockets.socketpair()
    pipes = [os.pipe() for _ in range(3)]
    try:
        first.sendall(b"plain")
        assert unix_sockets.recv_fds(second, 16, 2)[:2] == (b"plain", [])
        unix_sockets.send_fds(first, [b"many"], [end for pair in pipes for end in pair][:3])
        data, fds, flags, _address = unix_sockets.recv_fds(second, 16, 1)
        assert data == b"many" and len(fds) == 1  # the rest is cut off, as with socket.recv_fds
        assert flags & unix_sockets.MSG_CTRUNC
        os.close(fds[0])
    finally:
        for pair in pipes:
            for fd in pair:
                os.close(fd)
        first.close()
        second.close()


def test_accept_gives_a_blocking_lean_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "listener")
    with unix_sockets.socket(
        unix_sockets.AF_UNIX, unix_sockets.SOCK_STREAM | unix_sockets.SOCK_CLOEXEC
    ) as server:
        server.bind(path)
        server.listen(1)
        server.settimeout(5)
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        connector = threading.Thread(target=client.connect, args=(path,))
        connector.start()
        connection, _address = server.accept()
        connector.join()
        with connection, client:
            assert isinstance(connection, unix_sockets.socket)
            # As socket.socket.accept: blocking, whatever the listener's timeout (no default one).
            assert connection.gettimeout() is None
            client.sendall(b"ping")
            assert connection.recv(4) == b"ping"
        server.settimeout(None)
        server.setblocking(False)
        with pytest.raises(BlockingIOError):
            server.accept()


def test_a_socket_from_a_descriptor_finds_its_family_and_type() -> None:
    first, second = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with first:
        adopted = unix_sockets.socket(fileno=second.detach())
        with adopted:
            assert (adopted.family, adopted.type) == (socket.AF_UNIX, socket.SOCK_DGRAM)
            assert "unix_sockets.socket" in repr(adopted)


def test_the_lean_constants_are_the_standard_ones() -> None:
    for name in unix_sockets.__all__:
        value = getattr(unix_sockets, name)
        if isinstance(value, int):
            assert value == getattr(socket, name), name
    for name in lean_signal.__all__:
        value = getattr(lean_signal, name)
        if isinstance(value, int):
            assert value == getattr(signal, name), name


def test_lean_signal_handlers_are_the_standard_ones() -> None:
    calls: list[int] = []

    def handler(number: int, _frame: object) -> None:
        calls.append(number)

    previous = lean_signal.signal(signal.SIGUSR1, handler)
    try:
        assert signal.getsignal(signal.SIGUSR1) is handler
        assert lean_signal.getsignal(signal.SIGUSR1) is handler
        os.kill(os.getpid(), signal.SIGUSR1)
        assert calls == [signal.SIGUSR1]
        assert lean_signal.signal(signal.SIGUSR1, lean_signal.SIG_IGN) is handler
        assert signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert set(lean_signal.valid_signals()) == set(signal.valid_signals())
