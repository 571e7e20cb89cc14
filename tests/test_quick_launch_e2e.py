"""The warm launch's quick paths give exactly what the full path gives, on a real VM.

`pywsl [-d D] [-u U] [--cd DIR] -- cmd` first tries a quick launch (`pywsl.cli.context.quick_launch`):
root's in-process one (`pywsl.api.session.quick_launch`) and a user's single request to the
service (`pywsl.api.service.launch_client`). When it declines, the full path (`UserSession`, or
`ServiceClient` through the service) does the launch. Here the same command lines run both ways
against one busybox distribution, Box, and their exit statuses and output bytes are compared; the
full path is forced with `DISPLAY` in the environment, which root's quick path leaves to the full
path (GUI sockets need `.wslconfig`), or with a terminal, which both quick paths leave to it.

Which path a launch took is read from inside the launch: the CLI runs under a probe that records
what `context.quick_launch` did (ran, raised, declined) and the modules loaded at exit. The quick
root path never loads `pywsl.api.session.user_session`; the quick service path never loads
`pywsl.api.service.client`; the full paths load them.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import pty
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from busybox_images import BUSYBOX, busybox_archive
from coverage_report import passed_on
from multiuser_support import (
    ServiceProcess,
    User,
    Workspace,
    as_user,
    created_users,
    service,
    user_env,
    workspace,
)
from private_registry import private_environment
from run_folders import run_folder

import pywsl as pywsl_package
from pywsl.api.process.quick_process import FORWARDED_SIGNALS
from pywsl.api.session.gui_share import GUI_VARIABLES
from pywsl.coverage_startup import REQUEST_VARIABLES

__all__ = ["pytestmark", "service", "workspace"]  # module fixtures

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the in-process launch runs the VM as root"),
    pytest.mark.skipif(not BUSYBOX.is_file(), reason="needs a static /bin/busybox (busybox-static)"),
]

REPO = Path(pywsl_package.__file__).resolve().parent.parent
# An unknown key: init warns about it each time the distribution starts (and only then).
WSL_CONF = "[boot]\nnosuchkey=1\n"
START_WARNING = b"wsl: Unknown key 'boot.nosuchkey' in /etc/wsl.conf:2\n"
FORCE_FULL = {"DISPLAY": ":99"}
NOT_FOUND = (
    b"There is no distribution with the supplied name.\n"
    b"Error code: Wsl/Service/GetDistroId/WSL_E_DISTRO_NOT_FOUND\n"
)
USER_NOT_FOUND = b"User not found.\nError code: Wsl/WSL_E_USER_NOT_FOUND\n"
INVALID_CWD = (
    b"Invalid directory for --cd: 'relative'. Use a path inside the distribution, starting with / or ~.\n"
    b"Error code: Wsl/E_INVALIDARG\n"
)
TERMINATED = (
    b"The Windows Subsystem for Linux instance has terminated.\n"
    b"Error code: Wsl/Service/CreateLxProcess/HCS_E_TERMINATED\n"
)
LOCKED = (
    b"An install, uninstall, or conversion is in progress for this distribution.\n"
    b"Error code: Wsl/Service/CreateInstance/E_ILLEGAL_STATE_CHANGE\n"
)
HOST_MOUNT = "/mnt/host"

# What records the launch's path: what `context.quick_launch` did, and the modules loaded.
PROBE = """
import atexit, sys
from pywsl.cli import context
asked = []
quick_launch = context.quick_launch
def recorded(*args, **kwargs):
    try:
        result = quick_launch(*args, **kwargs)
    except BaseException:
        asked.append("raised")
        raise
    asked.append("declined" if result is None else "ran")
    return result
context.quick_launch = recorded
def record():
    with open({out!r}, "w") as file:
        file.write(" ".join(asked) + "\\n" + "\\n".join(sorted(sys.modules)))
