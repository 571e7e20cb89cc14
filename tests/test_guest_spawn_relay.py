"""The relay's two ways to start a process, and the session leader's relay forked ahead.

A launch without a terminal is spawned by the relay itself (``relay_child.spawn_child``: the user's
ids with root kept as the saved ids, then ``posix_spawn``); a launch with a terminal is forked
(``relay_child.run_child``). Each test that can runs through both, with the same expectations: a
launch on pipes takes the spawn path, the same launch with its stdin a console the fork path. The
spare relay (``session_leader.SpareRelay``) is watched from ``/proc``.

A real session leader runs in a child process (``test_launch_support``); no VM is needed.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal, Unpack

import pytest
from conftest import pid_alive, wait_until
from test_launch_pty import raw_launch
from test_launch_support import (
    EXTRA_GID,
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
)

from pywsl.api.process.lx_process import DEVNULL, PIPE
from pywsl.guest.relay import PASSED_PIPE_ROOM
from pywsl.guest.session_leader import SPARE_DELAY, SPARE_RELAY_TITLE
from pywsl.wire.constants import LX_INIT_USER_NOT_FOUND

__all__ = ["etc_root", "leader"]  # the module-scoped fixtures the tests here use

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the relay changes ids")

Route = Literal["spawn", "fork"]
PATHS: tuple[Route, ...] = ("spawn", "fork")

# The identity of a process in /proc/<pid>/status.
IDENTITY = ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs")
# glibc's own signals (SIGCANCEL, SIGSETXID: 32 and 33), outside `signal.valid_signals()`: glibc's
# posix_spawn leaves them ignored in the program it starts, where the fork path leaves them at default.
GLIBC_INTERNAL = (1 << 31) | (1 << 32)
STATUS_WORDS = f"{TEST_UID}\t{TEST_UID}\t{TEST_UID}\t{TEST_UID}"


def fork_path_run(
    leader: Leader, command_line: Sequence[str], **request: Unpack[ProcessOptions]
) -> tuple[int, bytes, bytes]:
    """The launch with its stdin a console (the relay forks its child); stdout and stderr on pipes."""
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    try:
        session = raw_launch(
            leader,
            list(command_line),
            console=(True, False, False),
            passed={1: out_write, 2: err_write},
            **request,
        )
    finally:
        os.close(out_write)
        os.close(err_write)
    code = session.finish()
    with os.fdopen(out_read, "rb") as out, os.fdopen(err_read, "rb") as err:
        return code, out.read(), err.read()


def run(
    leader: Leader, path: Route, command_line: Sequence[str], **request: Unpack[ProcessOptions]
) -> tuple[int, bytes, bytes]:
    """``(exit status, stdout, stderr)`` of a launch through the relay's spawn or fork path."""
    if path == "spawn":
        return leader.run(command_line, **request)
    return fork_path_run(leader, command_line, **request)


def status_fields(text: bytes) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in text.decode().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def own_status(leader: Leader, path: Route, username: str) -> dict[str, str]:
    """The launched program's own /proc/self/status (cat changes neither ids nor signals)."""
    code, out, err = run(leader, path, ["cat", "/proc/self/status"], filename="cat", username=username)
    assert (code, err) == (0, b"")
    return status_fields(out)


def process_status(pid: int) -> dict[str, str]:
    return status_fields(Path(f"/proc/{pid}/status").read_bytes())


def cmdline(pid: int) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None


def live_children(parent: int) -> set[int]:
    """The pids of ``parent``'s live (not zombie) children."""
    found: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == parent and fields[0] != "Z":
            found.add(int(entry))
    return found


def spares(leader: Leader) -> set[int]:
    """The leader's children that are not relays yet: they carry the spare relay's title."""
    return {pid for pid in live_children(leader.process.pid) if is_spare(pid)}


def is_spare(pid: int) -> bool:
    return (cmdline(pid) or b"").split(b"\0")[0] == SPARE_RELAY_TITLE.encode()


