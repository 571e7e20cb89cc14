"""The interop worker on its own: one connection served in a forked child, real host programs.

The client's side is played here with a socket pair: the request and descriptors go in as the
interop client sends them, the answers come back as it reads them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import select
import signal
import socket
import time
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import pid_alive, wait_until

from pywsl.guest import interop_messages as messages
from pywsl.guest import interop_server

DEADLINE = 30.0


class Worker:
    """``interop_server.serve`` in a child process, on one end of a socket pair."""

    def __init__(self, request_timeout: float | None = None) -> None:
        self.client, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.pid = os.fork()
        if self.pid == 0:
            code = 1
            try:
                self.client.close()
                if request_timeout is not None:
                    interop_server.REQUEST_TIMEOUT = request_timeout
                code = interop_server.serve(theirs.detach(), os.geteuid())
            finally:
                os._exit(code)
        theirs.close()
        self.client.settimeout(DEADLINE)

    def send(self, request: bytes, stdio: list[int]) -> None:
        socket.send_fds(self.client, [request], stdio)

    def receive(self) -> tuple[int, int]:
        """(type, the 32-bit field at 16) of the next message; (-1, 0) at the end."""
        header = self.client.recv(messages.HEADER.size, socket.MSG_WAITALL)
        if len(header) < messages.HEADER.size:
            return -1, 0
        message_type, size, _sequence, _reserved = messages.HEADER.unpack(header)
        rest = self.client.recv(size - len(header), socket.MSG_WAITALL)
        return message_type, messages.int32_at_16(header + rest)

    def exit_code(self) -> int:
        self.client.close()
        _pid, status = os.waitpid(self.pid, 0)
        self.pid = 0
        return os.waitstatus_to_exitcode(status)

    def end(self) -> None:
        self.client.close()
        if self.pid:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)


@pytest.fixture
def worker() -> Iterator[Worker]:
    made = Worker()
    yield made
    made.end()


def _request(argv: list[str], cwd: str = "/", pty: bool = False, size: tuple[int, int] = (0, 0)) -> bytes:
    return messages.encode_create_process(
        argv[0], cwd, argv[1:], ["PATH=/usr/bin:/bin"], size[0], size[1], pseudoconsole=pty
    )


def test_runs_the_program_with_the_callers_pipes_folder_and_exit_status(
    worker: Worker, tmp_path: Path
) -> None:
    stdin_read, stdin_write = os.pipe()
    stdout_read, stdout_write = os.pipe()
    try:
        script = "pwd; cat; echo $HOME $USER; trap '' PIPE; kill -s PIPE $$; echo pipe-ignored; exit 7"
        worker.send(_request(["/bin/sh", "-c", script], str(tmp_path)), [stdin_read, stdout_write, 2])
        os.close(stdin_read)
        os.close(stdout_write)
        os.write(stdin_write, b"piped\n")
        os.close(stdin_write)
        assert worker.receive() == (messages.CREATE_PROCESS_RESPONSE, 0)
        assert worker.receive() == (messages.EXIT_STATUS, 7)
        with os.fdopen(stdout_read, "rb") as output:
            lines = output.read().decode().splitlines()
    finally:
        for fd in (stdin_write, stdout_read):
            with contextlib.suppress(OSError):
                os.close(fd)
    assert lines[:2] == [str(tmp_path), "piped"]
    assert lines[2].split()[1] == "root" and lines[3] == "pipe-ignored"
    assert worker.exit_code() == 0


def test_a_failed_exec_is_its_errno(worker: Worker) -> None:
    worker.send(_request(["/nonexistent/program"]), [0, 1, 2])
    assert worker.receive() == (messages.CREATE_PROCESS_RESPONSE, errno.ENOENT)
    assert worker.receive() == (-1, 0)
    assert worker.exit_code() == 1


def test_a_relative_program_is_refused(worker: Worker) -> None:
    worker.send(_request(["true"]), [0, 1, 2])
    assert worker.receive() == (messages.CREATE_PROCESS_RESPONSE, errno.EINVAL)
    assert worker.exit_code() == 1


def test_an_oversize_request_is_refused_before_it_is_read(worker: Worker) -> None:
    header = messages.HEADER.pack(messages.CREATE_PROCESS_UTILITY_VM, messages.MAX_REQUEST_BYTES + 1, 0, 0)
    worker.send(header, [0, 1, 2])
    assert worker.receive() == (messages.CREATE_PROCESS_RESPONSE, errno.E2BIG)
    assert worker.exit_code() == 1


def test_too_many_environment_entries_are_refused(worker: Worker) -> None:
    environment = [f"V{n}=1" for n in range(messages.MAX_ENVIRONMENT + 1)]
    worker.send(messages.encode_create_process("/bin/true", "/", [], environment), [0, 1, 2])
    assert worker.receive() == (messages.CREATE_PROCESS_RESPONSE, errno.E2BIG)
    assert worker.exit_code() == 1


def test_a_request_that_never_comes_ends_the_worker() -> None:
    worker = Worker(request_timeout=0.5)
    try:
        started = time.monotonic()
        assert worker.receive() == (-1, 0)
        assert time.monotonic() - started < DEADLINE
        assert worker.exit_code() == 1
    finally:
        worker.end()


def test_signals_reach_the_program_and_a_gone_caller_kills_it(worker: Worker) -> None:
    output_read, output_write = os.pipe()
    try:
        script = "trap 'echo usr1' USR1; echo $$; while :; do sleep 0.05; done"
        worker.send(_request(["/bin/sh", "-c", script]), [0, output_write, 2])
        os.close(output_write)
        assert worker.receive() == (messages.CREATE_PROCESS_RESPONSE, 0)
        with os.fdopen(output_read, "rb", buffering=0) as output:
            pid = int(output.readline())
            worker.client.sendall(messages.encode_signal(signal.SIGUSR1))
            assert output.readline() == b"usr1\n"
            worker.client.close()  # the caller is gone: the program's process group is killed
            assert wait_until(lambda: not pid_alive(pid), DEADLINE)
            assert output.read() == b""
    finally:
        with contextlib.suppress(OSError):
            os.close(output_read)
    assert worker.exit_code() == 1


class Terminal:
    """The caller's terminal: a pty whose slave goes to the worker (raw, as the client makes it)."""

    def __init__(self, raw: bool = True) -> None:
        self.master, self.slave = os.openpty()
        if raw:
            tty.setraw(self.slave)
        self.seen = b""

    def expect(self, pattern: str) -> re.Match[bytes]:
        deadline = time.monotonic() + DEADLINE
        while (found := re.search(pattern.encode(), self.seen)) is None:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {pattern!r} in {self.seen!r}"
            ready, _, _ = select.select([self.master], [], [], remaining)
            if ready:
                self.seen += os.read(self.master, 4096)
        self.seen = self.seen[found.end() :]
        return found

    def close(self) -> None:
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)


