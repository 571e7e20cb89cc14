"""The values of one registry entry, checked: the one rule for `Registry` and the launch's snapshot.

`Registration.from_json` (`registry.py`) turns a checked entry into a `Registration` (paths,
states); `registry_snapshot` reads one entry for a warm launch without loading `registry.py`
(`re`, `enum`, `uuid`, `pathlib`). Both call `entry_values`, so an entry the registry sets aside as
unreadable is never launched by the snapshot either. Plain values only here: nothing is imported.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "FLAGS_ALL",
    "FLAGS_DEFAULT",
    "FS_VERSION",
    "LEGACY_NAME",
    "LX_UID_INVALID",
    "NAME_MAX",
    "PERSISTED_STATES",
    "STATE_INSTALLED",
    "entry_values",
    "valid_name",
]

FLAGS_DEFAULT = 0x7  # LXSS_DISTRO_FLAGS_DEFAULT
FLAGS_ALL = 0xF  # LXSS_DISTRO_FLAGS_ALL
LX_UID_INVALID = 0xFFFFFFFF
FS_VERSION = 2  # LXSS_DISTRO_VERSION_2
NAME_MAX = 256  # LX_INIT_DISTRO_NAME_MAX
LEGACY_NAME = "Legacy"
STATE_INSTALLED = 1  # LxssDistributionState: Installed
PERSISTED_STATES = (1, 3, 4)  # the states ever stored: Installed, Installing, Uninstalling
_STATE_MAX = 6
_TEXT_LIMIT = 4096
_FILE_NAME_LIMIT = 255
_ENVIRONMENT_LIMIT = 1024
_NAME_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")


def valid_name(name: object) -> bool:
    """WSL's rule for a distribution name: `^[a-zA-Z0-9._-]{1,256}$` and not "Legacy" (any case)."""
    return (
        isinstance(name, str)
        and 0 < len(name) <= NAME_MAX
        and _NAME_CHARACTERS.issuperset(name)
        and name.casefold() != LEGACY_NAME.casefold()
    )


def entry_values(data: object, default_environment: list[str] | None) -> dict[str, Any]:
    """Every value of one entry, checked (ValueError names the bad one): text without NUL within its
    limit, integers (never booleans) within their range, an absolute `BasePath`, a stored state,
    a valid name (required when Installed), a file name for `VhdFileName`, an absolute or empty
    `MoveTarget`, NAME=value strings for `DefaultEnvironment` (`default_environment` when the entry
    has none; None: the entry must have one)."""
    if not isinstance(data, dict):
        raise ValueError("not an object")
    name = _text(data, "DistributionName", limit=NAME_MAX)
    state = _number(data, "State", None, 0, _STATE_MAX)
    if state not in PERSISTED_STATES:
        raise ValueError(f"State {state} is never stored")
    if (name or state == STATE_INSTALLED) and not valid_name(name):
        raise ValueError(f"invalid distribution name {name!r}" if name else "DistributionName is missing")
    base_path = _text(data, "BasePath")
    if not base_path.startswith("/"):
        raise ValueError("BasePath must be absolute")
    move_target = _text(data, "MoveTarget", "")
    if move_target and not move_target.startswith("/"):
        raise ValueError("MoveTarget must be absolute")
    vhd_file_name = _text(data, "VhdFileName", "", limit=_FILE_NAME_LIMIT)
    if vhd_file_name in (".", "..") or "/" in vhd_file_name:
        raise ValueError("VhdFileName must be a file name")
    return {
        "name": name,
        "state": state,
        "base_path": base_path,
        "version": _number(data, "Version", FS_VERSION, 0, 2),
        "flags": _number(data, "Flags", FLAGS_DEFAULT, 0, FLAGS_ALL),
        "default_uid": _number(data, "DefaultUid", 0, 0, LX_UID_INVALID - 1),
        "default_environment": _environment(data, default_environment),
        "run_oobe": _number(data, "RunOOBE", 0, 0, 1),
        "flavor": _text(data, "Flavor", ""),
        "os_version": _text(data, "OsVersion", ""),
        "modern": _number(data, "Modern", 1, 0, 1),
        "package_family_name": _text(data, "PackageFamilyName", ""),
        "created_base_path": _number(data, "CreatedBasePath", 0, 0, 1),
        "move_target": move_target,
        "vhd_file_name": vhd_file_name,
        "sparse": _number(data, "Sparse", 1, 0, 1),
    }


def _text(data: dict[str, Any], key: str, default: str | None = None, limit: int = _TEXT_LIMIT) -> str:
    """A stored string of at most `limit` characters, without NUL."""
    value = data.get(key, default)
    if not isinstance(value, str) or len(value) > limit or "\0" in value:
        raise ValueError(f"{key} must be a string")
    return value


def _number(data: dict[str, Any], key: str, default: int | None, low: int, high: int) -> int:
    """A stored integer (never a boolean) in `low`..`high`."""
    value = data.get(key, default)
    if type(value) is not int or not low <= value <= high:
        raise ValueError(f"{key} must be an integer in {low}..{high}")
    return value


def _environment(data: dict[str, Any], default: list[str] | None) -> list[str]:
    """The default environment: at most 1024 NAME=value strings."""
    if "DefaultEnvironment" not in data and default is None:
        raise ValueError("DefaultEnvironment is missing")
    environment = data.get("DefaultEnvironment", default)
    if (
        not isinstance(environment, list)
        or len(environment) > _ENVIRONMENT_LIMIT
        or not all(isinstance(item, str) and "=" in item and "\0" not in item for item in environment)
    ):
        raise ValueError("DefaultEnvironment must be a list of NAME=value strings")
    return list(environment)