def wait_for_spare(leader: Leader, timeout: float = 10) -> int:
    """The leader's one spare relay, once the leader has been idle long enough to fork it."""
    found: set[int] = set()

    def one() -> bool:
        nonlocal found
        found = spares(leader)
        return len(found) == 1

    assert wait_until(one, timeout), f"spare relays: {found}"
    return found.pop()


def _named_child(pid: int) -> int | None:
    """The child that relay ``pid`` is named after, once that child runs; else None."""
    title = (cmdline(pid) or b"").split(b"\0")[0].decode(errors="replace")
    if not title.startswith("Relay(") or not title.endswith(")"):
        return None
    child = int(title[len("Relay(") : -1])
    try:
        parent = Path(f"/proc/{child}/stat").read_text().rpartition(")")[2].split()[1]
    except OSError:
        return None
    return child if parent == str(pid) else None


def wait_for_relay_title(pid: int, timeout: float = 10) -> int:
    """Wait until ``pid`` is named ``Relay(<child>)`` after a child of its own that runs; the child's
    pid. (The relay takes the name before its spawn, with the pid the kernel gives next, and
    corrects it after the spawn if another process took that pid.)"""
    assert wait_until(lambda: _named_child(pid) is not None, timeout)
    child = _named_child(pid)
    assert child is not None
    return child


@pytest.fixture(scope="module")
def places() -> Iterator[Path]:
    """``locked`` (root's, 0700) and ``open`` (0755), each with a ``hello-tool`` that says which it
    is; ``open`` also has a script without a ``#!`` line. Not under pytest's (0700) folder."""
    with tempfile.TemporaryDirectory(prefix="pywsl-spawn-") as directory:
        root = Path(directory)
        os.chmod(root, 0o755)
        for name, mode in (("locked", 0o700), ("open", 0o755)):
            folder = root / name
            folder.mkdir()
            os.chmod(folder, mode)
            tool = folder / "hello-tool"
            tool.write_text(f"#!/bin/sh\necho {name}\n")
            tool.chmod(0o755)
        script = root / "open" / "plain-script"
        script.write_text('printf \'%s|\' "$0" "$@"\n')
        script.chmod(0o755)
        yield root


# -- identity ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
def test_a_user_gets_the_users_ids_groups_and_no_capabilities(leader: Leader, path: Route) -> None:
    status = own_status(leader, path, username="tester")
    assert status["Uid"] == STATUS_WORDS  # real, effective, saved, filesystem: no root left
    assert status["Gid"] == STATUS_WORDS.replace(str(TEST_UID), str(TEST_GID))
    assert status["Groups"].split() == [str(TEST_GID), str(EXTRA_GID)]  # getgrouplist: primary + listed
    assert int(status["CapEff"], 16) == int(status["CapPrm"], 16) == 0
    assert int(status["CapInh"], 16) == int(status["CapAmb"], 16) == 0


@pytest.mark.parametrize("path", PATHS)
def test_root_keeps_the_leaders_capabilities(leader: Leader, path: Route) -> None:
    status = own_status(leader, path, username="root")
    mine = process_status(leader.process.pid)
    assert status["Uid"] == status["Gid"] == "0\t0\t0\t0"
    assert status["Groups"].split() == ["0"]
    assert (status["CapEff"], status["CapPrm"]) == (mine["CapEff"], mine["CapPrm"])


@pytest.mark.parametrize("username", ["tester", "root"])
def test_spawned_and_forked_identities_are_the_same(leader: Leader, username: str) -> None:
    spawned = own_status(leader, "spawn", username=username)
    forked = own_status(leader, "fork", username=username)
    assert {key: spawned[key] for key in IDENTITY} == {key: forked[key] for key in IDENTITY}


