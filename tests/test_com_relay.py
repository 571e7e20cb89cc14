"""create_lx_process over COM against socketpairs standing in for the service's five sockets:
the test plays the Linux relay (wsl-reference §4.3 step 7)."""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess
import threading
from typing import Any

import pytest
from test_com_session import DEBIAN, FakeSession, PosixHost

from pywsl.api.com import layout
from pywsl.api.com.relay import read_message
from pywsl.api.com.session import ComUserSession
from pywsl.api.com.vtable import ComInterface
from pywsl.wire import schema

EXIT_STATUS = schema("LX_INIT_PROCESS_EXIT_STATUS")
WINDOW_SIZE = schema("LX_INIT_WINDOW_SIZE_CHANGED")


class ConsoleHost(PosixHost):
    def __init__(self) -> None:
        super().__init__()
        self.size = (120, 40)

    def console_size(self) -> tuple[int, int] | None:
        return self.size


def launch(fake: FakeSession, host: PosixHost, **kwargs: Any) -> tuple[Any, list[socket.socket]]:
    """CreateLxProcess returning one end of five socketpairs; the other ends are the relay's."""
    relay_ends: list[socket.socket] = []

    def create(*args: Any) -> int:
        for out in args[18:23]:
            ours, theirs = socket.socketpair()
            relay_ends.append(theirs)
            out.contents.value = ours.detach()
        ctypes.memmove(args[14], DEBIAN.bytes_le, 16)
        return 0

    fake.handlers["CreateLxProcess"] = create
    session = ComUserSession(ComInterface(fake.pointer, host.free), host)
    return session.create_lx_process(DEBIAN, ["echo", "hi there"], **kwargs), relay_ends


def test_stdio_is_relayed_byte_exact_and_the_exit_status_is_echoed() -> None:
    fake, host = FakeSession(), PosixHost()
    process, relay = launch(fake, host, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = fake.named("CreateLxProcess")
    assert seen["CommandLineCount"] == 1 and seen["CurrentWorkingDirectory"] == "C:\\Users\\me"
    payload = bytes(range(256)) * 1024
    received = bytearray()

    def linux_side() -> None:
        while chunk := relay[0].recv(65536):
            received.extend(chunk)
        relay[1].sendall(payload)
        relay[2].sendall(b"warning\n")
        relay[4].sendall(EXIT_STATUS.build(ExitCode=3))
        assert read_message(relay[4]) == EXIT_STATUS.build(ExitCode=3)  # the echo
        for index in (1, 2):
            relay[index].shutdown(socket.SHUT_WR)

    worker = threading.Thread(target=linux_side)
    worker.start()
    out, err = process.communicate(b"input \x00\xff" * 1000, timeout=30)
    worker.join(30)
    assert (out, err, process.returncode) == (payload, b"warning\n", 3)
    assert bytes(received) == b"input \x00\xff" * 1000
    assert not process.exit_status_lost
    process.close()
    for sock in relay:
        sock.close()


def test_window_size_is_sent_and_followed_on_control() -> None:
    fake, host = FakeSession(), ConsoleHost()
    host.is_console = lambda handle: handle == 1  # type: ignore[method-assign]
    process, relay = launch(fake, host, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    relay[3].settimeout(10)
    try:
        seen = fake.named("CreateLxProcess")
        assert (seen["Columns"], seen["Rows"]) == (120, 40)
        assert seen["StdHandles"].contents.StdOut.HandleType == layout.LXSS_HANDLE_CONSOLE
        first = read_message(relay[3])
        assert first == WINDOW_SIZE.build(Rows=40, Columns=120)
        host.size = (100, 30)
        assert read_message(relay[3]) == WINDOW_SIZE.build(Rows=30, Columns=100)
        relay[4].close()  # the channel ends without a status: wsl.exe's exit code 1
        for index in (1, 2):
            relay[index].shutdown(socket.SHUT_WR)
        assert process.wait(30) == 1 and process.exit_status_lost
    finally:
        process.close()
        for sock in relay:
            sock.close()


def test_a_wsl1_reply_closes_every_returned_handle() -> None:
    fake, host = FakeSession(), PosixHost()
    made: list[int] = []

    def create(*args: Any) -> int:
        for out in args[16:23]:
            fd = os.open(os.devnull, os.O_RDONLY)
            made.append(fd)
            out.contents.value = fd
        return 0

    fake.handlers["CreateLxProcess"] = create
    session = ComUserSession(ComInterface(fake.pointer, host.free), host)
    with pytest.raises(Exception, match="WSL1"):
        session.create_lx_process(
            DEBIAN, ["true"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
    for fd in made:
        with pytest.raises(OSError):
            os.fstat(fd)
    assert layout.LXSS_HANDLE_CONSOLE == 0
