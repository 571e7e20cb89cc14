"""The rules of `paths` on plain strings: where a user's data folder and VM runtime folder are.

`paths.user_paths` gives them as `pathlib.Path`s in a `UserPaths`; a launch (which loads neither
`pathlib` nor `typing`) takes the same strings from here, and `paths` builds on these functions.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "APP_FOLDER",
    "DEFAULT_RUNTIME_ROOT",
    "RUNTIME_ROOT_ENV",
    "data_folder",
    "runtime_folder",
    "xdg_folder",
]

RUNTIME_ROOT_ENV = "PYWSL_RUNTIME_ROOT"
DEFAULT_RUNTIME_ROOT = "/run/pywsl"
APP_FOLDER = "pywsl"
SERVICE_SOCKET_ENV = "PYWSL_SERVICE_SOCKET"
SERVICE_SOCKET_NAME = "service.sock"
DEFAULT_SERVICE_SOCKET = f"{DEFAULT_RUNTIME_ROOT}/{SERVICE_SOCKET_NAME}"


def runtime_root(environ: Mapping[str, str] | None = None) -> str:
    """`/run/pywsl`, or `$PYWSL_RUNTIME_ROOT` when set to an absolute path (tests, custom setups)."""
    env = os.environ if environ is None else environ
    value = env.get(RUNTIME_ROOT_ENV, "")
    return value if value and os.path.isabs(value) else DEFAULT_RUNTIME_ROOT


def runtime_folder(uid: int) -> str:
    """The runtime folder of `uid`'s VM (root-owned)."""
    return os.path.join(runtime_root(), str(uid))


def home_folder(home: str, environ: Mapping[str, str] | None) -> str:
    """The home folder: `$HOME` of the user's own environment when absolute, else `home`."""
    if environ is not None:
        env_home = environ.get("HOME", "")
        if env_home and os.path.isabs(env_home):
            return env_home
    return home


def xdg_folder(environ: Mapping[str, str] | None, name: str, fallback: str) -> str:
    """An XDG base directory; the specification ignores empty and relative values."""
    value = environ.get(name, "") if environ is not None else ""
    return value if value and os.path.isabs(value) else fallback


def data_folder(home: str, environ: Mapping[str, str] | None) -> str:
    """`$XDG_DATA_HOME/pywsl` (default `~/.local/share/pywsl`): the registry's folder."""
    home = home_folder(home, environ)
    return os.path.join(
        xdg_folder(environ, "XDG_DATA_HOME", os.path.join(home, ".local", "share")), APP_FOLDER
    )


def service_socket(environ: Mapping[str, str] | None = None) -> str:
    """The root service's socket: `$PYWSL_SERVICE_SOCKET`, else `service.sock` in
    `$PYWSL_RUNTIME_ROOT` (when set to an absolute path), else `/run/pywsl/service.sock`."""
    env = os.environ if environ is None else environ
    explicit = env.get(SERVICE_SOCKET_ENV)
    if explicit:
        return explicit
    runtime = env.get(RUNTIME_ROOT_ENV, "")
    if runtime and os.path.isabs(runtime):
        return os.path.join(runtime, SERVICE_SOCKET_NAME)
    return DEFAULT_SERVICE_SOCKET