def test_the_relay_takes_root_back_after_a_user_launch(leader: Leader) -> None:
    process = leader.launch(
        ["-c", "read line"], username="tester", stdin=PIPE, stdout=DEVNULL, stderr=DEVNULL
    )
    try:
        child = wait_for_relay_title(process.pid)  # the process has started
        # The relay takes root back once its spawn returns (the name comes before the spawn).
        assert wait_until(lambda: process_status(process.pid)["Uid"] == "0\t0\t0\t0", 10)
        relay, mine = process_status(process.pid), process_status(leader.process.pid)
        assert relay["Uid"] == relay["Gid"] == "0\t0\t0\t0"
        assert {key: relay[key] for key in IDENTITY} == {key: mine[key] for key in IDENTITY}
        assert process_status(child)["Uid"] == STATUS_WORDS
    finally:
        process.communicate(b"\n", timeout=10)
    assert process.returncode == 0
    # the same session goes on as root
    code, out, _ = leader.run(["-c", "id -u; id -G"], username="root")
    assert (code, out) == (0, b"0\n0\n")


# -- working directory ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
def test_a_directory_only_root_may_enter_is_refused_to_a_user(
    leader: Leader, places: Path, path: Route
) -> None:
    locked = places / "locked"
    code, out, err = run(leader, path, ["-c", "pwd"], username="tester", cwd=str(locked))
    assert (code, out) == (0, b"/\n")
    assert err == f"pywsl: cannot change to directory '{locked}': Permission denied; starting in /\n".encode()
    assert run(leader, path, ["-c", "pwd"], username="root", cwd=str(locked)) == (
        0,
        f"{locked}\n".encode(),
        b"",
    )


@pytest.mark.parametrize("path", PATHS)
def test_accessible_directories_and_home(leader: Leader, etc_root: Path, places: Path, path: Route) -> None:
    here = places / "open"
    assert run(leader, path, ["-c", "pwd"], username="tester", cwd=str(here)) == (
        0,
        f"{here}\n".encode(),
        b"",
    )
    home = etc_root / "home" / "tester"
    assert run(leader, path, ["-c", "pwd"], username="tester", cwd="~") == (0, f"{home}\n".encode(), b"")


# -- descriptors, session, signals ------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("username", ["tester", "root"])
def test_only_the_three_std_streams_are_open(leader: Leader, path: Route, username: str) -> None:
    # the shell's own descriptors, listed by ls from outside it (`; true`: bash would exec ls itself)
    command = ["-c", "ls -1 /proc/$$/fd; true"]
    assert run(leader, path, command, username=username) == (0, b"0\n1\n2\n", b"")


def test_the_callers_pipes_get_room_and_nothing_else_changes(leader: Leader) -> None:
    # A pipeline through a launch stalls on the default 64 KiB pipes (the process runs in the VM's
    # scheduling group, not the caller's): the pipes the caller passes get room, what is not a
    # pipe or holds more already is left as it was.
    in_read, in_write = os.pipe()
    out_read, out_write = os.pipe()
    big_read, big_write = os.pipe()
    fcntl.fcntl(big_write, fcntl.F_SETPIPE_SZ, 4 * PASSED_PIPE_ROOM)
    with tempfile.TemporaryFile() as errors:
        try:
            assert fcntl.fcntl(in_write, fcntl.F_GETPIPE_SZ) < PASSED_PIPE_ROOM
            os.write(in_write, b"through the pipes\n")
            os.close(in_write)
            command = ["-c", "cat; echo bye >&2"]
            process = leader.launch(command, stdin=in_read, stdout=out_write, stderr=errors)
            assert process.wait(timeout=30) == 0
            assert os.read(out_read, 100) == b"through the pipes\n"
            assert fcntl.fcntl(in_read, fcntl.F_GETPIPE_SZ) == PASSED_PIPE_ROOM
            assert fcntl.fcntl(out_read, fcntl.F_GETPIPE_SZ) == PASSED_PIPE_ROOM
            process = leader.launch(["-c", "echo big"], stdin=subprocess.DEVNULL, stdout=big_write)
            assert process.wait(timeout=30) == 0
            assert os.read(big_read, 100) == b"big\n"
            assert fcntl.fcntl(big_read, fcntl.F_GETPIPE_SZ) == 4 * PASSED_PIPE_ROOM
            errors.seek(0)
            assert errors.read() == b"bye\n"
        finally:
            for fd in (in_read, out_read, out_write, big_read, big_write):
                os.close(fd)


