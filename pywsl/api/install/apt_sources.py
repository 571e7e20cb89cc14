"""apt sources: the host's (which mirror to build from) and the ones a built image gets.

The host's configuration is read from `/etc/apt/sources.list`, `sources.list.d/*.list` (one-line
`deb` entries) and `sources.list.d/*.sources` (deb822 stanzas). A distribution built here uses the
host's mirror for its vendor (the first enabled `deb` source naming one of the vendor's suites) and
the host's security mirror (the source naming `<suite>-security`); without one, the vendor's
default mirrors. The image then gets the apt sources of the vendor's official image, on those
mirrors: Debian's `<suite>`, `<suite>-updates` and `<suite>-security` with `main`; Ubuntu's
`<suite>`, `<suite>-updates`, `<suite>-backports` and `<suite>-security` with `main restricted
universe multiverse` (deb822, as in Debian 12 and Ubuntu 24.04).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pywsl.api.install.manifest import host_architecture

__all__ = [
    "DEFAULT_DEBIAN_MIRROR",
    "DEFAULT_DEBIAN_SECURITY_MIRROR",
    "DEFAULT_UBUNTU_MIRROR",
    "DEFAULT_UBUNTU_PORTS_MIRROR",
    "DEFAULT_UBUNTU_SECURITY_MIRROR",
    "AptSource",
    "host_apt_sources",
    "image_sources",
    "mirror_for",
    "parse_deb822_sources",
    "parse_one_line_sources",
    "security_mirror_for",
]

DEFAULT_DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEFAULT_DEBIAN_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
DEFAULT_UBUNTU_MIRROR = "http://archive.ubuntu.com/ubuntu"
DEFAULT_UBUNTU_SECURITY_MIRROR = "http://security.ubuntu.com/ubuntu"
DEFAULT_UBUNTU_PORTS_MIRROR = "http://ports.ubuntu.com/ubuntu-ports"

DEBIAN_SUITES = frozenset(
    {
        "buster",
        "bullseye",
        "bookworm",
        "trixie",
        "forky",
        "sid",
        "oldoldstable",
        "oldstable",
        "stable",
        "testing",
        "unstable",
    }
)
UBUNTU_SUITES = frozenset({"focal", "jammy", "noble", "oracular", "plucky", "questing", "devel"})
_UNRELEASED = frozenset({"sid", "unstable"})  # no -updates or -security suites
_COMPONENTS = {"debian": "main", "ubuntu": "main restricted universe multiverse"}
_POCKETS = {"debian": ("", "-updates"), "ubuntu": ("", "-updates", "-backports")}


@dataclass(frozen=True)
class AptSource:
    """One `deb` source: where, which suites, which components."""

    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]


def parse_one_line_sources(text: str) -> list[AptSource]:
    """`deb [options] uri suite [component...]` lines (sources.list and *.list)."""
    result: list[AptSource] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        line = re.sub(r"\[[^\]]*\]", " ", line)  # options
        fields = line.split()
        if len(fields) < 3 or fields[0] != "deb":
            continue
        result.append(AptSource(fields[1], (fields[2],), tuple(fields[3:])))
    return result


def parse_deb822_sources(text: str) -> list[AptSource]:
    """Stanzas of a deb822 `*.sources` file (`Types`, `URIs`, `Suites`, `Components`, `Enabled`)."""
    result: list[AptSource] = []
    for stanza in _deb822_stanzas(text):
        if "deb" not in stanza.get("types", "").split():
            continue
        if stanza.get("enabled", "yes").strip().lower() in ("no", "false", "0"):
            continue
        suites = tuple(stanza.get("suites", "").split())
        components = tuple(stanza.get("components", "").split())
        result.extend(AptSource(uri, suites, components) for uri in stanza.get("uris", "").split())
    return result


def _deb822_stanzas(text: str) -> list[dict[str, str]]:
    """The fields of each stanza (keys in lower case, continuation lines joined with a space);
    blank lines separate stanzas, `#` lines are comments."""
    stanzas: list[dict[str, str]] = [{}]
    last: str | None = None
    for raw in text.splitlines():
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if stanzas[-1]:
                stanzas.append({})
            last = None
        elif raw[0] in " \t" and last is not None:
            stanzas[-1][last] += " " + raw.strip()
        else:
            key, sep, value = raw.partition(":")
            if sep:
                last = key.strip().lower()
                stanzas[-1][last] = value.strip()
    return stanzas


def host_apt_sources(root: Path = Path("/etc/apt")) -> list[AptSource]:
    """Every enabled `deb` source of the host, in apt's order."""
    result: list[AptSource] = []
    with contextlib.suppress(OSError):
        result += parse_one_line_sources((root / "sources.list").read_text(errors="replace"))
    try:
        names = sorted(os.listdir(root / "sources.list.d"))
    except OSError:
        names = []
    for name in names:
        path = root / "sources.list.d" / name
        try:
            if name.endswith(".list"):
                result += parse_one_line_sources(path.read_text(errors="replace"))
            elif name.endswith(".sources"):
                result += parse_deb822_sources(path.read_text(errors="replace"))
        except OSError:
            continue
    return result