atexit.register(record)
sys.argv = ["pywsl", *{args!r}]
from pywsl.cli.main import main
main()
"""

ROOT_QUICK = "pywsl.api.session.quick_launch"
ROOT_FULL = "pywsl.api.session.user_session"
SERVICE_QUICK = "pywsl.api.service.launch_client"
SERVICE_FULL = "pywsl.api.service.client"


@dataclass(frozen=True)
class Result:
    status: int
    stdout: bytes
    stderr: bytes
    asked: str  # what context.quick_launch did: "ran", "raised", "declined" or "" (not asked)
    modules: frozenset[str]

    @property
    def outcome(self) -> tuple[int, bytes, bytes]:
        return self.status, self.stdout, self.stderr


@dataclass
class Launcher:
    """Runs `pywsl` (under the probe) with one environment, as root or as `user`."""

    python: str
    env: dict[str, str]
    records: Path  # a folder the launching user can write the probe's records to
    cwd: Path
    user: User | None = None
    quick_module: str = ROOT_QUICK
    full_module: str = ROOT_FULL
    _count: itertools.count[int] = field(default_factory=itertools.count)

    def start(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stdin: int = subprocess.DEVNULL,
        stdout: int = subprocess.PIPE,
        stderr: int = subprocess.PIPE,
    ) -> tuple[subprocess.Popen[bytes], Path]:
        out = self.records / f"probe-{next(self._count)}.txt"
        uid = None if self.user is None else self.user.uid
        gid = None if self.user is None else self.user.gid
        process = subprocess.Popen(
            [self.python, "-c", PROBE.format(out=str(out), args=list(args))],
            env={**self.env, **(env or {})},
            cwd=cwd or self.cwd,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            user=uid,
            group=gid,
            extra_groups=[] if uid is not None else None,
        )
        return process, out

    def finish(self, process: subprocess.Popen[bytes], out: Path, timeout: float = 60) -> Result:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        asked, _, modules = out.read_text().partition("\n")
        out.unlink()
        return Result(process.returncode, stdout or b"", stderr or b"", asked, frozenset(modules.split()))

    def run(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stdin: int = subprocess.DEVNULL,
        stdout: int = subprocess.PIPE,
        stderr: int = subprocess.PIPE,
    ) -> Result:
        process, out = self.start(args, env=env, cwd=cwd, stdin=stdin, stdout=stdout, stderr=stderr)
        return self.finish(process, out)

    def quick(self, result: Result) -> Result:
        """`result` of a launch the quick path did (its session or client never loaded)."""
        assert result.asked in ("ran", "raised"), result
        assert self.quick_module in result.modules and self.full_module not in result.modules, result
        return result

    def full(self, result: Result) -> Result:
        """`result` of a launch the full path did."""
        assert result.asked in ("declined", ""), result
        assert self.full_module in result.modules, result
        return result


@dataclass
class Box:
    """The root VM of this module, with its distribution Box (the default one) running."""

    pywsl: Launcher
    folder: Path
    guid: str  # lower case, no braces
    default_path: str  # PATH of Box's DefaultEnvironment

    def cli(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        """A plain `pywsl` command line (no probe)."""
        return subprocess.run(
            [sys.executable, "-m", "pywsl.cli.main", *args],
            env=self.pywsl.env,
            cwd="/",
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=120,
            check=False,
        )

    def restart_check(self, *, release_changed: bool = False) -> None:
        """After the distribution stopped: a quick launch starts it again, with init's warning (one
        that stores a changed release loads the registry's modules to do it)."""
        started = self.pywsl.run(["-d", "Box", "--", "echo again"])
        if release_changed:
            assert started.asked == "ran", started
        else:
            self.pywsl.quick(started)
        assert started.outcome == (0, b"again\n", START_WARNING)


@pytest.fixture(scope="module")
def box() -> Iterator[Box]:
    folder = run_folder("quick-launch-")
    folder.chmod(0o755)  # the caller's folder must be reachable from the distribution
    records = folder / "records"
    records.mkdir()
    env = {**private_environment(folder, REPO), **passed_on()}
    launcher = Launcher(sys.executable, env, records, folder)
    archive = busybox_archive(folder / "box.tar", wsl_conf=WSL_CONF)
    made = Box(launcher, folder, "", "")
    try:
        imported = made.cli("--import", "Box", str(folder / "box"), str(archive))
        assert imported.returncode == 0, imported.stderr.decode()
        registry = json.loads((folder / "data" / "pywsl" / "registry.json").read_text())
        made.guid = registry["DefaultDistribution"].strip("{}").lower()
        entry = registry["Distributions"][registry["DefaultDistribution"]]
        assert entry["DistributionName"] == "Box"
        made.default_path = next(
            item.partition("=")[2] for item in entry["DefaultEnvironment"] if item.startswith("PATH=")
        )
        started = launcher.run(["-d", "Box", "--", "true"])  # boots the VM (the full path)
        assert started.outcome == (0, b"", START_WARNING), started
        yield made
    finally:
        made.cli("--shutdown", "--force")
        shutil.rmtree(folder, ignore_errors=True)


