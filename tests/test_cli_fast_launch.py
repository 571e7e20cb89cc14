"""The fast path of the common launch lines (`pywsl.cli.fast_launch`) behaves as the click grammar.

Every line is run both ways with the same mocked session: the exit status, stdout, stderr and the
calls on the session must be the same. Lines outside the fast path's shape go to the full grammar.
"""

from __future__ import annotations

import errno
import gc
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
from pytest_mock import MockerFixture
from test_cli_support import Cli

from pywsl.cli import fast_launch
from pywsl.cli.command import build_command
from pywsl.cli.fast_launch import LAUNCH_OPTION_SPELLINGS, LaunchLine, read_launch_line
from pywsl.cli.invocation import Invocation
from pywsl.cli.launch import launch_options
from pywsl.cli.main import run

REPO = Path(__file__).resolve().parent.parent
Outcome = tuple[int | None, str, str, list[Any]]


def _click_run(argv: list[str]) -> int:
    return build_command().main(argv, standalone_mode=False)


def _outcome(cli: Cli, capsys: pytest.CaptureFixture[str], runner: Any, argv: list[str]) -> Outcome:
    cli.session.reset_mock()
    cli.open_session.reset_mock()
    capsys.readouterr()
    status = runner(argv)
    out, err = capsys.readouterr()
    return status, out, err, list(cli.session.mock_calls)


def _both(cli: Cli, capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[Outcome, Outcome]:
    return _outcome(cli, capsys, fast_launch.run, argv), _outcome(cli, capsys, _click_run, argv)


@pytest.fixture
def cli(mocker: MockerFixture) -> Cli:
    return Cli(mocker)


def test_the_table_is_the_click_declaration() -> None:
    declared = {param.name: param for param in launch_options() if isinstance(param, click.Option)}
    for name, spellings in LAUNCH_OPTION_SPELLINGS.items():
        option = declared[name]
        assert tuple(option.opts) == spellings
        assert not (option.is_flag or option.count)  # each takes one value


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["-d", "debian", "--", "true"],
            LaunchLine((("distribution", "debian"),), Invocation("shell", ("true",))),
        ),
        (
            ["--cd", "/tmp", "-u", "root", "-e", "ls", "-l"],
            LaunchLine((("cd", "/tmp"), ("user", "root")), Invocation("exec", ("ls", "-l"))),
        ),
        (["echo", "--help"], LaunchLine((), Invocation("shell", ("echo", "--help")))),
        (
            ["--distribution", "alpine", "-", "x"],
            LaunchLine((("distribution", "alpine"),), Invocation("shell", ("-", "x"))),
        ),
        (["--", "-d", "x"], LaunchLine((), Invocation("shell", ("-d", "x")))),
    ],
)
def test_common_lines_are_read(argv: list[str], expected: LaunchLine) -> None:
    assert read_launch_line(argv) == expected


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["-d", "debian"],
        ["--list"],
        ["-l"],
        ["--help"],
        ["-d", "debian", "--help"],
        ["-e"],
        ["-d", "a", "-d", "b", "--", "true"],
        ["-u", "a", "-u", "b", "--", "true"],
        ["--distribution=debian", "ls"],
        ["-ddebian", "ls"],
        ["--shell-type", "none", "ls"],
        ["--distribution-id", "x", "ls"],
        ["~", "ls"],
        ["{00000000-0000-0000-0000-000000000001}", "ls"],
        ["-d", "--", "ls"],
        ["-u", "-e", "ls"],
        ["-x", "ls"],
        ["-d", "debian", "--import", "a", "b", "c"],
    ],
)
def test_other_lines_need_the_full_grammar(argv: list[str]) -> None:
    assert read_launch_line(argv) is None


EQUIVALENT_LINES = [
    ["-d", "debian", "--", "true"],
    ["-d", "Alpine", "-u", "root", "--cd", "~", "-e", "ls", "-l"],
    ["--cd", "/srv", "echo", "a  b", "--help"],
    ["-d", "nowhere", "--", "true"],
    ["-d", "busy", "--", "true"],
    ["--cd", "relative", "-d", "nowhere", "--", "true"],
    ["-d", "nowhere", "--cd", "relative", "--", "true"],
    ["-u", "nobody", "-d", "debian", "-e", "id"],
    ["-", "x"],
]


@pytest.mark.parametrize("argv", EQUIVALENT_LINES)
@pytest.mark.parametrize("status", [0, 3, 67, 87, 300])
def test_the_fast_path_behaves_as_the_grammar(
    cli: Cli, capsys: pytest.CaptureFixture[str], argv: list[str], status: int
) -> None:
    cli.process.wait.return_value = status
    fast, full = _both(cli, capsys, argv)
    assert fast[0] is not None
    assert fast == full


def test_a_lost_exit_status_is_reported_the_same(cli: Cli, capsys: pytest.CaptureFixture[str]) -> None:
    cli.process.wait.return_value = 1
    cli.process.exit_status_lost = True
    fast, full = _both(cli, capsys, ["-d", "debian", "--", "true"])
    assert fast == full
    assert "Error code" in fast[2]


