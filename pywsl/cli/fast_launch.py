"""The fast path of the common launch lines: `[-d NAME] [-u USER] [--cd DIR] (-- | -e | CMD) ...`.

A launch is what users run most (a script's `pywsl -d D -- cmd`, a prompt calling into a
distribution), and most of its time used to be spent importing click and the full grammar. This
module reads only that common shape, without click, and runs it as the click command would: the
same calls on the session in the same order, the same messages and exit statuses. Anything else (a
verb, `--help`, another launch option, `--name=value`, an attached short value, a repeated option,
a value that starts with `-`, wsl.exe's legacy `{GUID}`/`~` prefixes, no command line at all, shell
completion) returns None and goes to the full grammar (`pywsl.cli.command`), which reports errors.

The line is read by `pywsl.cli.launch_line` (with `LAUNCH_OPTION_SPELLINGS`, the one table of the
options both readers know), which the `pywsl` script also asks first whether a cold launch's VM
interpreter is to start.
"""

from __future__ import annotations

import errno
import os
import sys

from pywsl.cli import context
from pywsl.cli.launch_line import (
    COMPLETE_VARIABLE,
    LAUNCH_OPTION_SPELLINGS,
    LaunchLine,
    read_launch_line,
)
from pywsl.cli.launch_run import launch_process, process_arguments, working_directory
from pywsl.cli.streams import exit_status, utf8_streams

TYPE_CHECKING = False  # `typing` alone would cost a warm launch a sixth of its time
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import TextIO

    from pywsl.cli.context import CliState

__all__ = [
    "COMPLETE_VARIABLE",
    "INTERRUPTED_EXIT_STATUS",
    "LAUNCH_OPTION_SPELLINGS",
    "LaunchLine",
    "read_launch_line",
    "run",
]

INTERRUPTED_EXIT_STATUS = 130  # 128 + SIGINT
BROKEN_PIPE_EXIT_STATUS = 1  # click's status when stdout's reader went away


def run(argv: Sequence[str] | None = None) -> int | None:
    """Run a launch line and return its exit status; None when `argv` needs the full grammar."""
    if os.environ.get(COMPLETE_VARIABLE):
        return None
    line = read_launch_line(sys.argv[1:] if argv is None else list(argv))
    if line is None:
        return None
    context.prestart_vm()  # a cold launch: the VM's interpreter loads while this one goes on
    status = _guarded(lambda: _quick_launch(line))
    return _run_line(line) if status is None else status


def _quick_launch(line: LaunchLine) -> int | None:
    """The launch without the session (`context.quick_launch`); None when it needs one."""
    if sys.platform != "linux":
        return None  # nothing may happen twice: on Windows `--cd` enters the folder
    try:
        cwd = working_directory(line.value("cd"))
    except Exception:  # an invalid --cd: the full path reports it in the order of the options
        return None
    filename, command_line, _login = process_arguments(line.invocation, None)
    return context.quick_launch(
        line.value("distribution"), command_line, filename=filename, cwd=cwd, user=line.value("user") or ""
    )


def _run_line(line: LaunchLine) -> int:
    """As `pywsl.cli.command.Pywsl.main` runs the launch callback, with its error handling."""
    from pywsl.api.session import user_warnings
    from pywsl.cli import report

    utf8_streams()
    with user_warnings.collecting(report.print_user_warning):
        status = _guarded(lambda: _launch(line))
    assert status is not None
    return status


def _guarded(work: Callable[[], int | None]) -> int | None:
    """`work`'s exit status, with the errors of a launch reported as click's command reports them."""
    try:
        result = work()
    except (EOFError, KeyboardInterrupt):
        _write_newline(sys.stderr)  # click's abort: an empty line on stderr
        return INTERRUPTED_EXIT_STATUS
    except Exception as error:
        return _failure(error)
    return None if result is None else exit_status(result)


def _failure(error: Exception) -> int:
    """The status of a failed launch, after its message (`error` is raised again when it is a bug)."""
    from pywsl.api.errors import WslError
    from pywsl.cli import report

    if isinstance(error, WslError | report.UsageFailure):
        utf8_streams()
        report.print_error(report.error_text(error) if isinstance(error, WslError) else error.message)
        return report.FAILURE_EXIT_STATUS
    if isinstance(error, OSError) and error.errno == errno.EPIPE:
        sys.stdout = _QuietFlush(sys.stdout)
        sys.stderr = _QuietFlush(sys.stderr)
        raise SystemExit(BROKEN_PIPE_EXIT_STATUS) from None
    raise error


def _launch(line: LaunchLine) -> int:
    """The launch callback's work (`pywsl.cli.launch.launch_command`): each option where it stands."""
    from pywsl.cli.context import CliState

    state = CliState()
    try:
        return _launch_with(state, line)
    finally:
        state.close()


def _launch_with(state: CliState, line: LaunchLine) -> int:
    cwd: str | None = None
    for parameter, value in line.options:
        if parameter == "distribution":
            state.distro = state.get_session().get_distribution_id(value)
        elif parameter == "cd":
            cwd = working_directory(value)
    if cwd is None:
        cwd = working_directory(None)
    process_arguments(line.invocation, None)
    return launch_process(
        state.get_session(), state.distro, line.invocation, user=line.value("user") or "", cwd=cwd
    )


def _write_newline(stream: TextIO) -> None:
    try:
        stream.write("\n")
        stream.flush()
    except (OSError, ValueError):
        pass


class _QuietFlush:
    """A console stream whose flush ignores a reader that went away (as click leaves them)."""

    def __init__(self, wrapped: TextIO) -> None:
        self._wrapped = wrapped

    def flush(self) -> None:
        try:
            self._wrapped.flush()
        except OSError as error:
            if error.errno != errno.EPIPE:
                raise

    def __getattr__(self, name: str) -> object:
        return getattr(self._wrapped, name)
