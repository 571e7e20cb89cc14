"""The distributions pywsl can build itself, and whether this host can build each one.

Building one (`builtin_source.build_rootfs_archive`) runs `debootstrap`, which checks the archive's
signature with `gpgv` against the vendor's keyring: Debian's from `debian-archive-keyring`, Ubuntu's
from `ubuntu-keyring`, and needs a debootstrap script for the suite (or the vendor's generic one:
`sid` for Debian, `gutsy` for Ubuntu). Every entry is listed; one this host cannot build carries the
reason, naming what to install (`apt-get install ...`), so that `--list --online` and `--install`
can say it instead of leaving the entry out. Debian 12 has `ubuntu-keyring` only in
`bookworm-backports` (Debian 13 and Ubuntu have it in their main archive), and the advice says so.

`default_builtin` is the one `--install` without a name picks when the manifest cannot be fetched:
the host's own family (Ubuntu on Ubuntu, Debian on Debian, from `/etc/os-release`), else Ubuntu,
wsl.exe's default, unless only Debian can be built here.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pywsl.api.errors import WslError
from pywsl.api.install.host_distribution import host_family, read_os_release

__all__ = [
    "DEBOOTSTRAP_SCRIPTS",
    "KEYRINGS",
    "BuiltinDistribution",
    "HostTools",
    "available_builtins",
    "builtin_catalog",
    "default_builtin",
    "find_builtin",
    "lookup_builtin",
    "require_buildable",
]

DEBOOTSTRAP_SCRIPTS = Path("/usr/share/debootstrap/scripts")
# Where each vendor's keyring package puts the archive keyring (newer releases ship `.pgp`).
KEYRINGS: Mapping[str, tuple[Path, ...]] = {
    "debian": (
        Path("/usr/share/keyrings/debian-archive-keyring.gpg"),
        Path("/usr/share/keyrings/debian-archive-keyring.pgp"),
    ),
    "ubuntu": (
        Path("/usr/share/keyrings/ubuntu-archive-keyring.gpg"),
        Path("/usr/share/keyrings/ubuntu-archive-keyring.pgp"),
    ),
}
_KEYRING_PACKAGES = {"debian": "debian-archive-keyring", "ubuntu": "ubuntu-keyring"}
_VENDOR_NAMES = {"debian": "Debian", "ubuntu": "Ubuntu"}
_GENERIC_SCRIPTS = {"debian": "sid", "ubuntu": "gutsy"}
# Host releases that carry a package only in their backports suite.
_BACKPORTED = {("bookworm", "ubuntu-keyring"): "bookworm-backports"}
_SBIN_PATH = os.pathsep.join(["/usr/sbin", "/usr/bin", "/sbin", "/bin"])


@dataclass(frozen=True)
class BuiltinDistribution:
    """One distribution pywsl can build with debootstrap."""

    name: str
    friendly_name: str
    vendor: str  # "debian" or "ubuntu"
    suite: str
    keyring: Path
    is_default: bool  # the entry the bare family name ("Debian", "Ubuntu") picks
    script: str | None = None  # debootstrap script to use when it has none named after the suite
    unavailable: str | None = None  # why this host cannot build it, and what to install


_TABLE: tuple[tuple[str, str, str, str, bool], ...] = (
    ("debian", "Debian", "Debian GNU/Linux 12 (bookworm), built locally", "bookworm", True),
    ("debian", "Debian-11", "Debian GNU/Linux 11 (bullseye), built locally", "bullseye", False),
    ("debian", "Debian-12", "Debian GNU/Linux 12 (bookworm), built locally", "bookworm", False),
    ("debian", "Debian-13", "Debian GNU/Linux 13 (trixie), built locally", "trixie", False),
    ("ubuntu", "Ubuntu", "Ubuntu 24.04 LTS, built locally", "noble", True),
    ("ubuntu", "Ubuntu-22.04", "Ubuntu 22.04 LTS, built locally", "jammy", False),
    ("ubuntu", "Ubuntu-24.04", "Ubuntu 24.04 LTS, built locally", "noble", False),
)


def _which(program: str) -> str | None:
    return shutil.which(program, path=os.pathsep.join([os.environ.get("PATH", ""), _SBIN_PATH]))


@dataclass(frozen=True)
class HostTools:
    """What a build needs from the host; `detect()` looks at this host, tests give their own."""

    debootstrap: str | None
    gpgv: str | None
    keyrings: Mapping[str, tuple[Path, ...]] = field(default_factory=lambda: dict(KEYRINGS))
    scripts: Path = DEBOOTSTRAP_SCRIPTS
    codename: str = ""  # the host's VERSION_CODENAME, for the install advice

    @classmethod
    def detect(cls, os_release: Path | None = None) -> HostTools:
        codename = read_os_release(os_release).get("VERSION_CODENAME", "")
        return cls(debootstrap=_which("debootstrap"), gpgv=_which("gpgv"), codename=codename)

    def keyring(self, vendor: str) -> Path | None:
        """The vendor's archive keyring on this host, if one is installed."""
        return next((path for path in self.keyrings.get(vendor, ()) if path.is_file()), None)


