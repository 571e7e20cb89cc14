"""How the command line reports a failure: WSL's message, its error code, exit status -1.

wsl.exe prints the message of the failing HRESULT and then `Error code: Wsl/<context>/<name>`,
except for `WSL_E_DEFAULT_DISTRO_NOT_FOUND` and `WSL_E_INVALID_USAGE`, whose message stands alone,
and returns -1 (an exit status of 255 here). Command line errors found while reading the launch
options are printed without a code, as wsl.exe prints them. pywsl writes all of this to stderr,
so that stdout carries only the output of the command or verb. click is imported only to report
an error click found (the fast launch path never loads it). Warnings are left out when
`WSL_DISABLE_WARNINGS=1`, as in wsl.exe.
"""

from __future__ import annotations

import os
import sys

from pywsl.cli import messages

TYPE_CHECKING = False  # a launch imports this module: `typing` would cost it more than the module
if TYPE_CHECKING:
    import click

    from pywsl.api.errors import WslError

__all__ = [
    "FAILURE_EXIT_STATUS",
    "UsageFailure",
    "click_error_text",
    "error_text",
    "fail",
    "invalid_usage",
    "print_error",
    "print_success",
    "print_user_warning",
    "print_warning",
    "usage_text",
]

FAILURE_EXIT_STATUS = 255  # wsl.exe's -1

_CODE_HIDDEN = frozenset({"WSL_E_DEFAULT_DISTRO_NOT_FOUND", "WSL_E_INVALID_USAGE"})

# The command line's advice after the library's message, completing wsl.exe's text for the error.
_ADVICE = {
    "WSL_E_DEFAULT_DISTRO_NOT_FOUND": (
        "\nYou can resolve this by installing a distribution with the instructions below:\n\n"
        f"Use '{messages.PROGRAM} --list --online' to list available distributions\n"
        f"and '{messages.PROGRAM} --install <Distro>' to install."
    ),
    "WSL_E_DISTRO_NOT_STOPPED": f" To force WSL to stop use: {messages.PROGRAM} --shutdown",
    "WSL_E_DISTRIBUTION_NAME_NEEDED": " Use --name to choose the distribution name.",
    "ERROR_ALREADY_EXISTS": " Use --name to choose a different name.",
}