def test_the_program_leads_a_new_session_without_a_terminal(leader: Leader) -> None:
    process = leader.launch(
        ["-c", "read -r s < /proc/$$/stat; echo $s"],
        username="tester",
        stdin=DEVNULL,
        stdout=PIPE,
        stderr=PIPE,
    )
    out, err = process.communicate(timeout=10)
    assert (process.returncode, err) == (0, b"")
    fields = (out or b"").decode().split()
    pid, ppid, group, session, terminal = (int(fields[index]) for index in (0, 3, 4, 5, 6))
    assert ppid == process.pid  # a child of the relay
    assert group == session == pid
    assert terminal == 0


def test_signals_at_their_defaults_and_none_blocked(etc_root: Path) -> None:
    """A leader started with SIGUSR1 and SIGHUP ignored and SIGUSR2 blocked: none of it reaches a process."""
    wrapper = (
        "import os, signal, sys\n"
        "signal.signal(signal.SIGUSR1, signal.SIG_IGN)\n"
        "signal.signal(signal.SIGHUP, signal.SIG_IGN)\n"
        "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})\n"
        "os.execv(sys.argv[1], sys.argv[1:])\n"
    )
    with leader_for(etc_root, wrapper=[sys.executable, "-c", wrapper]) as odd:
        wait_for_spare(odd)  # the wrapper has executed the leader, and the leader has forked
        mine = process_status(odd.process.pid)
        usr1, hup, usr2 = (1 << (number - 1) for number in (signal.SIGUSR1, signal.SIGHUP, signal.SIGUSR2))
        assert int(mine["SigIgn"], 16) & (usr1 | hup) == usr1 | hup
        assert int(mine["SigBlk"], 16) & usr2 == usr2
        for path in PATHS:
            for username in ("tester", "root"):
                status = own_status(odd, path, username=username)
                assert int(status["SigBlk"], 16) == 0, (path, username)
                # Every signal at its default but glibc's own two: its posix_spawn ignores them in the
                # child before the exec, and setsigdef cannot name them (see GLIBC_INTERNAL).
                assert int(status["SigIgn"], 16) & ~GLIBC_INTERNAL == 0, (path, username, status["SigIgn"])


# -- failures ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
def test_an_unknown_user_is_67_and_nothing_runs(leader: Leader, places: Path, path: Route) -> None:
    marker = places / f"ran-{path}"
    assert run(leader, path, ["-c", f"touch {marker}"], username="ghost") == (
        LX_INIT_USER_NOT_FOUND,
        b"",
        b"",
    )
    assert not marker.exists()


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("username", ["tester", "root"])
def test_a_missing_program_is_1_with_the_execvpe_line(leader: Leader, path: Route, username: str) -> None:
    code, out, err = run(
        leader, path, ["no-such-program", "x"], filename="no-such-program", username=username
    )
    assert (code, out) == (1, b"")
    assert b"pywsl: execvpe(no-such-program) failed: No such file or directory" in err.splitlines()
    code, _, err = run(leader, path, ["/no/such/program"], filename="/no/such/program", username=username)
    assert code == 1 and b"pywsl: execvpe(/no/such/program) failed: No such file or directory" in err


@pytest.mark.parametrize("path", PATHS)
def test_a_script_without_a_shebang_runs_with_bin_sh(leader: Leader, places: Path, path: Route) -> None:
    here = places / "open"
    environment = [f"PATH=/nonexistent:{here}:/usr/bin:/bin"]
    code, out, err = run(
        leader,
        path,
        ["plain-script", "a", "b c"],
        filename="plain-script",
        username="tester",
        environment=environment,
    )
    assert (code, out, err) == (0, f"{here / 'plain-script'}|a|b c|".encode(), b"")


