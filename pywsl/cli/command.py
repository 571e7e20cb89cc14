"""The `pywsl` click command: the full grammar of wsl.exe's command line (`pywsl.cli.grammar`).

`Pywsl.main` reads the arguments, runs the launch or the verb and returns wsl.exe's exit status
(see `pywsl.cli.main`), reporting failures as wsl.exe does (`pywsl.cli.report`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click

from pywsl.cli import report
from pywsl.cli.grammar import WslCommand
from pywsl.cli.launch import launch_command, launch_options
from pywsl.cli.streams import exit_status, flush_stdout, utf8_streams
from pywsl.cli.verbs import build_verbs

__all__ = ["EPILOG", "HELP", "INTERRUPTED_EXIT_STATUS", "PROGRAM", "Pywsl", "build_command"]

PROGRAM = "pywsl"
INTERRUPTED_EXIT_STATUS = 130  # 128 + SIGINT

HELP = """Run Linux programs in a distribution, or manage distributions.

With no command line, start the default user's shell (as a login shell) in the distribution.
Otherwise the command line, after -- or not, runs through the user's shell as wsl.exe's raw
command line: one argument is the line itself ('pywsl -- "echo a; exit 3"'); several are joined
with spaces, those with whitespace or a double quote in double quotes ('pywsl -- sh -c "ls -l"').
After -e/--exec it runs without a shell. Options after the command line belong to the command:
'pywsl echo --help' runs 'echo --help'.
"""

EPILOG = """JSON output (--format json of --list and --status: one document on stdout)
--list, with any of -v, -q, --running, --all: an array, default first, of
  {"name": str, "state": "Stopped" | "Running" | "Installing" | "Uninstalling"
   | "Converting" | "Exporting", "version": 2, "default": bool,
   "flavor": str | null, "os_version": str | null, "id": "<uuid>"}
  ([] when no distribution matches; not an error)
--list --online: an array of
  {"name": str, "friendly_name": str, "default": bool,
   "source": "manifest" | "built-in", "available": bool,
   "unavailable_reason": str | null}
--status: {"default_distribution": str | null, "default_version": 2}

Exit status
the Linux process's exit status for a launch (128 + N when signal N killed it);
0 when a management option succeeded; 255 (wsl.exe's -1) after an error, whose
message and "Error code" line go to stderr; 255 after --help, as wsl.exe.

Shell completion
eval "$(_PYWSL_COMPLETE=bash_source pywsl)"    (or zsh_source, fish_source)
"""


class Pywsl(WslCommand):
    """The `pywsl` command; its `main` reports failures as wsl.exe does (see `pywsl.cli.report`)."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> int:
        status = self._run(args, prog_name or PROGRAM, complete_var, **extra)
        if standalone_mode:
            flush_stdout()
            sys.exit(status)
        return status

    def _run(self, args: Sequence[str] | None, prog_name: str, complete_var: str | None, **extra: Any) -> int:
        from pywsl.api.errors import WslError
        from pywsl.api.session import user_warnings

        utf8_streams()
        try:
            with user_warnings.collecting(report.print_user_warning):
                result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except WslError as error:
            report.print_error(report.error_text(error))
            return report.FAILURE_EXIT_STATUS
        except report.UsageFailure as failure:
            report.print_error(failure.message)
            return report.FAILURE_EXIT_STATUS
        except click.ClickException as error:
            report.print_error(report.click_error_text(error))
            return report.FAILURE_EXIT_STATUS
        except (click.Abort, KeyboardInterrupt):
            return INTERRUPTED_EXIT_STATUS
        except BrokenPipeError:
            return report.FAILURE_EXIT_STATUS
        return exit_status(result)


def build_command() -> Pywsl:
    """The `pywsl` click command."""
    return Pywsl(
        PROGRAM,
        verbs=build_verbs(),
        params=launch_options(),
        callback=launch_command,
        help=HELP,
        epilog=EPILOG,
    )