def test_a_pseudoconsole_is_the_programs_controlling_terminal(worker: Worker) -> None:
    terminal = Terminal()
    try:
        script = (
            "echo tty=$(tty); echo pg=$(ps -o pgid= -p $$) fg=$(ps -o tpgid= -p $$); "
            "echo size=$(stty size); read line; echo got=$line size=$(stty size); exit 4"
        )
        request = _request(["/bin/sh", "-c", script], pty=True, size=(20, 70))
        worker.send(request, [terminal.slave, terminal.slave, terminal.slave])
        assert worker.receive() == (messages.CREATE_PROCESS_RESPONSE, 0)
        name = terminal.expect(r"tty=(\S+)\r\n").group(1).decode()
        assert name.startswith("/dev/pts/") and name != os.ttyname(terminal.slave)
        group = terminal.expect(r"pg= *(\d+) fg= *(\d+)\r\n")
        assert group.group(1) == group.group(2)  # the program's group is the foreground group
        assert terminal.expect(r"size=(\d+ \d+)\r\n").group(1) == b"20 70"
        worker.client.sendall(messages.encode_window_size(30, 90))
        os.write(terminal.master, b"typed\r")
        assert terminal.expect(r"got=(\S+) size=(\d+ \d+)\r\n").groups() == (b"typed", b"30 90")
        assert worker.receive() == (messages.EXIT_STATUS, 4)
        assert worker.exit_code() == 0
    finally:
        terminal.close()


def test_end_of_input_on_a_terminal_that_is_not_raw_reaches_the_program(worker: Worker) -> None:
    terminal = Terminal(raw=False)
    try:
        worker.send(
            _request(["/bin/sh", "-c", "cat >/dev/null; echo finished"], pty=True), [terminal.slave] * 3
        )
        assert worker.receive() == (messages.CREATE_PROCESS_RESPONSE, 0)
        os.write(terminal.master, b"some input\n")
        terminal.expect("some input")
        os.write(terminal.master, b"\x04")  # ^D: the caller's terminal reads nothing, cat its end
        terminal.expect("finished")
        assert worker.receive() == (messages.EXIT_STATUS, 0)
        assert worker.exit_code() == 0
    finally:
        terminal.close()


def test_without_a_terminal_no_pseudoconsole_is_made(worker: Worker) -> None:
    stdin_read, stdin_write = os.pipe()
    output_read, output_write = os.pipe()
    try:
        worker.send(_request(["/bin/sh", "-c", "tty; echo $?"], pty=True), [stdin_read, output_write, 2])
        os.close(output_write)
        assert worker.receive() == (messages.CREATE_PROCESS_RESPONSE, 0)
        assert worker.receive() == (messages.EXIT_STATUS, 0)
        with os.fdopen(output_read, "rb") as output:
            printed = output.read()
    finally:
        for fd in (stdin_read, stdin_write, output_read):
            with contextlib.suppress(OSError):
                os.close(fd)
    assert printed == b"not a tty\n1\n"


def test_window_size_messages_without_a_terminal_are_ignored(worker: Worker) -> None:
    read_end, write_end = os.pipe()
    try:
        worker.send(_request(["/bin/sh", "-c", "read x; exit 3"]), [read_end, 1, 2])
        assert worker.receive() == (messages.CREATE_PROCESS_RESPONSE, 0)
        worker.client.sendall(messages.encode_window_size(10, 10))
        os.write(write_end, b"\n")
        assert worker.receive() == (messages.EXIT_STATUS, 3)
    finally:
        os.close(read_end)
        os.close(write_end)
    assert worker.exit_code() == 0