# -- the same command lines, both ways ------------------------------------------------------------

# (command line, its (status, stdout, stderr)); "{here}" is the caller's folder.
SAME_RESULTS: list[tuple[list[str], tuple[int, bytes, bytes]]] = [
    (["-d", "Box", "--", "echo out; echo err >&2"], (0, b"out\n", b"err\n")),
    (["-d", "box", "-e", "echo", "a  b", "c"], (0, b"a  b c\n", b"")),
    (["-d", "box", "--", "echo", "a  b", "$WSL_DISTRO_NAME"], (0, b"a  b Box\n", b"")),
    (["-d", "Box", "--", "sh", "-c", "echo one; exit 3"], (3, b"one\n", b"")),
    (["-d", "Box", "--", "printf", "%s,", "", "x  y", 'say "hi"'], (0, b',x  y,say "hi",', b"")),
    (["-d", "Box", "printf", "%s,", "x", "y"], (0, b"x,y,", b"")),
    (["--cd", "/tmp", "-d", "Box", "--", "pwd"], (0, b"/tmp\n", b"")),
    (["-d", "Box", "--cd", "~", "--", "pwd"], (0, b"/root\n", b"")),
    (["-d", "Box", "--", "pwd"], (0, b"{here}\n", b"")),
    (["-u", "root", "-d", "Box", "--", "id -u; pwd"], (0, b"0\n{here}\n", b"")),
    (["-u", "alice", "--cd", "~", "--", "id -un; pwd"], (0, b"alice\n/home/alice\n", b"")),
    (["--", "echo default"], (0, b"default\n", b"")),
    (["--", "exit 0"], (0, b"", b"")),
    (["-d", "Box", "--", "exit 3"], (3, b"", b"")),
    (["-d", "Box", "--", "echo last; exit 255"], (255, b"last\n", b"")),
    (["-d", "Box", "-e", "false"], (1, b"", b"")),
    (
        ["--cd", "/nonexistent", "--", "pwd"],
        (
            0,
            b"/\n",
            b"pywsl: cannot change to directory '/nonexistent': No such file or directory; starting in /\n",
        ),
    ),
    (["-d", "Box", "-e", "nosuch"], (1, b"", b"pywsl: execvpe(nosuch) failed: No such file or directory\n")),
    (["-u", "nobody", "-d", "Box", "--", "echo never"], (255, b"", USER_NOT_FOUND)),
]


@pytest.mark.parametrize(("args", "expected"), SAME_RESULTS, ids=[" ".join(a) for a, _ in SAME_RESULTS])
def test_the_quick_path_gives_what_the_full_path_gives(
    box: Box, args: list[str], expected: tuple[int, bytes, bytes]
) -> None:
    here = f"{HOST_MOUNT}{box.folder}".encode()
    status, stdout, stderr = expected
    expected = (status, stdout.replace(b"{here}", here), stderr)
    quick = box.pywsl.quick(box.pywsl.run(args))
    full = box.pywsl.full(box.pywsl.run(args, env=FORCE_FULL))
    assert quick.outcome == full.outcome == expected


