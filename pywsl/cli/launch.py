"""Launching a Linux process: wsl.exe's launch options and `LaunchProcess`.

* no command line: the default user's shell, as a login shell;
* a command line (after `--` or not): the arguments joined with single spaces, unquoted, run as
  `<shell> -c "<line>"` (WSL passes the raw rest of its command line as one string);
* `-e`/`--exec` or `--shell-type none`: filename = argv[0], argv passed as is.

Before the default shell of a distribution installed with `--install` starts for the first time,
its first-run setup (OOBE) runs, as WSL runs it for that launch only.

The process's exit status becomes pywsl's, except 67 and 87, which init uses for "user not found"
and "too many terminals" and wsl.exe turns into those errors. This module is the fast path of the
command line: it imports the library only when it runs, and nothing for rendering.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

from pywsl.cli import messages
from pywsl.cli.completion import complete_distribution
from pywsl.cli.context import state_of
from pywsl.cli.grammar import Invocation, invocation_of
from pywsl.cli.report import UsageFailure, fail

if TYPE_CHECKING:
    from pywsl.api.session import UserSession

__all__ = ["launch_command", "launch_options", "launch_process", "parse_guid"]

# Exit statuses of init's relay child that wsl.exe maps to errors (LX_INIT_USER_NOT_FOUND, _TTY_LIMIT).
USER_NOT_FOUND_STATUS = 67
TTY_LIMIT_STATUS = 87

SHELL_TYPES = ("standard", "login", "none")


def parse_guid(text: str) -> uuid.UUID:
    """A distribution id as wsl.exe accepts it: with or without braces."""
    value = text.strip()
    if value.startswith("{") and value.endswith("}"):
        value = value[1:-1]
    try:
        if len(value) != 36:
            raise ValueError(value)
        return uuid.UUID(value)
    except ValueError:
        raise fail("E_INVALIDARG", messages.INVALID_GUID.format(value=text)) from None


def _guid_option(_ctx: click.Context, _param: click.Parameter, value: str | None) -> uuid.UUID | None:
    return None if value is None else parse_guid(value)


def launch_options() -> list[click.Parameter]:
    """The options that choose what to run, where and as whom."""
    return [
        click.Option(["-d", "--distribution"], metavar="NAME", multiple=True,
                     shell_complete=complete_distribution,
                     help="Run in the distribution NAME (default: the default distribution)."),
        click.Option(["--distribution-id"], metavar="GUID", callback=_guid_option,
                     help="Run in the distribution with this id."),
        click.Option(["-u", "--user"], metavar="USER",
                     help="Run as this Linux user of the distribution."),
        click.Option(["--cd"], metavar="DIR",
                     help="Start in DIR: an absolute path inside the distribution, or ~ (the user's "
                          "home). A ~ as the first argument means --cd ~."),
        click.Option(["--shell-type"], type=click.Choice(SHELL_TYPES),
                     help="standard: run the command line through the user's shell; login: the same as "
                          "a login shell; none: run it without a shell (as --exec)."),
    ]


def _working_directory(value: str | None) -> str:
    """--cd's value, else the caller's folder (WSL's default: the current Windows directory)."""
    if value is None:
        from pywsl.api.launch_request import host_directory

        try:
            return host_directory(os.getcwd())
        except OSError:
            return ""  # the caller's folder is gone: the user's home, as WSL when it has none
    if not value.startswith(("/", "~")):
        raise fail("E_INVALIDARG", messages.INVALID_CWD.format(value=value))
    return value


def launch_command(distribution: tuple[str, ...], distribution_id: uuid.UUID | None, user: str | None,
                   cd: str | None, shell_type: str | None) -> int | None:
    """The callback of the `pywsl` command: resolve -d, then launch unless a verb follows."""
    ctx = click.get_current_context()
    state = state_of(ctx)
    cwd: str | None = None
    # wsl.exe acts on each option where it stands: click hands the values over in the order the
    # options were given (then the absent ones), so the first failing option is the one reported.
    for name in list(ctx.params):
        if name == "distribution" and distribution:
            if state.distro is not None:  # a --distribution-id (or a leading {GUID}) came first
                raise UsageFailure(messages.DISTRO_ALREADY_SET)
            state.distro = state.get_session().get_distribution_id(distribution[0])
            if len(distribution) > 1:
                raise UsageFailure(messages.DISTRO_ALREADY_SET)
        elif name == "distribution_id" and distribution_id is not None:
            state.distro = distribution_id  # as in wsl.exe, it replaces an earlier -d
        elif name == "cd" and cd is not None:
            cwd = _working_directory(cd)
    if cwd is None:
        cwd = _working_directory(None)
    if ctx.invoked_subcommand is not None:
        return None
    invocation = invocation_of(ctx)
    _process_arguments(invocation, shell_type)  # its usage errors come after the options', as in wsl.exe
    return launch_process(state.get_session(), state.distro, invocation, user=user or "", cwd=cwd,
                          shell_type=shell_type)


def _process_arguments(invocation: Invocation, shell_type: str | None) -> tuple[str | None, list[str], bool]:
    """(filename, command line, login) for `create_lx_process`, as wsl.exe builds them."""
    arguments: Sequence[str] = invocation.arguments
    if invocation.mode == "exec" or shell_type == "none":
        if not arguments:
            raise fail("E_INVALIDARG")  # wsl.exe: exec mode with an empty command line
        return arguments[0], list(arguments), False
    command_line = [" ".join(arguments)] if arguments else []
    login = shell_type == "login" or (shell_type is None and not arguments)
    return None, command_line, login


def launch_process(session: UserSession, distro: uuid.UUID | None, invocation: Invocation, *,
                   user: str = "", cwd: str = "", shell_type: str | None = None) -> int:
    """Run the process and return its exit status (wsl.exe's `LaunchProcess`)."""
    filename, command_line, login = _process_arguments(invocation, shell_type)
    if filename is None and not command_line:
        # The default shell: the first-run setup of an installed distribution runs before it.
        from pywsl.api.oobe import run_oobe_if_pending

        oobe_status = run_oobe_if_pending(session, distro)
        if oobe_status is not None:
            return oobe_status
    process = session.create_lx_process(distro, command_line, filename=filename, cwd=cwd, username=user,
                                        login=login, wslenv_source=os.environ)
    status = process.wait()
    if process.exit_status_lost and not _distribution_running(session, distro):
        _report_instance_terminated()
        return status
    if status == USER_NOT_FOUND_STATUS:
        raise fail("WSL_E_USER_NOT_FOUND")
    if status == TTY_LIMIT_STATUS:
        raise fail("WSL_E_TTY_LIMIT")
    return status


def _distribution_running(session: UserSession, distro: uuid.UUID | None) -> bool:
    """Whether the distribution (None: the default one) still runs; False when that cannot be told."""
    from pywsl.api.errors import WslError
    from pywsl.api.registry import DistributionState

    try:
        infos = session.enumerate_distributions()
    except WslError:
        return False
    for info in infos:
        if (info.id == distro) if distro is not None else info.is_default:
            return info.state is DistributionState.RUNNING
    return False


def _report_instance_terminated() -> None:
    """The process's instance (or the whole VM) ended under it: say so, as wsl.exe does."""
    from pywsl.api.process import instance_terminated_error
    from pywsl.cli.report import error_text, print_error

    print_error(error_text(instance_terminated_error()))
