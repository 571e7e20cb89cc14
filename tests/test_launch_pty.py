"""Console streams: the relay's PTY, window size, Ctrl-C, end-of-file, mixed console/pipe cases,
and the client's raw mode under a real terminal."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Unpack

import pytest
from test_launch_support import (
    EXIT_STATUS,
    REPOSITORY,
    SIGNAL_PROCESS,
    TEST_UID,
    WINDOW_SIZE_CHANGED,
    Leader,
    ProcessOptions,
    etc_root,
    leader,
    leader_for,
    python_environment,
)

from pywsl.wire.channel import MessageChannel
from pywsl.wire.constants import LX_INIT_TTY_LIMIT

__all__ = ["etc_root", "leader"]  # the module-scoped fixtures every test here uses


def _collect(sock: socket.socket, into: bytearray) -> None:
    while True:
        try:
            data = sock.recv(65536)
        except OSError:
            return
        if not data:
            return
        into.extend(data)


@dataclass
class RawSession:
    """The client's side of one launch, speaking the relay protocol directly over sockets."""

    pid: int
    streams: list[socket.socket | None]  # our ends of console sockets, None for passed fds
    control: MessageChannel
    exit: MessageChannel
    output: list[bytearray] = field(default_factory=lambda: [bytearray(), bytearray(), bytearray()])
    readers: list[threading.Thread] = field(default_factory=list)

    def start_readers(self) -> None:
        for index, sock in enumerate(self.streams):
            if sock is not None:
                reader = threading.Thread(target=_collect, args=(sock, self.output[index]), daemon=True)
                reader.start()
                self.readers.append(reader)

    def type(self, data: bytes) -> None:
        stream = self.streams[0]
        assert stream is not None
        stream.sendall(data)

    def end_input(self) -> None:
        stream = self.streams[0]
        assert stream is not None
        stream.shutdown(socket.SHUT_WR)

    def wait_for(self, index: int, needle: bytes, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.output[index]:
            assert time.monotonic() < deadline, f"{needle!r} not in {bytes(self.output[index])!r}"
            time.sleep(0.01)

    def finish(self, timeout: float = 20) -> int:
        """Receive ExitStatus, echo it, collect the rest of the output (the relay shuts it down)."""
        data, _ = self.exit.receive(timeout=timeout)
        self.exit.send(data)
        for reader in self.readers:
            reader.join(timeout)
            assert not reader.is_alive(), "the relay did not shut the console streams down"
        self.close()
        return int(EXIT_STATUS.parse(data).ExitCode)

    def close(self) -> None:
        for sock in self.streams:
            if sock is not None:
                sock.close()
        self.control.close()
        self.exit.close()


def raw_launch(
    leader: Leader,
    command_line: list[str],
    *,
    console: tuple[bool, bool, bool] = (True, True, True),
    passed: dict[int, int] | None = None,
    rows: int = 30,
    columns: int = 100,
    **request: Unpack[ProcessOptions],
) -> RawSession:
    """Launch with socket pairs for the console streams and ``passed`` fds for the others."""
    ours: list[socket.socket | None] = []
    relay_fds: list[int] = []
    theirs: list[socket.socket] = []
    for index, is_console in enumerate(console):
        if is_console:
            mine, relay_end = socket.socketpair()
            ours.append(mine)
            theirs.append(relay_end)
            relay_fds.append(relay_end.fileno())
        else:
            ours.append(None)
            relay_fds.append((passed or {})[index])
    control, relay_control = socket.socketpair()
    exit_end, relay_exit = socket.socketpair()
    theirs += [relay_control, relay_exit]
    relay_fds += [relay_control.fileno(), relay_exit.fileno()]
    pid = leader.create_process(
        relay_fds, command_line=command_line, console=console, rows=rows, columns=columns, **request
    )
    for sock in theirs:
        sock.close()
    control_channel = MessageChannel(control, name="control")
    session = RawSession(pid, ours, control_channel, MessageChannel(exit_end, name="exit"))
    session.start_readers()
    return session


def test_pty_with_size_and_term(leader: Leader) -> None:
    session = raw_launch(leader, ["-c", "tty; stty size; echo $TERM"], rows=33, columns=77)
    assert session.finish() == 0
    lines = bytes(session.output[1]).split(b"\r\n")
    assert lines[0].startswith(b"/dev/pts/")
    assert lines[1:3] == [b"33 77", b"xterm-256color"]
    assert session.output[2] == b""  # a console stderr shares the PTY stream on stdout


def test_window_size_changed(leader: Leader) -> None:
    session = raw_launch(leader, ["-c", "read line; stty size; echo got $line"])
    session.control.send(WINDOW_SIZE_CHANGED, Rows=50, Columns=120)
    time.sleep(0.1)
    session.type(b"hello\n")
    assert session.finish() == 0
    assert bytes(session.output[1]) == b"hello\r\n50 120\r\ngot hello\r\n"


def test_ctrl_c_reaches_the_foreground_program(leader: Leader) -> None:
    session = raw_launch(leader, ["-c", "echo ready; sleep 30; echo not reached"])
    session.wait_for(1, b"ready")
    session.type(b"\x03")
    assert session.finish() == 128 + signal.SIGINT
    assert b"not reached" not in session.output[1]


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ([b"line\n"], b"line\r\nline\r\ndone\r\n"),  # the echo, then cat's copy
        ([b"line\n", b"partial"], b"line\r\nline\r\npartialpartialdone\r\n"),  # a partial line first
        ([], b"done\r\n"),
    ],
)
def test_end_of_input_reaches_the_process(leader: Leader, typed: list[bytes], expected: bytes) -> None:
    session = raw_launch(leader, ["-c", "cat; echo done"])
    for chunk in typed:
        session.type(chunk)
        session.wait_for(1, chunk.replace(b"\n", b"\r\n") * (2 if chunk.endswith(b"\n") else 1))
    session.end_input()
    assert session.finish() == 0
    assert bytes(session.output[1]) == expected