def test_a_caller_folder_the_distribution_cannot_reach_is_left_alike(box: Box) -> None:
    hidden = box.folder / "hidden"
    (hidden / "inside").mkdir(parents=True)
    hidden.chmod(0o700)  # root inside the VM is not the host's root
    try:
        args = ["-d", "Box", "--", "pwd"]
        quick = box.pywsl.quick(box.pywsl.run(args, cwd=hidden / "inside"))
        full = box.pywsl.full(box.pywsl.run(args, env=FORCE_FULL, cwd=hidden / "inside"))
    finally:
        shutil.rmtree(hidden)
    expected = (0, b"/root\n", f"wsl: Failed to translate '{hidden / 'inside'}'\n".encode())
    assert quick.outcome == full.outcome == expected


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-d", "nowhere", "--", "true"], NOT_FOUND),
        (["-d", "NOWHERE", "-e", "true"], NOT_FOUND),
        (["--cd", "relative", "-d", "Box", "--", "true"], INVALID_CWD),
        (["-d", "Box", "--cd", "relative", "--", "true"], INVALID_CWD),
        (["--cd", "relative", "-d", "nowhere", "--", "true"], INVALID_CWD),
        (["-d", "nowhere", "--cd", "relative", "--", "true"], NOT_FOUND),
    ],
)
def test_errors_before_the_launch_are_the_full_paths(box: Box, args: list[str], expected: bytes) -> None:
    """The quick path declines (or is never asked), and the full path reports in the options' order."""
    for env in ({}, FORCE_FULL):
        result = box.pywsl.run(args, env=env)
        assert result.asked in ("declined", ""), result
        assert ROOT_QUICK not in result.modules or result.asked == "declined", result
        assert result.outcome == (255, b"", expected)


# Text a command line cannot carry to the VM: the byte 0xff, as Python decodes it from argv, a
# folder's name or the environment. The full path refuses it with E_INVALIDARG, naming the field.
NOT_UTF8 = os.fsdecode(b"\xff")
REFUSED_ARGUMENT = b"Error code: Wsl/Service/CreateLxProcess/E_INVALIDARG\n"
NOT_ENCODABLE = b": cannot encode as UTF-8: surrogates not allowed\n" + REFUSED_ARGUMENT
NOT_UTF8_CASES = {
    "argument": (["-d", "Box", "--", "echo", NOT_UTF8], {}, b"Common.CommandLine[1]"),
    "cd": (["--cd", f"/tmp/{NOT_UTF8}", "-d", "Box", "--", "pwd"], {}, b"Common.CurrentWorkingDirectory"),
    "user": (["-u", NOT_UTF8, "-d", "Box", "--", "true"], {}, b"Common.Username"),
    "shared-variable": (
        ["-d", "Box", "--", "echo $FOO"],
        {"WSLENV": "FOO", "FOO": NOT_UTF8},
        b"Common.Environment[",
    ),
    "caller-folder": (["-d", "Box", "--", "pwd"], {}, b"Common.CurrentWorkingDirectory"),
}


def _not_utf8(box: Box, case: str, env: Mapping[str, str]) -> Result:
    args, variables, _ = NOT_UTF8_CASES[case]
    if case != "caller-folder":
        return box.pywsl.run(args, env={**variables, **env})
    folder = box.folder / NOT_UTF8
    folder.mkdir()
    try:
        return box.pywsl.run(args, env={**variables, **env}, cwd=folder)
    finally:
        folder.rmdir()


@pytest.mark.parametrize("case", list(NOT_UTF8_CASES))
def test_the_full_path_refuses_text_that_is_not_utf8(box: Box, case: str) -> None:
    full = box.pywsl.full(_not_utf8(box, case, FORCE_FULL))
    assert (full.status, full.stdout) == (255, b"")
    field_name = NOT_UTF8_CASES[case][2]
    assert full.stderr.startswith(b"LX_INIT_CREATE_PROCESS_UTILITY_VM." + field_name), full.stderr
    assert full.stderr.endswith(NOT_ENCODABLE), full.stderr


@pytest.mark.parametrize("case", list(NOT_UTF8_CASES))
def test_the_quick_path_refuses_text_that_is_not_utf8_alike(box: Box, case: str) -> None:
    full = box.pywsl.full(_not_utf8(box, case, FORCE_FULL))
    quick = _not_utf8(box, case, {})
    assert quick.outcome == full.outcome


