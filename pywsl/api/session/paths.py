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

from pywsl.api.session import path_rules
from pywsl.api.session.registry_snapshot import REGISTRY_FILE_NAME

TYPE_CHECKING = False  # `typing` would cost a cold launch's boot its load
if TYPE_CHECKING:
    from typing import NamedTuple
else:
    from pywsl.records import NamedTuple

__all__ = [
    "CONFIG_ENV",
    "RUNTIME_ROOT_ENV",
    "UserPaths",
    "runtime_root",
    "user_paths",
]

CONFIG_ENV = "PYWSL_CONFIG"
RUNTIME_ROOT_ENV = path_rules.RUNTIME_ROOT_ENV
DEFAULT_RUNTIME_ROOT = Path(path_rules.DEFAULT_RUNTIME_ROOT)
APP_FOLDER = path_rules.APP_FOLDER


class UserPaths(NamedTuple):
    """The folders and files of one user."""

    home: Path
    data_dir: Path  # the registry and, by default, the distributions' folders
    config_file: Path  # the .wslconfig equivalent
    runtime_dir: Path  # the VM's runtime folder (root-owned)

    @property
    def registry_file(self) -> Path:
        return self.data_dir / REGISTRY_FILE_NAME


def runtime_root(environ: Mapping[str, str] | None = None) -> Path:
    """`/run/pywsl`, or `$PYWSL_RUNTIME_ROOT` when set to an absolute path (tests, custom setups)."""
    return Path(path_rules.runtime_root(environ))


def user_paths(uid: int, home: Path, environ: Mapping[str, str] | None = None) -> UserPaths:
    """The paths of user `uid` whose password-database home is `home`.

    `environ` is the user's own environment when the caller *is* that user (the in-process
    session); pass None for a user whose environment is unknown (the service acting for them).
    """
    home = Path(path_rules.home_folder(str(home), environ))
    config_home = path_rules.xdg_folder(environ, "XDG_CONFIG_HOME", str(home / ".config"))
    config_file = Path(config_home) / APP_FOLDER / "wslconfig"
    if environ is not None:
        override = environ.get(CONFIG_ENV, "")
        if override:
            config_file = Path(os.path.abspath(override))
    return UserPaths(
        home=home,
        data_dir=Path(path_rules.data_folder(str(home), environ)),
        config_file=config_file,
        runtime_dir=Path(path_rules.runtime_folder(uid)),
    )