@pytest.mark.parametrize("error", [KeyboardInterrupt, EOFError])
def test_an_interrupt_is_reported_the_same(
    cli: Cli, capsys: pytest.CaptureFixture[str], error: type[BaseException]
) -> None:
    cli.session.create_lx_process.side_effect = error
    fast, full = _both(cli, capsys, ["-d", "debian", "--", "sleep", "9"])
    assert fast == full
    assert fast[0] == 130


def test_a_closed_stdout_exits_as_click_does(
    cli: Cli, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cli.session.create_lx_process.side_effect = BrokenPipeError(errno.EPIPE, "Broken pipe")
    outcomes = []
    for runner in (fast_launch.run, _click_run):
        with monkeypatch.context() as patch:  # each run wraps the console streams: put them back
            patch.setattr(sys, "stdout", sys.stdout)
            patch.setattr(sys, "stderr", sys.stderr)
            with pytest.raises(SystemExit) as exit_info:
                runner(["-d", "debian", "--", "true"])
            outcomes.append(exit_info.value.code)
    assert outcomes == [1, 1]


def test_other_lines_go_to_the_grammar(cli: Cli, capsys: pytest.CaptureFixture[str]) -> None:
    assert fast_launch.run(["--list", "--quiet"]) is None
    assert run(["--list", "--quiet"]) == 0
    assert "Debian" in capsys.readouterr().out


def test_shell_completion_goes_to_the_grammar(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(fast_launch.COMPLETE_VARIABLE, "bash_complete")
    assert fast_launch.run(["-d", "debian", "--", "true"]) is None


def test_the_collector_is_left_as_it_was(cli: Cli, capsys: pytest.CaptureFixture[str]) -> None:
    """The launch turns the collector off, then freezes what it made before the wait; a caller's
    process gets its collector back on and nothing frozen."""
    cli.process.wait.return_value = 0
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0
    seen: list[tuple[bool, int]] = []

    def wait(*_: object) -> int:
        seen.append((gc.isenabled(), gc.get_freeze_count()))
        return 0

    cli.process.wait.side_effect = wait
    assert run(["-d", "debian", "--", "true"]) == 0
    assert seen and seen[0][0] and seen[0][1] > 0  # on, with the launch's objects frozen, while it waits
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0


def test_an_exiting_launch_leaves_with_the_collector_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """The console script's launch leaves without turning the collector on (it would walk every
    object the launch made, to free nothing); a line for the full grammar gets it back on."""
    from pywsl.cli import main as main_module

    seen: list[bool] = []

    def leave(status: int) -> None:
        seen.append(gc.isenabled())
        raise SystemExit(status)

    monkeypatch.setattr(main_module, "_leave", leave)
    monkeypatch.setattr(fast_launch, "run", lambda argv: 3)
    try:
        with pytest.raises(SystemExit) as exited:
            main_module.main(["-d", "debian", "--", "true"])
        assert exited.value.code == 3
        assert seen == [False]
    finally:
        gc.enable()
    monkeypatch.setattr(fast_launch, "run", lambda argv: None)
    assert main_module._fast_launch(["--list"], exiting=True) is None
    assert gc.isenabled()


LEAVE = """
import atexit, sys
from pywsl.cli import main

class Teardown:
    def __del__(self):
        sys.stdout.write("teardown\\n")

kept = Teardown()
atexit.register(lambda: sys.stdout.write("atexit\\n"))
sys.stdout.write("buffered ")
{before}
main._leave(7)
"""


def _leave_in_a_child(before: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", LEAVE.format(before=before)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )


def test_leaving_skips_the_teardown_only() -> None:
    """The console script's exit: the status, atexit functions and buffered output as `sys.exit`
    gives them, without freeing every module (no finalizer runs at teardown)."""
    left = _leave_in_a_child("")
    assert left.returncode == 7, left.stderr
    assert left.stdout == "buffered atexit\n"


def test_a_running_thread_takes_the_normal_exit() -> None:
    """A thread still running is waited for, as `sys.exit` does: here it reads stdin, which is
    closed once the child says it is about to leave, and then writes. (What the finalizer writes
    at teardown is not asked for: a coverage measurement of the child keeps it from running.)"""
    before = (
        "import threading; "
        "threading.Thread(target=lambda: (sys.stdin.read(), sys.stdout.write('waited '))).start(); "
        "sys.stderr.write('leaving\\n'); sys.stderr.flush()"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", LEAVE.format(before=before)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert child.stderr is not None
        assert child.stderr.readline() == "leaving\n"
        out, err = child.communicate(input="", timeout=60)
    finally:
        child.kill()
        child.wait(timeout=60)
    assert child.returncode == 7, err
    assert out.removesuffix("teardown\n") == "buffered waited atexit\n"