def test_an_empty_program_name_is_reported_as_by_the_full_path(box: Box) -> None:
    full = box.pywsl.full(box.pywsl.run(["-d", "Box", "-e", ""], env=FORCE_FULL))
    assert full.outcome == (
        255,
        b"",
        b"The program name is empty.\n" + REFUSED_ARGUMENT,
    )
    quick = box.pywsl.run(["-d", "Box", "-e", ""])
    assert quick.outcome == full.outcome


# -- the environment ---------------------------------------------------------------------------------


def test_the_environment_is_built_alike(box: Box) -> None:
    env = {
        "WSLENV": "FOO:NOPE/w:MISSING",
        "FOO": "bar",
        "NOPE": "to-windows-only",
        "TERM": "vt100",  # not passed: no terminal
        "PATH": "/host/only:" + os.environ.get("PATH", "/usr/bin:/bin"),
        "UNSHARED": "x",
    }
    line = 'echo "$FOO|${NOPE-unset}|${MISSING-unset}|$WSLENV|$TERM|${UNSHARED-unset}"; echo "$PATH"'
    quick = box.pywsl.quick(box.pywsl.run(["-d", "Box", "--", line], env=env))
    full = box.pywsl.full(box.pywsl.run(["-d", "Box", "--", line], env={**env, **FORCE_FULL}))
    assert quick.outcome == full.outcome
    assert quick.status == 0 and quick.stderr == b""
    shared, path = quick.stdout.decode().splitlines()
    assert shared == "bar|unset|unset|FOO:NOPE/w:MISSING|xterm-256color|unset"
    assert path.startswith(box.default_path + ":") or path == box.default_path
    assert "/host/only" not in path


# -- signals and a lost exit status ------------------------------------------------------------------


def _wait_ready(process: subprocess.Popen[bytes]) -> None:
    """Until the Linux process has written its line (`cat` echoes one given on stdin when there is
    a stdin pipe) and the launch forwards signals."""
    assert process.stdout is not None
    if process.stdin is not None:
        process.stdin.write(b"ready\n")
        process.stdin.flush()
    assert process.stdout.readline() == b"ready\n"
    wanted = 0
    for number in FORWARDED_SIGNALS:
        wanted |= 1 << (int(number) - 1)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with open(f"/proc/{process.pid}/status") as status:
            caught = next(int(line.split()[1], 16) for line in status if line.startswith("SigCgt:"))
        if caught & wanted == wanted:
            return
        time.sleep(0.01)
    raise AssertionError("the launch never caught the signals it forwards")


def _signalled(
    launcher: Launcher, args: list[str], number: int, env: Mapping[str, str], stdin: int = subprocess.PIPE
) -> Result:
    """The launch of a process that waits (`cat` on a pipe), ended by signal `number`. No shell
    runs in between: busybox's ash ignores SIGQUIT (as bash does), so a signal that reached the
    shell before it ran the command would be lost."""
    process, out = launcher.start(args, env=env, stdin=stdin)
    _wait_ready(process)
    sent = time.monotonic()
    process.send_signal(number)
    try:
        process.wait(timeout=20)  # stdin stays open until then: cat must end by the signal
    except subprocess.TimeoutExpired:
        process.kill()
    ended = time.monotonic() - sent
    result = launcher.finish(process, out, timeout=20)
    assert ended < 10, "the signal did not end the launch"
    return result


@pytest.mark.parametrize("number", [int(number) for number in FORWARDED_SIGNALS])
def test_a_signal_is_forwarded_as_by_the_full_path(box: Box, number: int) -> None:
    args = ["-d", "Box", "-e", "cat"]
    quick = box.pywsl.quick(_signalled(box.pywsl, args, number, {}))
    full = box.pywsl.full(_signalled(box.pywsl, args, number, FORCE_FULL))
    assert quick.outcome == full.outcome == (128 + number, b"", b"")


def _terminated(box: Box, env: Mapping[str, str]) -> Result:
    process, out = box.pywsl.start(["-d", "Box", "--", "echo ready; exec sleep 30"], env=env)
    _wait_ready(process)
    terminated = box.cli("--terminate", "Box")
    assert terminated.returncode == 0, terminated.stderr.decode()
    return box.pywsl.finish(process, out, timeout=30)