def test_end_of_input_after_a_raw_enter_leaves_no_nul_for_the_next_reader(leader: Leader) -> None:
    """A client in raw mode sends Enter as \\r: one VEOF ends cat, and no second one is left in the
    terminal, where it would reach the next reader as a NUL byte (a shell's stray ``^@``)."""
    session = raw_launch(leader, ["-c", "cat; stty -icanon min 0 time 5; od -An -c; echo done"])
    session.type(b"line\r")
    session.wait_for(1, b"line\r\n")
    session.end_input()
    assert session.finish() == 0
    assert bytes(session.output[1]) == b"line\r\nline\r\ndone\r\n"


def test_end_of_input_hangs_up_an_interactive_shell(leader: Leader) -> None:
    """bash's line editor keeps the terminal in raw mode, where there is no end-of-file: the
    terminal is hung up (WSL's relay closes it), and the shell ends instead of waiting forever."""
    session = raw_launch(leader, ["bash", "--norc", "-i"], filename="/bin/bash")
    session.type(b"echo $((6 * 7))\r")
    session.wait_for(1, b"42\r\n")
    session.end_input()
    assert session.finish() == 128 + signal.SIGHUP
    output = bytes(session.output[1])
    assert b"\0" not in output and b"^@" not in output


def test_signal_in_pty_mode_goes_to_the_foreground_group(leader: Leader) -> None:
    session = raw_launch(leader, ["-c", "echo ready; sleep 30"])
    session.wait_for(1, b"ready")
    session.control.send(SIGNAL_PROCESS, Signal=int(signal.SIGTERM))
    assert session.finish() == 128 + signal.SIGTERM


def test_tty_belongs_to_the_user(leader: Leader) -> None:
    session = raw_launch(leader, ["-c", 'stat -c "%u %a" "$(tty)"; id -u'], username="tester")
    assert session.finish() == 0
    assert bytes(session.output[1]).split(b"\r\n")[:2] == [f"{TEST_UID} 620".encode(), str(TEST_UID).encode()]


