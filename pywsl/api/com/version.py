"""Which WslService versions this declaration of `ILxssUserSession` matches.

The IDL calls the interface internal: methods are appended under the same IID, and client and
service always ship together. The declaration here is that of WSL's public source from its first
open-source release (2.5.8) to 2.9.4, unchanged over that range; the installed service's version is
its binary's file version (`wslservice.exe`). Any other version is refused, unless
`PYWSL_ALLOW_WSL_VERSION` names it (or is `any`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pywsl.api.errors import WslError

__all__ = ["ALLOW_VARIABLE", "FIRST_MATCHING", "LAST_MATCHING", "check_version", "parse_version"]

ALLOW_VARIABLE = "PYWSL_ALLOW_WSL_VERSION"
FIRST_MATCHING = (2, 5, 8)
LAST_MATCHING = (2, 9, 4)  # the newest release whose IDL was compared
_MATCHING_SERIES = (2, 9)  # later patch releases of 2.9 keep the IDL of the series


def parse_version(text: str) -> tuple[int, ...]:
    try:
        parts = tuple(int(part) for part in text.strip().split("."))
    except ValueError:
        parts = ()
    if len(parts) < 3:
        raise WslError("ERROR_VERSION_PARSE_ERROR", f"Cannot read the WSL version {text!r}.")
    return parts


def matches(version: tuple[int, ...]) -> bool:
    release = version[:3]
    return FIRST_MATCHING <= release <= LAST_MATCHING or release[:2] == _MATCHING_SERIES


def check_version(text: str, environ: Mapping[str, str] | None = None) -> tuple[int, ...]:
    """The parsed version when the declaration matches it (or the override names it); else a
    `WslError` naming the version and the override."""
    environ = os.environ if environ is None else environ
    version = parse_version(text)
    allowed = environ.get(ALLOW_VARIABLE, "").strip()
    if matches(version) or allowed == "any" or (allowed and parse_version(allowed)[:3] == version[:3]):
        return version
    shown = ".".join(str(part) for part in version)
    first = ".".join(map(str, FIRST_MATCHING))
    last = ".".join(map(str, _MATCHING_SERIES))
    raise WslError(
        "WSL_E_OS_NOT_SUPPORTED",
        f"WSL {shown} is installed; pywsl's COM client knows the interface of WSL {first} to {last}.x only, "
        f"whose layout may differ in other versions. Set {ALLOW_VARIABLE}={shown} to use it anyway.",
        context="Wsl",
    )