class UsageFailure(Exception):
    """A command line error that wsl.exe prints as a bare message (no error code)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def fail(code: str, message: str | None = None) -> WslError:
    """A client-side error (wsl.exe's own `THROW_HR`), in the `Wsl` context."""
    from pywsl.api.errors import WslError

    return WslError(code, message, context="Wsl")


def error_text(error: WslError) -> str:
    """The lines wsl.exe prints for a failed operation."""
    message = error.message + _ADVICE.get(error.code, "")
    if error.code in _CODE_HIDDEN:
        return message
    code = error.error_code
    if not code.startswith("Wsl/"):
        code = f"Wsl/{code}"
    return f"{message}\nError code: {code}"


def _long_spelling(ctx: click.Context | None, spelling: str) -> str:
    """`--distribution` for `-d`: the longest spelling of the option `spelling` belongs to."""
    import click  # only a command line click read has a context

    if ctx is not None:
        for param in ctx.command.get_params(ctx):
            if isinstance(param, click.Option) and spelling in (*param.opts, *param.secondary_opts):
                return max((*param.opts, *param.secondary_opts), key=len)
    return spelling


def _option_takes_value(ctx: click.Context | None, spelling: str) -> bool:
    import click

    if ctx is None:
        return False
    for param in ctx.command.get_params(ctx):
        if isinstance(param, click.Option) and spelling in (*param.opts, *param.secondary_opts):
            return not (param.is_flag or param.count)
    return False


def usage_text(ctx: click.Context | None) -> str:
    """wsl.exe's usage text (the message of WSL_E_INVALID_USAGE): the whole help."""
    import click

    if ctx is None:
        ctx = click.get_current_context(silent=True)
    return ctx.find_root().get_help() if ctx is not None else ""


def invalid_usage(detail: str | None = None) -> WslError:
    """WSL_E_INVALID_USAGE: `detail` (pywsl's own line saying what is wrong), then the usage text;
    printed without an error code, as wsl.exe prints it."""
    text = usage_text(None)
    return fail("WSL_E_INVALID_USAGE", f"{detail}\n\n{text}" if detail else text)


def click_error_text(error: click.ClickException) -> str:
    """What wsl.exe prints for a command line error that click found.

    At the top level wsl.exe prints "Invalid command line argument" or "... is missing a required
    parameter" alone; a verb's ArgumentParser raises them as E_INVALIDARG, with the code line.
    """
    import click

    ctx = error.ctx if isinstance(error, click.UsageError) else None
    in_verb = ctx is not None and ctx.parent is not None
    text, with_code = _click_error_message(error, ctx, in_verb)
    return f"{text}\nError code: Wsl/E_INVALIDARG" if with_code else text


def _click_error_message(
    error: click.ClickException, ctx: click.Context | None, in_verb: bool
) -> tuple[str, bool]:
    """The message wsl.exe prints for `error`, and whether the error code line follows it."""
    import click

    if isinstance(error, click.NoSuchOption):
        return messages.INVALID_COMMAND_LINE.format(argument=error.option_name), in_verb
    if isinstance(error, click.BadOptionUsage):
        return _bad_option_usage_message(error.option_name, ctx, in_verb)
    if isinstance(error, click.MissingParameter):
        return _missing_parameter_message(ctx, in_verb)
    if isinstance(error, click.BadParameter):
        return messages.INVALID_VALUE.format(option=_parameter_name(error), detail=error.message), True
    return error.format_message(), True


def _bad_option_usage_message(spelling: str, ctx: click.Context | None, in_verb: bool) -> tuple[str, bool]:
    """An option used wrongly: its value is missing, or it is not an option of this command."""
    if not _option_takes_value(ctx, spelling):
        return messages.INVALID_COMMAND_LINE.format(argument=spelling), in_verb
    long_name = _long_spelling(ctx, spelling)
    if in_verb:
        return messages.MISSING_ARGUMENT.format(argument=long_name), True
    return messages.REQUIRED_PARAMETER_MISSING.format(argument=long_name), False


def _missing_parameter_message(ctx: click.Context | None, in_verb: bool) -> tuple[str, bool]:
    """A required argument is missing: what the command's `missing_argument` policy says."""
    verb_name = ctx.info_name if ctx is not None and in_verb else None
    policy = getattr(ctx.command, "missing_argument", None) if ctx is not None else None
    if policy == "usage":
        return usage_text(ctx), False
    if policy == "invalid_argument":
        from pywsl.api.errors import WslError

        return WslError("E_INVALIDARG").message, True
    # wsl.exe prints this one alone, as it does at the top level
    return messages.REQUIRED_PARAMETER_MISSING.format(argument=verb_name or "--"), False


def _parameter_name(error: click.BadParameter) -> str:
    """How a bad value's option or argument is named: an option by its longest spelling."""
    import click

    param = error.param
    if isinstance(param, click.Option):
        return max(param.opts, key=len)
    if param is not None:
        return param.human_readable_name
    return error.param_hint if isinstance(error.param_hint, str) else "argument"


def _write(text: str) -> None:
    try:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):
        pass


def print_error(text: str) -> None:
    """An error message, on stderr."""
    _write(text)


def print_warning(text: str) -> None:
    """A warning, on stderr, unless WSL_DISABLE_WARNINGS=1 (as wsl.exe)."""
    if os.environ.get("WSL_DISABLE_WARNINGS") != "1":
        _write(text)


def print_user_warning(text: str) -> None:
    """A warning the library emitted for the user (`pywsl.api.session.user_warnings`): `wsl: <text>`."""
    print_warning(f"wsl: {text}")


def print_success() -> None:
    """The line a management verb prints when it succeeds (Windows' text for ERROR_SUCCESS)."""
    _write(messages.OPERATION_SUCCESSFUL)
