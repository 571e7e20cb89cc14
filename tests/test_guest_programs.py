"""`pywsl.guest.programs`: a tool run to its end from the VM's processes, as `subprocess.run`
would run it (status, captured output, descriptors passed, a bounded wait)."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from pywsl.guest import programs

SH = "/bin/sh"
ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}


def test_status_and_captured_output() -> None:
    done = programs.run([SH, "-c", "echo out; echo err >&2; exit 3"], ENV)
    assert (done.returncode, done.output, done.errors) == (3, b"out\n", b"err\n")


def test_stderr_with_stdout_or_nowhere() -> None:
    merged = programs.run([SH, "-c", "echo out; echo err >&2"], ENV, stderr=programs.STDOUT)
    assert (merged.output, merged.errors) == (b"out\nerr\n", b"")
    quiet = programs.run([SH, "-c", "echo out; echo err >&2"], ENV, stdout=programs.DEVNULL)
    assert (quiet.output, quiet.errors) == (b"", b"err\n")
    nothing = programs.run([SH, "-c", "cat; echo err >&2"], ENV, stderr=programs.DEVNULL)
    assert (nothing.returncode, nothing.output, nothing.errors) == (0, b"", b"")  # stdin: /dev/null


def test_output_into_a_descriptor_and_passed_descriptors(tmp_path: Path) -> None:
    log = os.open(tmp_path / "log", os.O_WRONLY | os.O_CREAT, 0o600)
    data = os.open(tmp_path / "data", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.write(data, b"through the descriptor\n")
        assert not os.get_inheritable(data)
        done = programs.run(
            [SH, "-c", f'cat /proc/self/fd/{data}; echo "$1" >&2', "sh", "arg"],
            ENV,
            stdout=log,
            stderr=programs.STDOUT,
            pass_fds=(data,),
        )
        assert done.returncode == 0 and done.output == b""
        assert not os.get_inheritable(data)  # as it was
    finally:
        os.close(log)
        os.close(data)
    assert (tmp_path / "log").read_bytes() == b"through the descriptor\narg\n"
    other = programs.run([SH, "-c", f"test -e /proc/self/fd/{data}; echo $?"], ENV)
    assert other.output == b"1\n"  # a descriptor not named is not inherited


def test_a_signal_and_an_environment() -> None:
    killed = programs.run([SH, "-c", "kill -TERM $$"], ENV)
    assert killed.returncode == -signal.SIGTERM
    assert programs.run([SH, "-c", "echo $LANG"], {"LANG": "x"}).output == b"x\n"


def test_a_program_that_cannot_start_is_an_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        programs.run([str(tmp_path / "missing")], ENV)
    (tmp_path / "plain").write_text("not a program")
    with pytest.raises(PermissionError):
        programs.run([str(tmp_path / "plain")], ENV)


@pytest.mark.parametrize("output", [programs.CAPTURE, programs.DEVNULL])
def test_a_program_past_its_time_is_killed(output: int) -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        programs.run([SH, "-c", "echo $$; exec sleep 30"], ENV, stdout=output, timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 10


def test_a_child_that_keeps_the_pipe_is_waited_for_a_bounded_time(tmp_path: Path) -> None:
    started = time.monotonic()
    try:
        with pytest.raises(TimeoutError):
            programs.run([SH, "-c", f"sleep 30 & echo $! > {tmp_path}/pid; exit 0"], ENV, timeout=0.3)
        assert time.monotonic() - started < 10
    finally:
        os.kill(int((tmp_path / "pid").read_text()), signal.SIGKILL)  # (reaped by init: not ours)


def test_the_guest_start_does_not_load_subprocess() -> None:
    import subprocess

    probe = "import sys\nfrom pywsl.guest import mini_init\nprint('subprocess' in sys.modules)\n"
    env = {"PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    done = subprocess.run([sys.executable, "-S", "-c", probe], env=env, capture_output=True, check=True)
    assert done.stdout == b"False\n"
