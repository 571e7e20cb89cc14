"""Installing the service's systemd units (WSL registers ``wslservice`` with the service manager).

``pywsl-service --install-units [--prefix /etc/systemd/system]`` writes ``pywsl.socket`` and
``pywsl.service`` (shipped as package data) into the prefix. The service unit runs the
interpreter doing the install (``<python> -m pywsl.api.service.server``), so it works from a virtual
environment or a user-installed Python as well as from a system package.
``--uninstall-units`` removes them again.

The socket the units listen on is the one the service and its clients would use from the
installer's environment: ``--socket``, else ``$PYWSL_SERVICE_SOCKET``, else ``service.sock`` in
``$PYWSL_RUNTIME_ROOT``, else ``/run/pywsl/service.sock``. It goes into ``pywsl.socket``
(``ListenStream=``) and, with the runtime root, into the service's environment
(``Environment=PYWSL_SERVICE_SOCKET=... PYWSL_RUNTIME_ROOT=...``).
"""

from __future__ import annotations

import os
import sys
from importlib import resources
from pathlib import Path

from pywsl.api.service import rpc
from pywsl.api.session import paths

__all__ = [
    "DEFAULT_PREFIX",
    "UNITS",
    "UnitPaths",
    "install_units",
    "run",
    "uninstall_units",
    "unit_paths",
    "unit_text",
]

DEFAULT_PREFIX = Path("/etc/systemd/system")
UNITS = ("pywsl.socket", "pywsl.service")
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+=:,@")
_SUN_PATH_MAX = 107
_ENVIRONMENT_COMMENT = "# Where the service listens and keeps its VMs' runtime folders (--install-units)."


class UnitPaths:
    """The socket path and runtime root written into the units (absolute, checked)."""

    def __init__(self, socket_path: str, runtime_root: str) -> None:
        for what, value in (("the socket path", socket_path), ("the runtime root", runtime_root)):
            if not os.path.isabs(value):
                raise ValueError(f"{what} must be absolute, not {value!r}")
            if any(character.isspace() or not character.isprintable() for character in value):
                raise ValueError(f"{what} {value!r} has blanks or control characters")
        if len(os.fsencode(socket_path)) > _SUN_PATH_MAX:
            raise ValueError(f"the socket path {socket_path!r} is longer than {_SUN_PATH_MAX} bytes")
        self.socket_path = os.path.normpath(socket_path)
        self.runtime_root = os.path.normpath(runtime_root)


def unit_paths(socket_path: str | None = None, environ: dict[str, str] | None = None) -> UnitPaths:
    """The socket (``socket_path``, or what ``rpc.socket_path`` finds) and runtime root to install."""
    env = dict(os.environ) if environ is None else environ
    return UnitPaths(socket_path or rpc.socket_path(env), str(paths.runtime_root(env)))


def _specifiers(value: str) -> str:
    """A value systemd takes literally (``%`` starts a specifier)."""
    return value.replace("%", "%%")


def _quote(word: str) -> str:
    """One word of a systemd command line."""
    if word and set(word) <= _SAFE:
        return word
    escaped = word.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
    return f'"{escaped}"'


def unit_text(name: str, executable: str, where: UnitPaths | None = None) -> str:
    """The text of unit ``name``: the service's command line runs ``executable``, both units use
    the socket and runtime root of ``where`` (by default, from the environment)."""
    if name not in UNITS:
        raise ValueError(f"unknown unit {name!r}")
    where = where or unit_paths()
    text = resources.files("pywsl.api.service").joinpath("systemd", name).read_text(encoding="utf-8")
    lines = []
    for line in text.splitlines():
        if name == "pywsl.service" and line.startswith("ExecStart="):
            command = " ".join(_quote(word) for word in (executable, "-m", "pywsl.api.service.server"))
            lines += [
                _ENVIRONMENT_COMMENT,
                f"Environment={rpc.SOCKET_ENVIRONMENT_VARIABLE}={_specifiers(where.socket_path)}",
                f"Environment={paths.RUNTIME_ROOT_ENV}={_specifiers(where.runtime_root)}",
                f"ExecStart={command}",
            ]
        elif name == "pywsl.socket" and line.startswith("ListenStream="):
            lines.append(f"ListenStream={_specifiers(where.socket_path)}")
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


def install_units(prefix: Path, executable: str, where: UnitPaths | None = None) -> list[Path]:
    """Write both units into ``prefix`` (atomically, 0644); returns the files written."""
    if not os.path.isabs(executable):
        raise ValueError(f"the interpreter must be an absolute path, not {executable!r}")
    where = where or unit_paths()
    prefix.mkdir(mode=0o755, parents=True, exist_ok=True)
    written = []
    for name in UNITS:
        target = prefix / name
        staging = prefix / f".{name}.{os.getpid()}"
        try:
            with open(staging, "x", encoding="utf-8") as file:
                file.write(unit_text(name, executable, where))
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


def run(*, uninstall: bool, prefix: str | None, executable: str, socket_path: str | None = None) -> int:
    """The ``--install-units`` / ``--uninstall-units`` command; returns the exit code."""
    folder = Path(prefix) if prefix else DEFAULT_PREFIX
    try:
        if uninstall:
            for path in uninstall_units(folder):
                print(f"removed {path}")
            print("now run: systemctl daemon-reload")
        else:
            where = unit_paths(socket_path)
            for path in install_units(folder, executable, where):
                print(f"installed {path}")
            print(f"the service will listen on {where.socket_path} (runtime root {where.runtime_root})")
            print("now run: systemctl daemon-reload && systemctl enable --now pywsl.socket")
    except (OSError, ValueError) as error:
        print(f"pywsl-service: {error}", file=sys.stderr)
        return 1
    return 0
