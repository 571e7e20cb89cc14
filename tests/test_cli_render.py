"""Rendering (rich on a terminal, plain when piped, NO_COLOR), progress, completion, import weight."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.shell_completion import ShellComplete
from pytest_mock import MockerFixture
from test_cli_support import Cli, standard_distributions

from pywsl.cli import render
from pywsl.cli.main import build_command
from pywsl.cli.progress import FdWatcher, TransferProgress

ANSI_ESCAPE = "\x1b["


@pytest.fixture
def cli(mocker: MockerFixture) -> Cli:
    return Cli(mocker)


def _rich_table(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *, no_color: bool
) -> str:
    monkeypatch.setattr(render, "use_rich", lambda stream: True)
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "80")
    if no_color:
        monkeypatch.setenv("NO_COLOR", "1")
    else:
        monkeypatch.delenv("NO_COLOR", raising=False)
    render.print_verbose_table(standard_distributions()[:2])
    return capsys.readouterr().out


def test_rich_table_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    output = _rich_table(monkeypatch, capsys, no_color=False)
    assert ANSI_ESCAPE in output
    for word in ("NAME", "STATE", "VERSION", "Debian", "Alpine", "Running", "Stopped", "*"):
        assert word in output


def test_no_color_is_honoured(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    output = _rich_table(monkeypatch, capsys, no_color=True)
    assert "\x1b[3" not in output and "\x1b[9" not in output  # no foreground colours
    assert "Debian" in output and "Running" in output


def test_plain_when_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    render.print_verbose_table(standard_distributions()[:2])
    output = capsys.readouterr().out
    assert ANSI_ESCAPE not in output
    assert output.splitlines()[0] == "  NAME      STATE           VERSION"


def test_use_rich_needs_a_terminal(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with open(tmp_path / "f", "w") as plain:
        assert render.use_rich(plain) is False
    leader, follower = os.openpty()
    try:
        with open(follower, "w", closefd=False) as tty:
            monkeypatch.setenv("TERM", "xterm")
            assert render.use_rich(tty) is True
            monkeypatch.setenv("TERM", "dumb")
            assert render.use_rich(tty) is False
    finally:
        os.close(leader)
        os.close(follower)


def test_utf8_output_whatever_the_locale(cli: Cli, tmp_path: Path) -> None:
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONIOENCODING": "ascii"}
    result = subprocess.run(
        [sys.executable, "-m", "pywsl.cli.main", "--list", "--help"],
        env=env,
        capture_output=True,
        check=False,
    )
    assert result.returncode == 255
    assert result.stdout.decode("utf-8").startswith("Usage: pywsl --list")


def test_progress_plain_prints_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with TransferProgress("Import in progress") as display:
        display.update(10, 100)
        display.status("Installing: X")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "Import in progress\nInstalling: X\n"


def test_progress_bar_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("pywsl.cli.progress.use_rich", lambda stream: True)
    monkeypatch.setenv("FORCE_COLOR", "1")
    with TransferProgress("Export in progress") as display:
        display.update(512, 1024)
        display.status("Downloading: Debian")
        display(3, 10)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "Downloading: Debian" in captured.err


def test_fd_watcher_follows_the_read_offset(tmp_path: Path) -> None:
    path = tmp_path / "archive"
    path.write_bytes(b"x" * 4096)
    seen: list[tuple[int, int | None]] = []

    class Display(TransferProgress):
        def update(self, done: int, total: int | None = None) -> None:
            seen.append((done, total))

    fd = os.open(path, os.O_RDONLY)
    try:
        os.read(fd, 1000)
        with FdWatcher(fd, "read", Display(None)):
            pass
    finally:
        os.close(fd)
    assert seen and seen[0] == (1000, 4096)


def _completions(args: list[str], incomplete: str) -> list[str]:
    completer = ShellComplete(build_command(), {}, "pywsl", "_PYWSL_COMPLETE")
    return [item.value for item in completer.get_completions(args, incomplete)]


def test_completion_of_options_verbs_and_names(cli: Cli) -> None:
    assert "--list" in _completions([], "--li")
    assert {"--distribution", "--distribution-id"} <= set(_completions([], "--dist"))
    assert "--verbose" in _completions(["--list"], "--ver")
    assert "--set-default-user" in _completions(["--manage", "Debian"], "--set-d")
    assert _completions(["-d"], "") == ["Debian", "Alpine", "Busy"]
    assert _completions(["-d"], "al") == ["Alpine"]
    assert _completions(["--terminate"], "De") == ["Debian"]
    assert _completions(["--export"], "A") == ["Alpine"]


def test_completion_without_a_session_offers_no_names(mocker: MockerFixture) -> None:
    from pywsl.api.errors import WslError

    mocker.patch("pywsl.cli.context.open_session", side_effect=WslError("ERROR_SERVICE_NOT_ACTIVE"))
    assert _completions(["-d"], "") == []


def test_completion_script_for_bash() -> None:
    env = {**os.environ, "_PYWSL_COMPLETE": "bash_source"}
    result = subprocess.run(
        [sys.executable, "-m", "pywsl.cli.main"], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    assert "_PYWSL_COMPLETE" in result.stdout and "complete " in result.stdout


LAUNCH_PATH_PROBE = """
import sys
from unittest import mock
before = set(sys.modules)
import pywsl.cli.main as main
session = mock.MagicMock()
session.get_distribution_id.return_value = None
session.create_lx_process.return_value.wait.return_value = 7
session.create_lx_process.return_value.exit_status_lost = False
with mock.patch("pywsl.cli.context.open_session", return_value=session):
    status = main.run(["-d", "D", "--", "true"])
heavy = sorted(name for name in set(sys.modules) - before
               if name.split(".")[0] in ("rich", "json", "http", "ssl", "importlib_metadata")
               or name == "urllib.request"
               or name in ("pywsl.api.install.installer", "pywsl.api.install.manifest",
                           "pywsl.api.install.download", "pywsl.api.install.builtin_source",
                           "pywsl.cli.render_rich"))
# The fast path of the common launch lines reads them without click or the full grammar.
grammar = sorted(name for name in set(sys.modules) - before
                 if name.split(".")[0] in ("click", "construct")
                 or name in ("pywsl.cli.command", "pywsl.cli.grammar", "pywsl.cli.launch", "pywsl.cli.verbs",
                             "pywsl.api.session.wslconfig", "pywsl.wire.config_format"))
print(status, heavy, grammar)
"""


def test_launch_path_imports_no_rendering_or_installer_modules() -> None:
    result = subprocess.run(
        [sys.executable, "-c", LAUNCH_PATH_PROBE], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "7 [] []"
