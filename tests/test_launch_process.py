"""Client side without a relay: terminal helpers and prepare_stdio's per-stream decisions."""

from __future__ import annotations

import fcntl
import os
import pty
import socket
import struct
import termios
from collections.abc import Iterator
from pathlib import Path

import pytest

from pywsl.api.process.lx_process import DEVNULL, PIPE, STDOUT, LxProcess, PreparedStdio, prepare_stdio
from pywsl.api.process.terminal import RawMode, is_terminal, make_raw, window_size


@pytest.fixture
def terminal() -> Iterator[tuple[int, int]]:
    master, slave = pty.openpty()
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 99, 0, 0))
    yield master, slave
    os.close(master)
    os.close(slave)


def open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


def test_window_size_and_is_terminal(terminal: tuple[int, int], tmp_path: Path) -> None:
    _, slave = terminal
    assert is_terminal(slave)
    assert window_size(slave) == (33, 99)
    with open(tmp_path / "f", "wb") as handle:
        assert not is_terminal(handle.fileno())
        assert window_size(handle.fileno()) is None
    assert not is_terminal(12345)


def test_make_raw_is_cfmakeraw() -> None:
    attributes = [
        termios.ICRNL | termios.IXON | termios.BRKINT,
        termios.OPOST | termios.ONLCR,
        termios.CS7 | termios.PARENB | termios.CREAD,
        termios.ICANON | termios.ECHO | termios.ISIG | termios.IEXTEN | termios.ECHOE,
        termios.B38400,
        termios.B38400,
        [b"\x00"] * 32,
    ]
    raw = make_raw(attributes)
    assert raw[0] == 0
    assert raw[1] == termios.ONLCR
    assert raw[2] == termios.CS8 | termios.CREAD
    assert raw[3] == termios.ECHOE
    assert raw[6][termios.VMIN] == 1 and raw[6][termios.VTIME] == 0
    assert attributes[0] == termios.ICRNL | termios.IXON | termios.BRKINT  # the input is not changed


def test_raw_mode_restores_on_exception(terminal: tuple[int, int]) -> None:
    _, slave = terminal
    before = termios.tcgetattr(slave)
    with pytest.raises(KeyError), RawMode(slave) as mode:
        assert mode.active
        now = termios.tcgetattr(slave)
        assert not now[3] & (termios.ICANON | termios.ECHO | termios.ISIG)
        raise KeyError("boom")
    assert termios.tcgetattr(slave) == before
    mode.restore()  # a second restore is harmless


def test_raw_mode_leaves_non_terminals_alone(tmp_path: Path) -> None:
    with open(tmp_path / "f", "wb") as handle, RawMode(handle.fileno()) as mode:
        assert not mode.active


def test_pipes_and_files_are_passed_as_is(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    with open(tmp_path / "out", "wb") as out:
        prepared = prepare_stdio(read_end, out, write_end)
        try:
            assert prepared.console == (False, False, False)
            assert prepared.relay_stdio == (read_end, out.fileno(), write_end)
            assert (prepared.rows, prepared.columns) == (0, 0)
            assert len(set(prepared.relay_fds)) == 5
        finally:
            prepared.close()
        # the caller's own descriptors are never closed
        os.fstat(read_end)
        os.fstat(write_end)
        os.fstat(out.fileno())
    os.close(read_end)
    os.close(write_end)


def test_terminal_streams_become_console_sockets(terminal: tuple[int, int]) -> None:
    _, slave = terminal
    read_end, write_end = os.pipe()
    prepared = prepare_stdio(slave, write_end, slave)
    try:
        assert prepared.console == (True, False, True)
        assert (prepared.rows, prepared.columns) == (33, 99)
        stdin_fd = prepared.relay_stdio[0]
        assert stdin_fd != slave
        with socket.socket(fileno=os.dup(stdin_fd)) as sock:
            assert sock.family == socket.AF_UNIX
        assert prepared.relay_stdio[1] == write_end
    finally:
        prepared.close()
    os.close(read_end)
    os.close(write_end)


def test_pipe_devnull_stdout_and_cleanup(tmp_path: Path) -> None:
    before = open_fds()
    prepared = prepare_stdio(DEVNULL, PIPE, STDOUT)
    assert prepared.console == (False, False, False)
    assert os.readlink(f"/proc/self/fd/{prepared.relay_stdio[0]}") == "/dev/null"
    assert prepared.relay_stdio[1] == prepared.relay_stdio[2]
    assert os.readlink(f"/proc/self/fd/{prepared.relay_stdio[1]}").startswith("pipe:")
    prepared.close_relay_ends()
    prepared.close_relay_ends()
    prepared.close()
    assert open_fds() == before


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"stdin": STDOUT}, ValueError),
        ({"stdout": STDOUT}, ValueError),
        ({"stdout": -7}, ValueError),
        ({"stdout": 987654}, ValueError),
        ({"stdin": True}, TypeError),
        ({"stdout": object()}, ValueError),
    ],
)
def test_bad_stdio_arguments_leave_nothing_open(kwargs: dict[str, object], error: type[Exception]) -> None:
    before = open_fds()
    with pytest.raises(error):
        prepare_stdio(**kwargs)  # type: ignore[arg-type]
    assert open_fds() == before


def test_start_closes_everything_when_launch_fails() -> None:
    before = open_fds()

    def launch(prepared: PreparedStdio) -> int:
        raise RuntimeError("no relay")

    with pytest.raises(RuntimeError, match="no relay"):
        LxProcess.start(launch, stdin=PIPE, stdout=PIPE, stderr=DEVNULL)
    assert open_fds() == before


def test_exit_channel_closing_without_status_is_exit_1() -> None:
    prepared = prepare_stdio(DEVNULL, DEVNULL, DEVNULL)
    relay_exit = os.dup(prepared.relay_exit_fd)
    process = LxProcess(1, prepared)
    os.close(relay_exit)  # the "relay" goes away without an ExitStatus
    assert process.wait(timeout=5) == 1
    assert process.poll() == 1
    process.close()
