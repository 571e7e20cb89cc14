"""Which distribution family the host runs, from its `/etc/os-release`.

`--install` without a name picks the built-in distribution of the host's own family when the
manifest cannot be fetched: Ubuntu on Ubuntu and its derivatives (`ID=ubuntu` or `ubuntu` in
`ID_LIKE`), Debian on Debian and its other derivatives; elsewhere Ubuntu, wsl.exe's default.
"""

from __future__ import annotations

import shlex
from pathlib import Path

__all__ = ["OS_RELEASE", "host_family", "parse_os_release", "read_os_release"]

OS_RELEASE = Path("/etc/os-release")
FALLBACK_OS_RELEASE = Path("/usr/lib/os-release")
MAX_OS_RELEASE_BYTES = 64 * 1024
FAMILIES = ("ubuntu", "debian")  # the first one a host names wins: Ubuntu's ID_LIKE is "debian"


def parse_os_release(text: str) -> dict[str, str]:
    """`KEY=value` lines with shell quoting (os-release(5)); lines that do not parse are skipped."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        if not key.isidentifier():
            continue
        try:
            values[key] = " ".join(shlex.split(value, posix=True))
        except ValueError:
            continue
    return values


def read_os_release(path: Path | None = None) -> dict[str, str]:
    """The host's os-release values (`/etc/os-release`, else `/usr/lib/os-release`); empty when
    neither can be read."""
    for candidate in (path,) if path is not None else (OS_RELEASE, FALLBACK_OS_RELEASE):
        try:
            with open(candidate, "rb") as stream:
                data = stream.read(MAX_OS_RELEASE_BYTES)
        except OSError:
            continue
        return parse_os_release(data.decode("utf-8", errors="replace"))
    return {}


def host_family(os_release: Path | None = None) -> str | None:
    """ "ubuntu", "debian" or None: the family of the host described by `os_release`."""
    values = read_os_release(os_release)
    names = [values.get("ID", "").lower(), *values.get("ID_LIKE", "").lower().split()]
    for family in FAMILIES:
        if names[0] == family:
            return family
    for family in FAMILIES:
        if family in names:
            return family
    return None
