"""wsl.exe's launch options as click options, and the callback that reads them.

The launch itself (`launch_process`) lives in `pywsl.cli.launch_run`, which the fast path of the
common launch lines (`pywsl.cli.fast_launch`) shares.
"""

from __future__ import annotations

import uuid

import click

from pywsl.cli import messages
from pywsl.cli.completion import complete_distribution
from pywsl.cli.context import state_of
from pywsl.cli.grammar import invocation_of
from pywsl.cli.launch_line import LAUNCH_OPTION_SPELLINGS
from pywsl.cli.launch_run import launch_process, process_arguments, working_directory
from pywsl.cli.report import UsageFailure, fail

__all__ = ["launch_command", "launch_options", "launch_process", "parse_guid"]

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
        click.Option(
            list(LAUNCH_OPTION_SPELLINGS["distribution"]),
            metavar="NAME",
            multiple=True,
            shell_complete=complete_distribution,
            help="Run in the distribution NAME (default: the default distribution).",
        ),
        click.Option(
            ["--distribution-id"],
            metavar="GUID",
            callback=_guid_option,
            help="Run in the distribution with this id.",
        ),
        click.Option(
            list(LAUNCH_OPTION_SPELLINGS["user"]),
            metavar="USER",
            help="Run as this Linux user of the distribution.",
        ),
        click.Option(
            list(LAUNCH_OPTION_SPELLINGS["cd"]),
            metavar="DIR",
            help="Start in DIR: an absolute path inside the distribution, or ~ (the user's "
            "home). A ~ as the first argument means --cd ~.",
        ),
        click.Option(
            ["--shell-type"],
            type=click.Choice(SHELL_TYPES),
            help="standard: run the command line through the user's shell; login: the same as "
            "a login shell; none: run it without a shell (as --exec).",
        ),
    ]


def launch_command(
    distribution: tuple[str, ...],
    distribution_id: uuid.UUID | None,
    user: str | None,
    cd: str | None,
    shell_type: str | None,
) -> int | None:
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
            cwd = working_directory(cd)
    if cwd is None:
        cwd = working_directory(None)
    if ctx.invoked_subcommand is not None:
        return None
    invocation = invocation_of(ctx)
    process_arguments(invocation, shell_type)  # its usage errors come after the options', as in wsl.exe
    return launch_process(
        state.get_session(), state.distro, invocation, user=user or "", cwd=cwd, shell_type=shell_type
    )