def test_a_lost_exit_status_is_reported_as_by_the_full_path(box: Box) -> None:
    quick = _terminated(box, {})
    assert quick.asked == "ran", quick  # the quick launch ran; telling the end loads the session
    box.restart_check()
    full = box.pywsl.full(_terminated(box, FORCE_FULL))
    restarted = box.pywsl.full(box.pywsl.run(["-d", "Box", "--", "echo again"], env=FORCE_FULL))
    assert restarted.outcome == (0, b"again\n", START_WARNING)
    assert quick.outcome == full.outcome == (1, b"", TERMINATED)


def test_a_changed_release_is_stored_by_either_path(box: Box) -> None:
    """init reports the distribution's flavor and version as it starts: both paths store them."""
    os_release = box.folder / "box" / "rootfs" / "etc" / "os-release"
    original = os_release.read_text()
    registry = box.folder / "data" / "pywsl" / "registry.json"

    def stored() -> tuple[str, str]:
        entry = json.loads(registry.read_text())["Distributions"]["{" + box.guid + "}"]
        return entry["Flavor"], entry["OsVersion"]

    try:
        os_release.write_text('ID=changed\nVERSION_ID="2.0"\n')
        assert box.cli("--terminate", "Box").returncode == 0
        box.restart_check(release_changed=True)
        assert stored() == ("changed", "2.0")
    finally:
        os_release.write_text(original)
    assert box.cli("--terminate", "Box").returncode == 0
    restarted = box.pywsl.full(box.pywsl.run(["-d", "Box", "--", "echo again"], env=FORCE_FULL))
    assert restarted.outcome == (0, b"again\n", START_WARNING)
    assert stored() == ("busybox", "1.36")


# -- what the quick path leaves to the full path -----------------------------------------------------


@pytest.mark.parametrize("stream", [0, 1, 2], ids=["stdin", "stdout", "stderr"])
def test_a_terminal_takes_the_full_path(box: Box, stream: int) -> None:
    master, slave = pty.openpty()
    streams = [subprocess.DEVNULL, subprocess.PIPE, subprocess.PIPE]
    streams[stream] = slave
    try:
        process, out = box.pywsl.start(
            ["-d", "Box", "--", "echo out; echo err >&2; exit 4"],
            stdin=streams[0],
            stdout=streams[1],
            stderr=streams[2],
        )
        os.close(slave)
        slave = -1
        terminal = b""
        if stream != 0:
            while True:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: every holder of the terminal is gone
                    break
                if not chunk:
                    break
                terminal += chunk
        result = box.pywsl.full(box.pywsl.finish(process, out))
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    assert result.status == 4
    if stream == 0:
        assert (result.stdout, result.stderr) == (b"out\n", b"err\n")
    elif stream == 1:
        assert (result.stdout, result.stderr) == (b"", b"err\n")
        assert terminal.replace(b"\r", b"") == b"out\n"
    else:
        assert (result.stdout, result.stderr) == (b"out\n", b"")
        assert terminal.replace(b"\r", b"") == b"err\n"


@pytest.mark.parametrize("name", GUI_VARIABLES)
def test_a_display_takes_the_full_path(box: Box, name: str) -> None:
    result = box.pywsl.full(box.pywsl.run(["-d", "Box", "--", "echo hi"], env={name: "/nowhere:99"}))
    assert result.outcome == (0, b"hi\n", b"")