def _suite_parts(suite: str) -> tuple[str, str]:
    """("bookworm", "-security") for "bookworm-security", ("noble", "") for "noble"."""
    lowered = suite.lower()
    if lowered.endswith("/updates"):  # Debian 10 and older name their security suite "buster/updates"
        return lowered.removesuffix("/updates"), "-security"
    base, sep, pocket = lowered.partition("-")
    return base, sep + pocket


def _usable(uri: str) -> bool:
    return uri.startswith(("http://", "https://", "file:/"))


def _known_suites(vendor: str) -> frozenset[str]:
    return DEBIAN_SUITES if vendor == "debian" else UBUNTU_SUITES


def mirror_for(vendor: str, sources: Iterable[AptSource], machine: str | None = None) -> str:
    """The host's mirror for `vendor` ("debian"/"ubuntu"), or the vendor's default mirror."""
    known = _known_suites(vendor)
    for source in sources:
        if not _usable(source.uri) or "security" in source.uri:
            continue
        if any(base in known and pocket != "-security" for base, pocket in map(_suite_parts, source.suites)):
            return source.uri.rstrip("/")
    if vendor == "debian":
        return DEFAULT_DEBIAN_MIRROR
    return DEFAULT_UBUNTU_MIRROR if host_architecture(machine) == "Amd64" else DEFAULT_UBUNTU_PORTS_MIRROR


def security_mirror_for(vendor: str, sources: Iterable[AptSource], machine: str | None = None) -> str:
    """The host's mirror of `vendor`'s security suites, or the vendor's default security mirror."""
    known = _known_suites(vendor)
    for source in sources:
        if not _usable(source.uri):
            continue
        if any(base in known and pocket == "-security" for base, pocket in map(_suite_parts, source.suites)):
            return source.uri.rstrip("/")
    if vendor == "debian":
        return DEFAULT_DEBIAN_SECURITY_MIRROR
    return (
        DEFAULT_UBUNTU_SECURITY_MIRROR
        if host_architecture(machine) == "Amd64"
        else DEFAULT_UBUNTU_PORTS_MIRROR
    )


def _stanza(uri: str, suites: Iterable[str], components: str, signed_by: str | None) -> str:
    lines = ["Types: deb", f"URIs: {uri}", f"Suites: {' '.join(suites)}", f"Components: {components}"]
    if signed_by is not None:
        lines.append(f"Signed-By: {signed_by}")
    return "\n".join(lines) + "\n"


def image_sources(
    vendor: str, suite: str, mirror: str, security_mirror: str, signed_by: str | None = None
) -> str:
    """The deb822 `sources.list.d` file of the vendor's official image for `suite`, on these mirrors."""
    components = _COMPONENTS[vendor]
    if suite in _UNRELEASED:
        return _stanza(mirror, (suite,), components, signed_by)
    main = _stanza(mirror, [suite + pocket for pocket in _POCKETS[vendor]], components, signed_by)
    security = _stanza(security_mirror, (suite + "-security",), components, signed_by)
    return main + "\n" + security