def test_stdin_pipe_stdout_console(leader: Leader) -> None:
    read_end, write_end = os.pipe()
    os.write(write_end, b"from a pipe\n")
    os.close(write_end)
    session = raw_launch(
        leader,
        ["-c", "cat; [ -t 0 ] || echo stdin-not-tty"],
        console=(False, True, True),
        passed={0: read_end},
    )
    os.close(read_end)
    assert session.finish() == 0
    assert bytes(session.output[1]) == b"from a pipe\r\nstdin-not-tty\r\n"


def test_stdout_pipe_keeps_raw_bytes_and_echo_goes_to_stderr(leader: Leader) -> None:
    read_end, write_end = os.pipe()
    session = raw_launch(
        leader,
        ["-c", "read line; printf '%s\\n' \"$line\"; [ -t 1 ] || echo stdout-not-tty >&2"],
        console=(True, False, True),
        passed={1: write_end},
    )
    os.close(write_end)
    session.type(b"typed\n")
    assert session.finish() == 0
    with os.fdopen(read_end, "rb") as pipe:
        assert pipe.read() == b"typed\n"  # no \r: a pipe is not a terminal
    assert bytes(session.output[2]) == b"typed\r\nstdout-not-tty\r\n"  # the echo and stderr


def test_echo_comes_back_on_stdin_when_no_output_is_a_console(leader: Leader) -> None:
    read_end, write_end = os.pipe()
    session = raw_launch(
        leader,
        ["-c", 'read line; echo "$line"'],
        console=(True, False, False),
        passed={1: write_end, 2: write_end},
    )
    os.close(write_end)
    session.type(b"abc\n")
    assert session.finish() == 0
    assert bytes(session.output[0]) == b"abc\r\n"
    with os.fdopen(read_end, "rb") as pipe:
        assert pipe.read() == b"abc\n"


def test_all_output_is_flushed_before_the_exit_status(leader: Leader) -> None:
    size = 32 * 1024 * 1024
    started = time.monotonic()
    session = raw_launch(
        leader,
        ["head", "-c", str(size), "/dev/zero"],
        filename="head",
        console=(False, True, True),
        passed={0: os.open(os.devnull, os.O_RDONLY)},
    )
    assert session.finish(timeout=60) == 0
    elapsed = time.monotonic() - started
    assert bytes(session.output[1]) == bytes(size)
    print(f"PTY output: {size / elapsed / 1e6:.0f} MB/s")


def test_client_going_away_hangs_up_the_terminal(leader: Leader) -> None:
    session = raw_launch(leader, ["-c", "echo ready; sleep 30"])
    session.wait_for(1, b"ready")
    session.close()  # control channel closes: the client is gone
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{session.pid}") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not os.path.exists(f"/proc/{session.pid}")


# -- a real terminal around the client ------------------------------------------------------------


class HostTerminal:
    """The client (``test_launch_support.py client``) running on a PTY of the host."""

    def __init__(self, spec: dict[str, object], rows: int = 40, columns: int = 132) -> None:
        self.master, self.slave = pty.openpty()
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        self.before = termios.tcgetattr(self.slave)
        self.output = bytearray()
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(REPOSITORY / "tests" / "test_launch_support.py"),
                "client",
                json.dumps(spec),
            ],
            stdin=self.slave,
            stdout=self.slave,
            stderr=self.slave,
            start_new_session=True,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
            env=python_environment(),
        )
        self._stop = False
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while not self._stop:
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if ready:
                try:
                    data = os.read(self.master, 65536)
                except OSError:
                    return
                self.output.extend(data)

    def expect(self, needle: bytes, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.output:
            assert time.monotonic() < deadline, f"{needle!r} not in {bytes(self.output)!r}"
            time.sleep(0.01)

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    def resize(self, rows: int, columns: int) -> None:
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))

    def in_raw_mode(self) -> bool:
        return not termios.tcgetattr(self.slave)[3] & termios.ICANON

    def wait(self, timeout: float = 20) -> int:
        return self.process.wait(timeout)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._stop = True
        self.reader.join(5)
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def host_terminal() -> Iterator[list[HostTerminal]]:
    terminals: list[HostTerminal] = []
    yield terminals
    for terminal in terminals:
        terminal.close()


