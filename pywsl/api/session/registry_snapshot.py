"""One installed registration read for a launch, without the registry's machinery.

`Registry` (`registry.py`) reads and writes the user's `registry.json` inside flocked transactions,
recovers what a crashed operation left and validates every entry into `Registration`s; it loads
`json`, `uuid`, `pathlib`, `re` and `enum` to do so, more than a warm `pywsl -d D -- cmd` spends on
its round trips to the VM. A launch only reads one entry, and the file is only ever replaced by a
rename (`Registry._store`), so it can be read without the lock: this module opens it as `Registry`
does (no link, a regular file, a size limit), parses it with the `json` module's own C scanner
(`lean_json`, without the `re` patterns of `json.decoder`) and takes the entry the launch names (or
the default one) only when it is plainly usable: State Installed, a folder rather than a disk, no
move under way, no operation lock, every value it uses of the right type. Anything else, from a
missing file to a duplicate name, is None: the caller then takes the full path, which recovers,
decides and reports exactly as every other verb does. What is read here is never written back.
"""

from __future__ import annotations

import os
import stat

from pywsl.api.lean_json import loads
from pywsl.api.session.registry_values import FS_VERSION, STATE_INSTALLED, entry_values

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["REGISTRY_FILE_NAME", "LaunchRegistration", "read_registration"]

REGISTRY_FILE_NAME = "registry.json"
LOCKS_FOLDER_NAME = "locks"  # operation locks: `locks/<guid>.lock` while one runs
MAX_REGISTRY_BYTES = 16 * 1024 * 1024
_FORMAT = 1
_HEX = frozenset("0123456789abcdef")


class LaunchRegistration:
    """What a launch uses of one installed registration."""

    __slots__ = ("base_path", "default_environment", "default_uid", "flavor", "guid", "name", "os_version")

    def __init__(
        self,
        guid: str,
        name: str,
        base_path: str,
        default_uid: int,
        default_environment: list[str],
        flavor: str,
        os_version: str,
    ) -> None:
        self.guid = guid  # canonical: lower case, no braces
        self.name = name
        self.base_path = base_path
        self.default_uid = default_uid
        self.default_environment = default_environment
        self.flavor = flavor
        self.os_version = os_version

    def __repr__(self) -> str:
        return f"LaunchRegistration(name={self.name!r}, guid={self.guid!r}, base_path={self.base_path!r})"


def read_registration(data_dir: str, name: str | None) -> LaunchRegistration | None:
    """The installed registration called `name` (case-insensitive; None: the default one) in the
    registry of `data_dir`, or None when the full path must decide.

    Every entry is checked as the registry checks it (`registry_values.entry_values`), and any entry
    the registry would set aside, or any key not written as the registry writes GUIDs, leaves the
    decision to the full path: which entry it finds (or takes as the default) depends on them."""
    document = _load(os.path.join(data_dir, REGISTRY_FILE_NAME))
    if not isinstance(document, dict) or document.get("Format") != _FORMAT:
        return None
    entries = document.get("Distributions")
    if not isinstance(entries, dict):
        return None
    installed: dict[str, dict[str, Any]] = {}
    for key, entry in entries.items():
        guid = _canonical_guid(key)
        try:
            values = entry_values(entry, [])
        except ValueError:
            return None
        if guid is None:
            return None
        if values["state"] == STATE_INSTALLED:
            installed[guid] = values
    if name is None:
        chosen = [_canonical_guid(document.get("DefaultDistribution"))]
    else:
        wanted = name.casefold()
        chosen = [guid for guid, values in installed.items() if values["name"].casefold() == wanted]
    if len(chosen) != 1 or chosen[0] not in installed:
        return None
    guid = chosen[0]
    registration = _usable(guid, installed[guid], entries["{" + guid + "}"])
    if registration is None or _locked(data_dir, guid):
        return None
    return registration


def _load(path: str) -> object:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_REGISTRY_BYTES:
            return None
        raw = os.read(fd, info.st_size + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        return loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None


def _usable(guid: str, values: dict[str, Any], entry: dict[str, Any]) -> LaunchRegistration | None:
    """The entry as a launch uses it, when it is plainly a folder the launch can start: no move
    under way, no disk, the current file system version and a default environment of its own (the
    registry's default for a missing one depends on the host: the full path fills it in)."""
    if (
        values["move_target"]
        or values["vhd_file_name"]
        or values["version"] != FS_VERSION
        or "DefaultEnvironment" not in entry
    ):
        return None
    return LaunchRegistration(
        guid,
        values["name"],
        values["base_path"],
        values["default_uid"],
        values["default_environment"],
        values["flavor"],
        values["os_version"],
    )


def _canonical_guid(key: object) -> str | None:
    """The GUID of a registry key written as `{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}` (lower case)."""
    if not isinstance(key, str) or len(key) != 38 or key[0] != "{" or key[-1] != "}":
        return None
    guid = key[1:-1]
    groups = guid.split("-")
    if [len(group) for group in groups] != [8, 4, 4, 4, 12] or not _HEX.issuperset(guid.replace("-", "")):
        return None
    return guid


def _locked(data_dir: str, guid: str) -> bool:
    """Whether an operation (install, export, move, uninstall) may be running on the distribution."""
    try:
        os.lstat(os.path.join(data_dir, LOCKS_FOLDER_NAME, f"{guid}.lock"))
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return True
