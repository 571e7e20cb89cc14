"""Debian root filesystems built with debootstrap from the host's Debian mirror.

On a Debian host the mirror comes from apt's own sources (deb822 ``URIs:`` or one-line ``deb``
entries naming a Debian suite); on any other host (Ubuntu's archive has no Debian suites) it is
Debian's default mirror.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

DEFAULT_MIRROR = "http://deb.debian.org/debian"
_DEBIAN_SUITES = ("bookworm", "trixie", "bullseye", "sid", "stable", "testing", "unstable")


def _sources() -> tuple[list[str], list[str]]:
    deb822: list[str] = []
    one_line: list[str] = []
    folder = Path("/etc/apt/sources.list.d")
    files = sorted(folder.glob("*.sources")) if folder.is_dir() else []
    for path in files:
        deb822.append(path.read_text(errors="replace"))
    for path in [Path("/etc/apt/sources.list"), *(sorted(folder.glob("*.list")) if folder.is_dir() else [])]:
        if path.is_file():
            one_line.extend(path.read_text(errors="replace").splitlines())
    return deb822, one_line


def debian_mirror() -> str:
    """The host's Debian mirror for the main archive (not the security archive)."""
    deb822, one_line = _sources()
    for text in deb822:
        for stanza in re.split(r"\n\s*\n", text):
            fields: dict[str, str] = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.MULTILINE))
            suites = fields.get("Suites", "").split()
            if fields.get("Enabled", "yes").lower() == "no":
                continue
            if any(suite in _DEBIAN_SUITES for suite in suites):
                for uri in fields.get("URIs", "").split():
                    if "security" not in uri:
                        return uri.rstrip("/")
    for line in one_line:
        words = re.sub(r"\[[^\]]*\]", "", line.split("#", 1)[0]).split()
        if (
            len(words) >= 3
            and words[0] == "deb"
            and words[2] in _DEBIAN_SUITES
            and "security" not in words[1]
        ):
            return words[1].rstrip("/")
    return DEFAULT_MIRROR


def debootstrap(
    target: Path,
    *,
    suite: str = "bookworm",
    variant: str = "minbase",
    include: Sequence[str] = (),
    timeout: float = 900,
) -> subprocess.CompletedProcess[str]:
    """``debootstrap`` into ``target`` from the host's Debian mirror; the completed process."""
    command = ["debootstrap", f"--variant={variant}"]
    if include:
        command.append("--include=" + ",".join(include))
    command += [suite, str(target), debian_mirror()]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
