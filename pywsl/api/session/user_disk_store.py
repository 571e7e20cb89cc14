"""The disks a user attached with `--mount`, kept while the VM may stop: WSL's volatile `DiskMounts`.

WSL keeps every disk a user attached (and each volume mounted from it) in a volatile registry
key, and attaches and mounts them again when the utility VM starts anew after an idle stop. Here
the list is a small JSON file in the user's runtime folder (root's own, mode 0700, volatile like
the rest of `/run`); `DiskVerbs` adds to it after each attach or mount, removes a disk at
`--unmount`, and replays it when a new VM has booted. A damaged file counts as empty.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["STORE_NAME", "UserDiskStore"]

STORE_NAME = "disks.json"
MAX_ENTRIES = 256


class UserDiskStore:
    """Entries: `{"disk", "vhd", "name" ("" when only attached), "partition", "type", "options"}`."""

    def __init__(self, runtime_dir: Path) -> None:
        self.path = runtime_dir / STORE_NAME

    def entries(self) -> list[dict[str, Any]]:
        try:
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
            with os.fdopen(os.open(self.path, flags), "rb") as handle:
                data = json.loads(handle.read(1 << 20))
        except (OSError, ValueError):
            return []
        if not isinstance(data, list):
            return []
        return [entry for entry in data if _valid(entry)][:MAX_ENTRIES]

    def add(self, entry: dict[str, Any]) -> None:
        kept = [old for old in self.entries() if (old["disk"], old["name"]) != (entry["disk"], entry["name"])]
        self._write([*kept, entry])

    def remove(self, disk: str | None) -> None:
        """Forget `disk` (every disk for None)."""
        self._write([] if disk is None else [entry for entry in self.entries() if entry["disk"] != disk])

    def _write(self, entries: list[dict[str, Any]]) -> None:
        if not self.path.parent.is_dir():
            return  # no runtime folder: no VM was ever started, nothing to keep
        if not entries:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            return
        partial = self.path.with_name(f".{STORE_NAME}.{os.getpid()}")
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        with os.fdopen(os.open(partial, flags, 0o600), "w") as handle:
            json.dump(entries[:MAX_ENTRIES], handle)
        os.replace(partial, self.path)


def _valid(entry: Any) -> bool:
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("disk"), str)
        and isinstance(entry.get("vhd"), bool)
        and isinstance(entry.get("name"), str)
        and isinstance(entry.get("partition"), int)
        and isinstance(entry.get("type"), str)
        and isinstance(entry.get("options"), str)
    )