def test_no_running_vm_is_booted_by_the_quick_path(box: Box) -> None:
    args = ["-d", "Box", "--", "echo booted"]
    stopped = box.cli("--shutdown")
    assert stopped.returncode == 0, stopped.stderr.decode()
    # The boot without the session stack: .wslconfig and CoreVm, none of what only the session,
    # a failure's report or a host with a GPU needs (a launch not measured: coverage loads them).
    booted = box.pywsl.quick(box.pywsl.run(args, env=dict.fromkeys(REQUEST_VARIABLES, "")))
    assert booted.outcome == (0, b"booted\n", START_WARNING)
    assert {"pywsl.vm.core_vm", "pywsl.api.session.wslconfig"} <= booted.modules
    assert not {"dataclasses", "logging", "subprocess", "platform", "coverage"} & booted.modules
    again = box.pywsl.quick(box.pywsl.run(["-d", "Box", "--", "echo quick"]))
    assert again.outcome == (0, b"quick\n", b"")
    assert "pywsl.vm.core_vm" not in again.modules
    # Where the quick path declines, the full path boots as before.
    stopped = box.cli("--shutdown")
    assert stopped.returncode == 0, stopped.stderr.decode()
    full = box.pywsl.full(box.pywsl.run(args, env=FORCE_FULL))
    assert full.outcome == booted.outcome
    # The boot's own warnings (.wslconfig's) come first, as the full path gives them.
    config = box.folder / "warning.wslconfig"
    config.write_text("[wsl2]\nnoSuchKey = 1\n")
    outcomes = []
    try:
        for extra in ({}, FORCE_FULL):
            stopped = box.cli("--shutdown")
            assert stopped.returncode == 0, stopped.stderr.decode()
            outcomes.append(box.pywsl.run(args, env={"PYWSL_CONFIG": str(config), **extra}))
    finally:
        box.cli("--shutdown")
        config.unlink()
        # The module's other tests find Box running, as they found it.
        running = box.pywsl.run(["-d", "Box", "--", "true"])
        assert running.outcome == (0, b"", START_WARNING), running
    warned, warned_full = box.pywsl.quick(outcomes[0]), box.pywsl.full(outcomes[1])
    assert warned.outcome == warned_full.outcome
    assert warned.stderr.endswith(START_WARNING) and b"noSuchKey" in warned.stderr.split(b"\n")[0]


def test_an_operation_lock_takes_the_full_path(box: Box) -> None:
    locks = box.folder / "data" / "pywsl" / "locks"
    locks.mkdir(mode=0o700, exist_ok=True)
    lock = locks / f"{box.guid}.lock"
    args = ["-d", "Box", "--", "echo hi"]
    try:
        lock.write_bytes(b"")  # a crashed operation's leftover: nobody holds it
        leftover = box.pywsl.full(box.pywsl.run(args))
        assert leftover.outcome == (0, b"hi\n", b"")
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # an export under way
            os.pwrite(fd, json.dumps({"pid": os.getpid(), "state": "EXPORTING"}).encode(), 0)
            held = box.pywsl.full(box.pywsl.run(args))
            held_default = box.pywsl.full(box.pywsl.run(["--", "echo hi"]))
        finally:
            os.close(fd)
    finally:
        lock.unlink(missing_ok=True)
    assert held.outcome == held_default.outcome == (255, b"", LOCKED)
    after = box.pywsl.quick(box.pywsl.run(args))
    assert after.outcome == (0, b"hi\n", b"")


# -- a user's launch through the service ---------------------------------------------------------


@pytest.fixture(scope="module")
def user_box(workspace: Workspace, service: ServiceProcess) -> Iterator[Launcher]:
    """An unprivileged user with a running distribution Box, launching through the service."""
    archive = busybox_archive(workspace.folder / "quick-launch.tar")
    os.chmod(archive, 0o644)
    with created_users(workspace, service, "pywslql") as (user,):
        answer = as_user(workspace, user, {"op": "import", "name": "Box", "archive": str(archive)})
        assert "result" in answer, answer
        launcher = Launcher(
            str(workspace.python),
            user_env(workspace, user),
            user.home,
            user.home,
            user,
            SERVICE_QUICK,
            SERVICE_FULL,
        )
        started = launcher.run(["-d", "Box", "--", "true"])
        assert started.outcome == (0, b"", b""), started
        yield launcher


def _through_terminal(launcher: Launcher, args: list[str], cwd: Path | None = None) -> Result:
    """The launch with a terminal as stdin (the full path), its output on pipes."""
    master, slave = pty.openpty()
    try:
        return launcher.full(launcher.run(args, stdin=slave, cwd=cwd))
    finally:
        os.close(slave)
        os.close(master)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-d", "Box", "--", "echo hi"], (0, b"hi\n", b"")),
        (["-d", "box", "--", "echo out; echo err >&2; exit 5"], (5, b"out\n", b"err\n")),
        (["--cd", "/tmp", "-e", "pwd"], (0, b"/tmp\n", b"")),
        (["-u", "alice", "--cd", "~", "--", "id -un; pwd"], (0, b"alice\n/home/alice\n", b"")),
        (["-u", "nobody", "-d", "Box", "--", "true"], (255, b"", USER_NOT_FOUND)),
    ],
    ids=["echo", "status", "cd", "user", "unknown-user"],
)
def test_the_service_quick_path_gives_what_the_full_path_gives(
    user_box: Launcher, args: list[str], expected: tuple[int, bytes, bytes]
) -> None:
    quick = user_box.quick(user_box.run(args))
    full = _through_terminal(user_box, args)
    assert quick.outcome == full.outcome == expected


