"""Where a user's pywsl state lives: the Linux homes of WSL's per-user places.

WSL keeps a user's registrations under `HKCU\\...\\Lxss`, their disks under `%LOCALAPPDATA%\\wsl`
and their settings in `%USERPROFILE%\\.wslconfig`. pywsl follows the XDG base directories instead:
the registry and the default install folder in `$XDG_DATA_HOME/pywsl` (default
`~/.local/share/pywsl`), the settings in `$XDG_CONFIG_HOME/pywsl/wslconfig` (or `$PYWSL_CONFIG`),
and the running VM's sockets in `/run/pywsl/<uid>`, which belongs to root.

The environment only counts for the calling user; the service, acting for another user, cannot
see that user's environment and uses the home folder from the password database.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

__all__ = [
    "CONFIG_ENV",
    "RUNTIME_ROOT_ENV",
    "UserPaths",
    "runtime_root",
    "user_paths",
]

CONFIG_ENV = "PYWSL_CONFIG"
RUNTIME_ROOT_ENV = "PYWSL_RUNTIME_ROOT"
DEFAULT_RUNTIME_ROOT = Path("/run/pywsl")
APP_FOLDER = "pywsl"


class UserPaths(NamedTuple):
    """The folders and files of one user."""

    home: Path
    data_dir: Path  # the registry and, by default, the distributions' folders
    config_file: Path  # the .wslconfig equivalent
    runtime_dir: Path  # the VM's runtime folder (root-owned)

    @property
    def registry_file(self) -> Path:
        return self.data_dir / "registry.json"


def runtime_root(environ: Mapping[str, str] | None = None) -> Path:
    """`/run/pywsl`, or `$PYWSL_RUNTIME_ROOT` when set to an absolute path (tests, custom setups)."""
    env = os.environ if environ is None else environ
    value = env.get(RUNTIME_ROOT_ENV, "")
    return Path(value) if value and os.path.isabs(value) else DEFAULT_RUNTIME_ROOT


def _xdg(environ: Mapping[str, str] | None, name: str, fallback: Path) -> Path:
    # The XDG specification ignores empty and relative values.
    value = environ.get(name, "") if environ is not None else ""
    return Path(value) if value and os.path.isabs(value) else fallback


def user_paths(uid: int, home: Path, environ: Mapping[str, str] | None = None) -> UserPaths:
    """The paths of user `uid` whose password-database home is `home`.

    `environ` is the user's own environment when the caller *is* that user (the in-process
    session); pass None for a user whose environment is unknown (the service acting for them).
    """
    if environ is not None:
        env_home = environ.get("HOME", "")
        if env_home and os.path.isabs(env_home):
            home = Path(env_home)
    data_home = _xdg(environ, "XDG_DATA_HOME", home / ".local" / "share")
    config_home = _xdg(environ, "XDG_CONFIG_HOME", home / ".config")
    config_file = config_home / APP_FOLDER / "wslconfig"
    if environ is not None:
        override = environ.get(CONFIG_ENV, "")
        if override:
            config_file = Path(os.path.abspath(override))
    return UserPaths(
        home=home,
        data_dir=data_home / APP_FOLDER,
        config_file=config_file,
        runtime_dir=runtime_root() / str(uid),
    )