@pytest.mark.parametrize("path", PATHS)
def test_a_path_folder_the_user_cannot_search_is_skipped(leader: Leader, places: Path, path: Route) -> None:
    locked, here = places / "locked", places / "open"
    both = [f"PATH={locked}:{here}:/usr/bin:/bin"]
    assert run(leader, path, ["hello-tool"], filename="hello-tool", username="tester", environment=both) == (
        0,
        b"open\n",
        b"",
    )
    # the search is the user's: root finds the first one
    assert run(leader, path, ["hello-tool"], filename="hello-tool", username="root", environment=both) == (
        0,
        b"locked\n",
        b"",
    )
    # found nowhere else: execvpe's EACCES
    only_locked = [f"PATH={locked}:/nonexistent"]
    code, out, err = run(
        leader, path, ["hello-tool"], filename="hello-tool", username="tester", environment=only_locked
    )
    assert (code, out) == (1, b"")
    assert b"pywsl: execvpe(hello-tool) failed: Permission denied" in err.splitlines()


# -- the spare relay --------------------------------------------------------------------------------


def test_an_idle_leader_forks_a_spare_that_serves_the_next_launch(etc_root: Path) -> None:
    with leader_for(etc_root) as fresh:
        first = wait_for_spare(fresh)
        process = fresh.launch(["-c", "read line; echo $line"], stdin=PIPE, stdout=PIPE, stderr=PIPE)
        try:
            assert process.pid == first  # the reply's Result: the spare, not a new fork
            child = wait_for_relay_title(first)
            assert Path(f"/proc/{child}/stat").read_text().rpartition(")")[2].split()[1] == str(first)
            second = wait_for_spare(fresh)  # forked again once the leader was idle
            assert second != first
        finally:
            out, err = process.communicate(b"hello\n", timeout=10)
        assert (process.returncode, out, err) == (0, b"hello\n", b"")
        assert fresh.run(["-c", "echo $$"])[0] == 0
        assert wait_for_spare(fresh) != second  # each launch takes the one waiting


def test_a_refused_request_leaves_the_spare_waiting(etc_root: Path) -> None:
    with leader_for(etc_root) as fresh:
        spare = wait_for_spare(fresh)
        read_end, write_end = os.pipe()
        try:
            assert fresh.create_process([read_end, write_end], command_line=["-c", "true"]) == UINT_MAX
        finally:
            os.close(read_end)
            os.close(write_end)
        with fresh.lock:
            reply = fresh.channel.request(WINDOW_SIZE_CHANGED, RESULT, timeout=10, Rows=1, Columns=1)
        assert reply.Result == UINT_MAX
        assert not wait_until(lambda: spares(fresh) != {spare}, SPARE_DELAY * 20)
        assert is_spare(spare)  # still waiting, not a relay
        process = fresh.launch(["-c", "echo served"], stdin=DEVNULL, stdout=PIPE, stderr=PIPE)
        assert process.pid == spare
        assert process.communicate(timeout=10) == (b"served\n", b"")


def test_a_spare_that_died_is_replaced_by_a_fork(etc_root: Path) -> None:
    with leader_for(etc_root) as fresh:
        spare = wait_for_spare(fresh)
        os.kill(spare, signal.SIGKILL)
        assert wait_until(lambda: not pid_alive(spare), 10)
        process = fresh.launch(["-c", "echo forked"], stdin=DEVNULL, stdout=PIPE, stderr=PIPE)
        assert process.pid not in (spare, UINT_MAX)
        assert process.communicate(timeout=10) == (b"forked\n", b"")
        assert wait_for_spare(fresh) != spare


@pytest.mark.parametrize("end", ["channel closed", "leader killed"])
def test_the_spare_ends_with_its_leader(etc_root: Path, end: str) -> None:
    with leader_for(etc_root) as fresh:
        spare = wait_for_spare(fresh)
        if end == "channel closed":
            fresh.channel.close()
            assert fresh.process.wait(timeout=10) == 0
        else:
            fresh.process.kill()
            assert fresh.process.wait(timeout=10) == -signal.SIGKILL
        assert wait_until(lambda: not pid_alive(spare), 10), "the spare relay outlived its leader"
