"""Installing the service's systemd units (WSL registers ``wslservice`` with the service manager).

``pywsl-service --install-units [--prefix /etc/systemd/system]`` writes ``pywsl.socket`` and
``pywsl.service`` (shipped as package data) into the prefix. The service unit runs the
interpreter doing the install (``<python> -m pywsl.api.service``), so it works from a virtual
environment or a user-installed Python as well as from a system package.
``--uninstall-units`` removes them again.
"""

from __future__ import annotations

import os
import sys
from importlib import resources
from pathlib import Path

__all__ = ["DEFAULT_PREFIX", "UNITS", "install_units", "run", "uninstall_units", "unit_text"]

DEFAULT_PREFIX = Path("/etc/systemd/system")
UNITS = ("pywsl.socket", "pywsl.service")
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+=:,@")


def _quote(word: str) -> str:
    """One word of a systemd command line."""
    if word and set(word) <= _SAFE:
        return word
    escaped = word.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
    return f'"{escaped}"'


def unit_text(name: str, executable: str) -> str:
    """The text of unit ``name``, with the service's command line pointing at ``executable``."""
    if name not in UNITS:
        raise ValueError(f"unknown unit {name!r}")
    text = resources.files("pywsl.api").joinpath("systemd", name).read_text(encoding="utf-8")
    if name == "pywsl.service":
        command = " ".join(_quote(word) for word in (executable, "-m", "pywsl.api.service"))
        lines = [
            f"ExecStart={command}" if line.startswith("ExecStart=") else line for line in text.splitlines()
        ]
        text = "\n".join(lines) + "\n"
    return text


def install_units(prefix: Path, executable: str) -> list[Path]:
    """Write both units into ``prefix`` (atomically, 0644); returns the files written."""
    if not os.path.isabs(executable):
        raise ValueError(f"the interpreter must be an absolute path, not {executable!r}")
    prefix.mkdir(mode=0o755, parents=True, exist_ok=True)
    written = []
    for name in UNITS:
        target = prefix / name
        staging = prefix / f".{name}.{os.getpid()}"
        try:
            with open(staging, "x", encoding="utf-8") as file:
                file.write(unit_text(name, executable))
            os.chmod(staging, 0o644)
            os.replace(staging, target)
        finally:
            if staging.exists():
                staging.unlink()
        written.append(target)
    return written


def uninstall_units(prefix: Path) -> list[Path]:
    """Remove both units from ``prefix``; returns the files removed."""
    removed = []
    for name in UNITS:
        target = prefix / name
        try:
            target.unlink()
        except FileNotFoundError:
            continue
        removed.append(target)
    return removed


def run(*, uninstall: bool, prefix: str | None, executable: str) -> int:
    """The ``--install-units`` / ``--uninstall-units`` command; returns the exit code."""
    folder = Path(prefix) if prefix else DEFAULT_PREFIX
    try:
        if uninstall:
            for path in uninstall_units(folder):
                print(f"removed {path}")
            print("now run: systemctl daemon-reload")
        else:
            for path in install_units(folder, executable):
                print(f"installed {path}")
            print("now run: systemctl daemon-reload && systemctl enable --now pywsl.socket")
    except (OSError, ValueError) as error:
        print(f"pywsl-service: {error}", file=sys.stderr)
        return 1
    return 0
