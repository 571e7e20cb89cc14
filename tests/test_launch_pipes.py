"""Session leader + relay with non-console streams: the process gets the caller's own fds.

A real session leader runs in a child process and serves real CreateProcessUtilityVm messages
with real descriptors; no VM is needed (the relay logic is the same on the host).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Unpack

import pytest
from conftest import pid_alive, wait_until
from test_launch_support import (
    DISTRIBUTION,
    EXTRA_GID,
    REPOSITORY,
    RESULT,
    TEST_GID,
    TEST_UID,
    UINT_MAX,
    WINDOW_SIZE_CHANGED,
    Leader,
    ProcessOptions,
    etc_root,
    leader,
    leader_for,
    python_environment,
)

from pywsl.api.process.lx_process import DEVNULL, PIPE
from pywsl.guest.session_leader import SPARE_DELAY

__all__ = ["etc_root", "leader"]  # the module-scoped fixtures every test here uses


def shell(leader: Leader, command: str, **request: Unpack[ProcessOptions]) -> tuple[int, bytes, bytes]:
    return leader.run(["-c", command], **request)


def wait_gone(pid: int, timeout: float) -> bool:
    return wait_until(lambda: not pid_alive(pid), timeout)


def test_64_mib_round_trip_through_cat(leader: Leader) -> None:
    data = os.urandom(1 << 20) * 64
    process = leader.launch(["cat"], filename="cat", stdin=PIPE, stdout=PIPE, stderr=PIPE)
    started = time.monotonic()
    out, err = process.communicate(data, timeout=60)
    elapsed = time.monotonic() - started
    assert process.returncode == 0 and err == b""
    assert len(out or b"") == len(data)
    assert hashlib.sha256(out or b"").digest() == hashlib.sha256(data).digest()
    print(f"pipe round trip: {len(data) / elapsed / 1e6:.0f} MB/s")


def test_the_process_gets_the_callers_pipe_itself(leader: Leader) -> None:
    read_end, write_end = os.pipe()
    process = leader.launch(
        ["readlink", "/proc/self/fd/0", "/proc/self/fd/1", "/proc/self/fd/2"],
        filename="readlink",
        stdin=read_end,
        stdout=PIPE,
        stderr=write_end,
    )
    assert process.stdout is not None
    stdout_inode = os.fstat(process.stdout.fileno()).st_ino
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    assert (out or b"").decode().split() == [
        f"pipe:[{os.fstat(read_end).st_ino}]",
        f"pipe:[{stdout_inode}]",
        f"pipe:[{os.fstat(write_end).st_ino}]",
    ]
    os.close(read_end)
    os.close(write_end)


def test_stdin_from_a_file_and_stdout_to_a_file(leader: Leader, tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_bytes(b"line one\nline two\n")
    target = tmp_path / "out.txt"
    with open(source, "rb") as stdin, open(target, "wb") as stdout:
        process = leader.launch(
            ["-c", "readlink /proc/self/fd/0 /proc/self/fd/1; cat"],
            stdin=stdin,
            stdout=stdout,
            stderr=DEVNULL,
        )
        assert process.wait(timeout=30) == 0
    assert target.read_text().splitlines() == [str(source), str(target), "line one", "line two"]


@pytest.mark.parametrize("code", [0, 1, 42, 255])
def test_exit_codes(leader: Leader, code: int) -> None:
    assert shell(leader, f"exit {code}")[0] == code


@pytest.mark.parametrize("number", [signal.SIGKILL, signal.SIGTERM, signal.SIGSEGV])
def test_signal_deaths_are_128_plus_n(leader: Leader, number: int) -> None:
    assert shell(leader, f"kill -{int(number)} $$")[0] == 128 + number


def test_exec_mode_passes_argv_verbatim(leader: Leader) -> None:
    argv = ["printf", "[%s]\\n", "a", "", "b c", "$HOME", "it's", ";", "*", '"q"']
    code, out, _ = leader.run(argv, filename="printf")
    assert code == 0
    assert out.decode().splitlines() == ["[a]", "[]", "[b c]", "[$HOME]", "[it's]", "[;]", "[*]", '["q"]']


def test_shell_mode_is_one_string_for_the_shell(leader: Leader) -> None:
    command = "FOO='a b'; echo \"$FOO\" '$FOO'; set -- '' x ''; echo $#; echo one; echo two"
    code, out, _ = shell(leader, command)
    assert code == 0
    assert out.decode().splitlines() == ["a b $FOO", "3", "one", "two"]


def test_exec_searches_the_childs_path(leader: Leader, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "hello-tool"
    tool.write_text('#!/bin/sh\necho tool "$@"\n')
    tool.chmod(0o755)
    script = bin_dir / "plain-script"
    script.write_text("echo no shebang line\n")  # ENOEXEC: run by /bin/sh, as execvp does
    script.chmod(0o755)
    environment = [f"PATH=/nonexistent:{bin_dir}:/usr/bin:/bin"]
    assert leader.run(["hello-tool", "x"], filename="hello-tool", environment=environment)[:2] == (
        0,
        b"tool x\n",
    )
    assert leader.run(["plain-script"], filename="plain-script", environment=environment)[:2] == (
        0,
        b"no shebang line\n",
    )


def test_exec_failures_exit_1_with_the_execvpe_line(leader: Leader, tmp_path: Path) -> None:
    code, out, err = leader.run(["no-such-program"], filename="no-such-program")
    assert (code, out) == (1, b"")
    assert b"execvpe(no-such-program) failed: No such file or directory\n" in err
    data = tmp_path / "data.txt"
    data.write_text("x")
    data.chmod(0o644)
    code, _, err = leader.run([str(data)], filename=str(data))
    assert code == 1 and f"execvpe({data}) failed: Permission denied".encode() in err
    assert leader.run(["/"], filename="/")[0] == 1


def test_run_as_another_user(leader: Leader, etc_root: Path) -> None:
    code, out, err = shell(
        leader, "id -u; id -g; id -G; pwd; echo $HOME $USER $LOGNAME $SHELL", username="tester"
    )
    assert code == 0, err
    lines = out.decode().splitlines()
    assert lines[:3] == [str(TEST_UID), str(TEST_GID), f"{TEST_GID} {EXTRA_GID}"]
    home = etc_root / "home" / "tester"
    assert lines[3:] == [str(home), f"{home} tester tester /bin/sh"]


def test_unknown_user_is_exit_67(leader: Leader) -> None:
    assert shell(leader, "echo should not run", username="ghost") == (67, b"", b"")


def test_default_uid_and_missing_home(leader: Leader) -> None:
    # nobody's shell is nologin: exec mode
    code, out, err = leader.run(["sh", "-c", "id -u; id -G; pwd"], filename="sh", default_uid=65534)
    assert code == 0
    assert out.decode().splitlines() == ["65534", f"65534 {EXTRA_GID}", "/"]
    assert b"cannot change to directory" in err and b"starting in /" in err


def test_wsl_conf_default_user_chain(etc_root: Path) -> None:
    with leader_for(etc_root, default_user="tester") as with_default:
        assert shell(with_default, "id -u", default_uid=0)[1] == f"{TEST_UID}\n".encode()
        assert shell(with_default, "id -u", username="root")[1] == b"0\n"
    with leader_for(etc_root, default_user="ghost", default_uid=65534) as unknown_default:
        # an unknown wsl.conf user falls back to DefaultUid; an unknown DefaultUid to the leader's uid
        assert shell(unknown_default, "id -u", default_uid=12345)[1] == f"{TEST_UID}\n".encode()
        assert unknown_default.run(["id", "-u"], filename="id", default_uid=4242)[1] == b"65534\n"


def test_environment(leader: Leader) -> None:
    os.environ["PYWSL_TEST_LEAK"] = "1"
    try:
        code, out, _ = shell(leader, "env", username="tester")
    finally:
        del os.environ["PYWSL_TEST_LEAK"]
    assert code == 0
    environment = dict(line.split("=", 1) for line in out.decode().splitlines())
    environment.pop("PWD", None)
    environment.pop("SHLVL", None)
    environment.pop("_", None)
    assert environment.pop("HOME").endswith("/home/tester")
    assert environment == {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "TERM": "xterm-256color",
        "LANG": "C.UTF-8",
        "HOSTTYPE": "x86_64",
        "USER": "tester",
        "LOGNAME": "tester",
        "SHELL": "/bin/sh",
        "WSL_DISTRO_NAME": DISTRIBUTION,
        "NAME": os.uname().nodename,
    }


@pytest.mark.parametrize(
    ("cwd", "relative", "warning"),
    [
        ("", "home/tester", False),
        ("~", "home/tester", False),
        ("~/sub", "home/tester/sub", False),
        ("/", "/", False),
        ("/no/such/directory", "/", True),
        ("relative/path", "/", True),
    ],
)
def test_working_directory(leader: Leader, etc_root: Path, cwd: str, relative: str, warning: bool) -> None:
    code, out, err = shell(leader, "pwd", username="tester", cwd=cwd)
    assert code == 0
    expected = relative if relative == "/" else str(etc_root / relative)
    assert out.decode().strip() == expected
    assert (b"starting in /" in err) == warning


def test_no_descriptor_leaks_into_the_process(leader: Leader) -> None:
    code, out, _ = leader.run(["ls", "/proc/self/fd"], filename="ls")
    assert code == 0
    assert sorted(int(fd) for fd in out.split()) == [0, 1, 2, 3]  # 3 is ls's own directory


def test_signal_forwarding_reaches_the_process_group(leader: Leader) -> None:
    script = "trap 'echo trapped; exit 3' TERM; sleep 30 & echo ready; wait"
    process = leader.launch(["-c", script], stdin=DEVNULL, stdout=PIPE, stderr=PIPE)
    assert process.stdout is not None
    assert process.stdout.readline() == b"ready\n"
    process.terminate()
    out, _ = process.communicate(timeout=10)
    assert process.returncode == 3 and out == b"trapped\n"
    # the background sleep got it too: nothing keeps the relay alive
    assert wait_gone(process.pid, 5)


def test_send_signal_kills_a_foreground_program(leader: Leader) -> None:
    process = leader.launch(["sleep", "30"], filename="sleep", stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL)
    time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=10) == 128 + signal.SIGINT
    process.kill()  # after the exit: nothing happens


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_client_forwards_its_signals_in_pipe_mode(number: int) -> None:
    spec = {"command_line": ["-c", "echo ready; exec sleep 30"], "request": {"stdin": DEVNULL}}
    client = subprocess.Popen(
        [sys.executable, str(REPOSITORY / "tests" / "test_launch_support.py"), "client", json.dumps(spec)],
        stdout=subprocess.PIPE,
        env=python_environment(),
    )
    try:
        assert client.stdout is not None
        assert client.stdout.readline() == b"ready\n"
        client.send_signal(number)
        assert client.wait(timeout=10) == 128 + number
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
        if client.stdout is not None:
            client.stdout.close()


def test_background_processes_keep_the_relay_alive(leader: Leader, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    command = f"(sleep 1; touch {marker}) >/dev/null 2>&1 & echo started"
    process = leader.launch(["-c", command], stdin=DEVNULL, stdout=PIPE, stderr=DEVNULL)
    out, _ = process.communicate(timeout=10)
    assert (process.returncode, out) == (0, b"started\n")
    assert pid_alive(process.pid) and not marker.exists()
    assert wait_gone(process.pid, 10)
    assert marker.exists()


def test_32_concurrent_launches(leader: Leader, tmp_path: Path) -> None:
    """32 launches run at once: each waits (bounded) until all 32 have started, which a leader that
    served them one after another could never reach."""
    gate = tmp_path / "gate"
    gate.mkdir()

    def one(index: int) -> tuple[int, bytes]:
        script = (
            f": > {gate}/started.{index}; n=0; "
            f'while set -- {gate}/started.*; [ "$#" -lt 32 ] && [ "$n" -lt 1200 ]; '
            "do sleep 0.05; n=$((n+1)); done; "
            f'echo "process {index} saw $#"; exit {index}'
        )
        code, out, _ = shell(leader, script)
        return code, out

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(one, range(32)))
    assert results == [(index, f"process {index} saw 32\n".encode()) for index in range(32)]


def leader_fds(leader: Leader) -> set[str]:
    """The leader's descriptors once it is idle: then it holds the socket of its spare relay, forked
    after `SPARE_DELAY` without a request (`session_leader.SpareRelay`)."""
    time.sleep(SPARE_DELAY * 10)
    return set(os.listdir(f"/proc/{leader.process.pid}/fd"))


def test_bad_requests_get_uint_max_and_the_leader_goes_on(leader: Leader) -> None:
    before = leader_fds(leader)
    read_end, write_end = os.pipe()
    assert leader.create_process([read_end, write_end], command_line=["-c", "true"]) == UINT_MAX
    with leader.lock:
        reply = leader.channel.request(WINDOW_SIZE_CHANGED, RESULT, timeout=10, Rows=1, Columns=1)
    assert reply.Result == UINT_MAX
    assert leader_fds(leader) == before  # the descriptors that came with them were closed
    assert shell(leader, "echo still serving")[1] == b"still serving\n"
    assert leader_fds(leader) == before
    os.close(read_end)
    os.close(write_end)


def test_relays_outlive_their_session_leader(etc_root: Path) -> None:
    with leader_for(etc_root) as short_lived:
        process = short_lived.launch(
            ["-c", "sleep 0.5; echo done"], stdin=DEVNULL, stdout=PIPE, stderr=DEVNULL
        )
        short_lived.channel.close()
        assert short_lived.process.wait(timeout=5) == 0
    out, _ = process.communicate(timeout=10)
    assert (process.returncode, out) == (0, b"done\n")


def test_a_broken_frame_ends_the_session(etc_root: Path) -> None:
    with leader_for(etc_root) as broken:
        raw = socket.socket(fileno=os.dup(broken.channel.fileno()))
        raw.sendall(b"\x08\x00\x00\x00\x05\x00\x00\x00" + bytes(8))  # MessageSize 5 < header
        raw.close()
        assert broken.process.wait(timeout=5) == 0


def test_leader_reaps_its_relays(leader: Leader) -> None:
    processes = [
        leader.launch(["true"], filename="true", stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL)
        for _ in range(4)
    ]
    for process in processes:
        assert process.wait(timeout=10) == 0
    for process in processes:
        assert wait_gone(process.pid, 5)  # not left as a zombie of the leader


def test_captured_output_while_stdin_stays_open(leader: Leader) -> None:
    code, out, _ = leader.run(["-c", "head -c 1000000 /dev/zero"], stdin=PIPE)
    assert code == 0 and out == bytes(1000000)


def test_poll_timeouts_and_context_manager(leader: Leader) -> None:
    process = leader.launch(["-c", "read line; echo got $line"], stdin=PIPE, stdout=PIPE, stderr=DEVNULL)
    assert process.poll() is None
    with pytest.raises(subprocess.TimeoutExpired):
        process.wait(timeout=0.2)
    out, err = process.communicate(b"hello\n", timeout=10)
    assert (process.returncode, out, err) == (0, b"got hello\n", None)
    assert process.poll() == 0 and process.wait() == 0
    with leader.launch(["-c", "exit 9"], stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL) as managed:
        pass
    assert managed.returncode == 9


def test_communicate_resumes_after_a_timeout(leader: Leader) -> None:
    process = leader.launch(
        ["-c", "echo early; sleep 0.5; echo late"], stdin=DEVNULL, stdout=PIPE, stderr=PIPE
    )
    with pytest.raises(subprocess.TimeoutExpired):
        process.communicate(timeout=0.1)
    assert process.communicate(timeout=10) == (b"early\nlate\n", b"")


def test_stderr_to_stdout(leader: Leader) -> None:
    process = leader.launch(
        ["-c", "echo out; echo err >&2"], stdin=DEVNULL, stdout=PIPE, stderr=subprocess.STDOUT
    )
    assert process.communicate(timeout=10) == (b"out\nerr\n", None)


def test_a_closed_standard_stream_becomes_dev_null(leader: Leader) -> None:
    saved = os.dup(0)
    os.close(0)
    try:
        process = leader.launch(
            ["readlink", "/proc/self/fd/0"], filename="readlink", stdout=PIPE, stderr=DEVNULL
        )
    finally:
        os.dup2(saved, 0)
        os.close(saved)
    assert process.communicate(timeout=10) == (b"/dev/null\n", None)
