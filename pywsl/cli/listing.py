"""The read-only verbs: `--list` (and its variants), `--status`, `--version`.

`--list` follows `ListDistributionsHelper` in wsl.exe: the default distribution first; `--running`
keeps the running ones; without `--all` the ones being installed, removed, converted or exported are
left out, except with `--verbose`, which shows every distribution and its state (Installing,
Uninstalling, Converting, Exporting) whatever `--all` and `--running` say, as wsl.exe does; no
distribution at all is `WSL_E_DEFAULT_DISTRO_NOT_FOUND`; `--running` with none running prints "There
are no running distributions." and fails. `--online` lists what `--install` can install; a built-in
distribution this host cannot build keeps its line, its friendly name marked "(unavailable here)",
and after the table one line on stderr per reason says why and what to install (`apt-get install
...`), so that stdout stays wsl.exe's NAME / FRIENDLY NAME table. `--format json` (see
`pywsl.cli.render`) prints the same selection as JSON, with `available` and `unavailable_reason` for
every entry.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import sys
from collections.abc import Sequence
from typing import Any

from pywsl.cli import messages, render
from pywsl.cli.context import current_session
from pywsl.cli.report import FAILURE_EXIT_STATUS, fail, invalid_usage, print_error, print_warning

__all__ = ["list_command", "status_command", "version_command"]

UNAVAILABLE_MARK = " (unavailable here)"
UNAVAILABLE_NOTE = "{names}: cannot be installed here: {reason}."
RUNNING = 2
TRANSITIONAL = frozenset({3, 4, 5, 6})  # Installing, Uninstalling, Converting, Exporting
DEFAULT_WSL_VERSION = 2


def _invalid_together(first: str, second: str) -> Exception:
    return invalid_usage(messages.ARGUMENTS_NOT_VALID_TOGETHER.format(first=first, second=second))


def _check_combination(*, all_: bool, running: bool, quiet: bool, verbose: bool, online: bool) -> None:
    """wsl.exe's invalid combinations: -q with -v; --all with --running; -v or --all with --online."""
    if quiet and verbose:
        raise _invalid_together("--quiet", "--verbose")
    if all_ and running:
        raise _invalid_together("--all", "--running")
    if online and verbose:
        raise _invalid_together("--verbose", "--online")
    if online and all_:
        raise _invalid_together("--all", "--online")


def _select(distributions: Sequence[Any], *, all_: bool, running: bool, verbose: bool) -> list[Any]:
    """wsl.exe's selection; `--verbose` shows every distribution, whatever --all and --running say,
    so that one being installed, removed, converted or exported shows its state."""
    ordered = sorted(distributions, key=lambda info: not info.is_default)
    if verbose:
        return ordered
    if running:
        ordered = [info for info in ordered if int(info.state) == RUNNING]
    if not all_:
        ordered = [info for info in ordered if int(info.state) not in TRANSITIONAL]
    return ordered


def _unavailable_notes(entries: Sequence[Any]) -> list[str]:
    """One line per distinct reason, naming every entry it keeps from being installed here."""
    names_by_reason: dict[str, list[str]] = {}
    for entry in entries:
        if entry.unavailable:
            names_by_reason.setdefault(entry.unavailable, []).append(entry.name)
    return [
        UNAVAILABLE_NOTE.format(names=", ".join(names), reason=reason)
        for reason, names in names_by_reason.items()
    ]


def _list_online(output_format: str) -> int:
    from pywsl.api.install.installer import list_online

    if sys.platform == "win32":  # WSL's manifest settings are the machine's (registry), not .wslconfig's
        from pywsl.api.com import install_config

        entries = list_online(install_config(), on_warning=print_warning)
    else:
        entries = list_online(on_warning=print_warning)
    if output_format == "json":
        render.print_json([render.online_record(entry) for entry in entries])
        return 0
    render.print_online_table(
        [
            dataclasses.replace(entry, friendly_name=entry.friendly_name + UNAVAILABLE_MARK)
            if entry.unavailable
            else entry
            for entry in entries
        ]
    )
    for note in _unavailable_notes(entries):
        print_error(note)
    return 0


def list_command(
    all_: bool, running: bool, quiet: bool, verbose: bool, online: bool, output_format: str
) -> int:
    _check_combination(all_=all_, running=running, quiet=quiet, verbose=verbose, online=online)
    if online:
        return _list_online(output_format)
    distributions = current_session().enumerate_distributions()
    selected = _select(distributions, all_=all_, running=running, verbose=verbose)
    if output_format == "json":
        render.print_json([render.distribution_record(info) for info in selected])
        return 0
    if running and not selected and not quiet:
        print_error(messages.NO_RUNNING_DISTRO)
        return FAILURE_EXIT_STATUS
    if not selected and not quiet:
        raise fail("WSL_E_DEFAULT_DISTRO_NOT_FOUND")
    if verbose:
        render.print_verbose_table(selected)
    elif quiet:
        render.print_lines(info.name for info in selected)
    else:
        render.print_lines(
            [
                messages.REGISTERED_DISTROS_HEADER,
                *(
                    messages.DISTRO_DEFAULT.format(name=info.name) if info.is_default else info.name
                    for info in selected
                ),
            ]
        )
    return 0


def status_command(output_format: str) -> int:
    """Default distribution and default version (wsl.exe `--status`)."""
    session = current_session()
    default = next((info.name for info in session.enumerate_distributions() if info.is_default), None)
    version = DEFAULT_WSL_VERSION
    if sys.platform == "win32":  # the user's setting (`--set-default-version`), in the registry
        from pywsl.api.com import win32

        version = win32.default_version()
    if output_format == "json":
        render.print_json({"default_distribution": default, "default_version": version})
        return 0
    note: str | None = None
    if sys.platform != "win32":  # the namespaces VM's limits: none to report for WslService's VM
        from pywsl.api.session.user_vm import limits_note

        note = limits_note()
    lines = [] if default is None else [messages.STATUS_DEFAULT_DISTRO.format(name=default)]
    lines.append(messages.STATUS_DEFAULT_VERSION.format(version=version))
    if note is not None:
        lines.append(note)
    render.print_lines(lines)
    return 0


def version_command() -> int:
    """pywsl's version, the host kernel (the utility VM's kernel here) and Python's."""
    from pywsl import __version__

    render.print_lines(
        messages.PACKAGE_VERSIONS.format(
            pywsl=__version__, kernel=_kernel_release(), python=platform.python_version()
        ).splitlines()
    )
    return 0


def _kernel_release() -> str:
    """The host kernel's release (`uname -r`); Windows' version there."""
    if sys.platform == "win32":
        return platform.version()
    return os.uname().release
