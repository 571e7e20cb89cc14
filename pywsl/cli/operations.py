"""The short management verbs: set the default, terminate, shut down, unregister, versions.

Each does what its wsl.exe counterpart does (`SetDefaultDistribution`, `TerminateDistribution`,
`Shutdown`, `UnregisterDistribution`, `SetDefaultVersion`, `SetVersion`) and prints Windows' success
line on stderr, except `--shutdown`, which prints nothing, as in WSL. WSL 1 does not exist here:
asking for version 1 is `WSL_E_WSL1_NOT_SUPPORTED`, and every distribution already is version 2.
Disk-image verbs (`--mount`, `--unmount`, `--import-in-place`) have no meaning for a distribution
stored as a directory and fail with a clear error. On Windows the installed WslService has both
versions and disk images: `--set-version` converts there (`pywsl.cli.windows`).
"""

from __future__ import annotations

import re

from pywsl.cli import messages
from pywsl.cli.context import current_session
from pywsl.cli.report import fail, print_success

__all__ = [
    "parse_version",
    "set_default_command",
    "set_default_version_command",
    "set_version_command",
    "shutdown_command",
    "terminate_command",
    "unregister_command",
]

WSL_VERSION_1 = 1
WSL_VERSION_2 = 2
_LEADING_INTEGER = re.compile(r"\s*([+-]?[0-9]+)")


def parse_version(text: str | None, *, allow_wsl1: bool = False) -> int:
    """`ParseVersionString`: the leading integer as `std::stoi` reads it ("2", " 2", "2.0"); 1 or 2,
    else ERROR_VERSION_PARSE_ERROR (also when missing); 1 only with `allow_wsl1` (Windows' service)."""
    found = _LEADING_INTEGER.match(text or "")
    version = int(found.group(1)) if found else 0
    text = text or ""
    if version not in (WSL_VERSION_1, WSL_VERSION_2):
        raise fail("ERROR_VERSION_PARSE_ERROR", messages.INVALID_VERSION.format(value=text))
    if version == WSL_VERSION_1 and not allow_wsl1:
        raise fail("WSL_E_WSL1_NOT_SUPPORTED", messages.WSL1_NOT_SUPPORTED)
    return version


def set_default_command(distro: str) -> int:
    session = current_session()
    session.set_default_distribution(session.get_distribution_id(distro))
    print_success()
    return 0


def terminate_command(distro: str) -> int:
    session = current_session()
    session.terminate_distribution(session.get_distribution_id(distro))
    print_success()
    return 0


def shutdown_command(force: bool) -> int:
    current_session().shutdown(force=force)
    return 0


def unregister_command(distro: str) -> int:
    session = current_session()
    session.unregister_distribution(session.get_distribution_id(distro, list_all=True))
    print_success()
    return 0


def set_default_version_command(version: str | None) -> int:
    """Only 2 exists here, and it is already the default: nothing to store. On Windows it is stored
    in the user's registry, as wsl.exe does (1 only where WSL 1's component is installed)."""
    from pywsl.cli.windows import on_windows

    number = parse_version(version, allow_wsl1=on_windows())
    if on_windows():
        from pywsl.api.com import win32

        if number == WSL_VERSION_1 and not win32.wsl1_component_present():
            raise fail("WSL_E_WSL1_NOT_SUPPORTED", messages.WSL1_NOT_SUPPORTED)
        if number == WSL_VERSION_2:
            print(messages.VM_MODE_CONVERSION_INFO, flush=True)
        win32.set_default_version(number)
    print_success()
    return 0


def set_version_command(distro: str, version: str | None) -> int:
    """Converting needs WSL 1; every distribution is version 2 already. As in wsl.exe the name is
    looked up before the version is read: an unknown name wins over a missing or bad version. On
    Windows the service converts (`SetVersion`, its tools' errors relayed to stderr)."""
    from pywsl.cli.windows import on_windows

    session = current_session()
    distro_id = session.get_distribution_id(distro)
    number = parse_version(version, allow_wsl1=on_windows())
    if on_windows():
        if number == WSL_VERSION_2:
            print(messages.VM_MODE_CONVERSION_INFO, flush=True)
        session.set_version(distro_id, number)
        print_success()
        return 0
    raise fail("WSL_E_VM_MODE_INVALID_STATE", messages.ALREADY_REQUESTED_VERSION)