def _advice(packages: list[str], codename: str) -> str:
    """The apt-get command line(s) that install `packages` on a host of release `codename`."""
    wanted = list(dict.fromkeys(packages))
    backported = [
        (package, _BACKPORTED[(codename, package)])
        for package in wanted
        if (codename, package) in _BACKPORTED
    ]
    plain = [package for package in wanted if (codename, package) not in _BACKPORTED]
    commands = [f"'apt-get install {' '.join(plain)}'"] if plain else []
    commands += [f"'apt-get install -t {suite} {package}'" for package, suite in backported]
    advice = "run " + " and ".join(commands)
    suites = sorted({suite for _, suite in backported})
    if suites:
        advice += f" ({' and '.join(suites)} must be among apt's sources)"
    return advice


def _reason(missing: list[str], packages: list[str], codename: str) -> str | None:
    if not missing:
        return None
    verb = "is" if len(missing) == 1 else "are"
    return f"{' and '.join(missing)} {verb} not installed; {_advice(packages, codename)}"


def _entry(
    tools: HostTools, vendor: str, name: str, friendly: str, suite: str, default: bool
) -> BuiltinDistribution:
    missing: list[str] = []
    packages: list[str] = []
    if tools.debootstrap is None:
        missing.append("debootstrap")
        packages.append("debootstrap")
    if tools.gpgv is None:
        missing.append("gpgv (debootstrap checks the archive's signature with it)")
        packages.append("gpgv")
    keyring = tools.keyring(vendor)
    if keyring is None:
        expected = tools.keyrings.get(vendor, KEYRINGS[vendor])[0]
        missing.append(f"the {_VENDOR_NAMES[vendor]} archive keyring ({expected})")
        packages.append(_KEYRING_PACKAGES[vendor])
    script: str | None = None
    if tools.debootstrap is not None and not (tools.scripts / suite).exists():
        generic = tools.scripts / _GENERIC_SCRIPTS[vendor]
        if generic.exists():
            script = str(generic)
        else:
            missing.append(f"a debootstrap script for {suite}")
            packages.append("debootstrap")
    chosen = keyring if keyring is not None else tools.keyrings.get(vendor, KEYRINGS[vendor])[0]
    return BuiltinDistribution(
        name, friendly, vendor, suite, chosen, default, script, _reason(missing, packages, tools.codename)
    )


def builtin_catalog(tools: HostTools | None = None) -> list[BuiltinDistribution]:
    """Every built-in distribution, each with the reason this host cannot build it (None: it can)."""
    found = tools if tools is not None else HostTools.detect()
    return [_entry(found, *row) for row in _TABLE]


def available_builtins(tools: HostTools | None = None) -> list[BuiltinDistribution]:
    """The built-in distributions this host can build."""
    return [entry for entry in builtin_catalog(tools) if entry.unavailable is None]


def lookup_builtin(
    name: str, entries: Iterable[BuiltinDistribution] | None = None
) -> BuiltinDistribution | None:
    """The catalog entry with that name (case-insensitive), buildable here or not."""
    wanted = name.casefold()
    for entry in builtin_catalog() if entries is None else entries:
        if entry.name.casefold() == wanted:
            return entry
    return None


def find_builtin(
    name: str, entries: Iterable[BuiltinDistribution] | None = None
) -> BuiltinDistribution | None:
    """The built-in entry with that name (case-insensitive) when this host can build it."""
    entry = lookup_builtin(name, available_builtins() if entries is None else entries)
    return entry if entry is not None and entry.unavailable is None else None


def default_builtin(
    entries: Iterable[BuiltinDistribution] | None = None, *, os_release: Path | None = None
) -> BuiltinDistribution:
    """What `--install` picks without a name from the built-in source (see the module's text)."""
    catalog = list(builtin_catalog() if entries is None else entries)
    defaults = {entry.vendor: entry for entry in catalog if entry.is_default}
    family = host_family(os_release)
    if family not in defaults:
        buildable = [
            vendor
            for vendor in ("ubuntu", "debian")
            if vendor in defaults and defaults[vendor].unavailable is None
        ]
        family = buildable[0] if buildable else "ubuntu"
    chosen = defaults.get(family) or next(iter(defaults.values()), None)
    if chosen is None:
        raise WslError("WSL_E_DISTRO_NOT_FOUND", "pywsl has no built-in distribution to install.")
    return chosen


def require_buildable(entry: BuiltinDistribution, context: str = "") -> BuiltinDistribution:
    """`entry` when this host can build it; otherwise the error saying why and what to install."""
    if entry.unavailable is None:
        return entry
    prefix = f"{context}\n" if context else ""
    raise WslError(
        "ERROR_FILE_NOT_FOUND", f"{prefix}{entry.name} cannot be built on this host: {entry.unavailable}."
    )