def test_login_shell_on_a_real_terminal(host_terminal: list[HostTerminal]) -> None:
    terminal = HostTerminal({"command_line": [], "request": {"login": True}})
    host_terminal.append(terminal)
    terminal.type(b"echo ARGV0=$0; stty size\n")
    terminal.expect(b"40 132")
    assert b"ARGV0=-bash" in terminal.output
    assert terminal.in_raw_mode()
    terminal.resize(50, 100)  # SIGWINCH to the client → WindowSizeChanged
    time.sleep(0.3)
    terminal.type(b"stty size; echo READY; sleep 30\n")
    terminal.expect(b"50 100")
    terminal.expect(b"READY\r\n")
    time.sleep(0.2)
    terminal.type(b"\x03")  # Ctrl-C as a byte: the PTY in the distribution makes it SIGINT
    terminal.type(b"echo status=$?\n")
    terminal.expect(b"status=130")
    terminal.type(b"exit 7\n")
    assert terminal.wait() == 7
    assert termios.tcgetattr(terminal.slave) == terminal.before


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_terminal_is_restored_when_the_client_gets_a_signal(
    host_terminal: list[HostTerminal], number: int
) -> None:
    terminal = HostTerminal({"command_line": ["-c", "echo READY; sleep 30"]})
    host_terminal.append(terminal)
    terminal.expect(b"READY")
    assert terminal.in_raw_mode()
    terminal.process.send_signal(number)  # forwarded to the foreground group of the PTY
    assert terminal.wait() == 128 + number
    assert termios.tcgetattr(terminal.slave) == terminal.before


def test_nothing_is_imported_after_start_up(etc_root: Path) -> None:
    """Inside a distribution the interpreter's own files are gone: every path must be preloaded."""
    with leader_for(etc_root, block_imports=True) as strict:
        session = raw_launch(strict, ["-c", "read line; stty size; echo $line; exit 3"], username="tester")
        session.control.send(WINDOW_SIZE_CHANGED, Rows=20, Columns=60)
        session.type(b"typed\n")
        assert session.finish() == 3
        assert bytes(session.output[1]).endswith(b"20 60\r\ntyped\r\n")
        session = raw_launch(strict, ["-c", "echo ready; sleep 30"])
        session.wait_for(1, b"ready")
        session.control.send(SIGNAL_PROCESS, Signal=int(signal.SIGTERM))
        assert session.finish() == 128 + signal.SIGTERM
        assert strict.run(["-c", "echo fine"], cwd="/no/such/dir")[:2] == (0, b"fine\n")
        assert strict.run(["missing-program"], filename="missing-program")[0] == 1
        assert strict.run(["-c", "true"], username="ghost")[0] == 67
        strict.channel.close()
        assert strict.process.wait(timeout=10) == 0


def test_no_terminal_available_is_the_tty_limit_status(etc_root: Path) -> None:
    # A private mount namespace where /dev/ptmx is not a PTY multiplexer.
    wrapper = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
               'mount --bind /dev/null /dev/ptmx && exec "$@"', "sh"]  # fmt: skip
    with leader_for(etc_root, wrapper=wrapper) as no_pty:
        session = raw_launch(no_pty, ["-c", "echo never runs"])
        assert session.finish() == LX_INIT_TTY_LIMIT
        assert b"cannot open a terminal" in session.output[1] + session.output[2]
        assert b"never runs" not in session.output[1]
        assert no_pty.run(["-c", "echo pipes still work"])[:2] == (0, b"pipes still work\n")