def test_an_unknown_distribution_through_the_service_is_the_full_paths_error(user_box: Launcher) -> None:
    declined = user_box.run(["-d", "nowhere", "--", "true"])
    assert declined.asked == "declined" and SERVICE_FULL in declined.modules, declined
    full = _through_terminal(user_box, ["-d", "nowhere", "--", "true"])
    assert declined.outcome == full.outcome == (255, b"", NOT_FOUND)


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_through_the_service_is_forwarded(user_box: Launcher, number: int) -> None:
    args = ["-d", "Box", "-e", "cat"]
    quick = user_box.quick(_signalled(user_box, args, number, {}))
    assert quick.outcome == (128 + number, b"", b"")


def test_the_callers_folder_through_the_service_is_translated_alike(
    user_box: Launcher, workspace: Workspace
) -> None:
    args = ["-d", "Box", "--", "pwd"]
    quick = user_box.quick(user_box.run(args, cwd=workspace.folder))
    full = _through_terminal(user_box, args, cwd=workspace.folder)
    assert quick.outcome == full.outcome == (0, f"{HOST_MOUNT}{workspace.folder}\n".encode(), b"")


def test_a_display_stays_on_the_service_quick_path(user_box: Launcher) -> None:
    """The service shares the caller's display itself: DISPLAY is sent with the request."""
    result = user_box.quick(user_box.run(["-d", "Box", "--", "echo hi"], env=FORCE_FULL))
    assert result.outcome == (0, b"hi\n", b"")


def _user_terminated(launcher: Launcher, stdin: int) -> Result:
    process, out = launcher.start(["-d", "Box", "--", "echo ready; exec sleep 30"], stdin=stdin)
    assert process.stdout is not None
    assert process.stdout.readline() == b"ready\n"
    terminated = launcher.run(["--terminate", "Box"])
    assert terminated.status == 0, terminated
    return launcher.finish(process, out, timeout=30)


def test_a_lost_exit_status_through_the_service_is_reported_alike(user_box: Launcher) -> None:
    quick = _user_terminated(user_box, subprocess.DEVNULL)
    assert quick.asked == "ran", quick
    master, slave = pty.openpty()
    try:
        full = user_box.full(_user_terminated(user_box, slave))
    finally:
        os.close(slave)
        os.close(master)
    again = user_box.quick(user_box.run(["-d", "Box", "--", "echo again"]))
    assert again.outcome == (0, b"again\n", b"")
    assert quick.outcome == full.outcome == (1, b"", TERMINATED)


def test_text_that_is_not_utf8_through_the_service_is_the_full_paths_error(user_box: Launcher) -> None:
    """The request cannot be encoded: the quick path declines, the full path reports."""
    args = ["-d", "Box", "--", "echo", NOT_UTF8]
    declined = user_box.run(args)
    assert declined.asked == "declined" and SERVICE_FULL in declined.modules, declined
    full = _through_terminal(user_box, args)
    assert declined.outcome == full.outcome
    assert (declined.status, declined.stdout) == (255, b"")
    assert declined.stderr.endswith(b"surrogates not allowed\n" + REFUSED_ARGUMENT), declined.stderr


def test_an_empty_program_name_through_the_service_is_the_full_paths_error(user_box: Launcher) -> None:
    quick = user_box.run(["-d", "Box", "-e", ""])
    full = _through_terminal(user_box, ["-d", "Box", "-e", ""])
    expected = b"The program name is empty.\n" + REFUSED_ARGUMENT
    assert quick.outcome == full.outcome == (255, b"", expected)
