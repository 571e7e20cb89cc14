"""One base folder per test run, for what `tmp_path` cannot hold.

`tmp_path` lies under a folder only root can enter and has long names; a VM's runtime folder needs
a short path (its sockets' names are limited to 107 bytes) and some folders must be reachable by
the unprivileged users the multi-user tests create. Such folders are made under this run's base
folder (`/tmp/pywsl-run-XXXXXXXX`, mode 0711), never at fixed paths, and the base folder is removed
when the run ends — unless something is still mounted below it, which is then reported instead of
being deleted through.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

_base: Path | None = None
_creator = 0


def run_base() -> Path:
    """This run's base folder (created on first use)."""
    global _base, _creator
    if _base is None:
        _base = Path(tempfile.mkdtemp(prefix="pywsl-run-", dir="/tmp"))
        _base.chmod(0o711)
        _creator = os.getpid()
        atexit.register(_remove)
    return _base


def run_folder(prefix: str) -> Path:
    """A new folder below this run's base folder (mode 0700, as `mkdtemp` makes it)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir=run_base()))


def _mounts_below(base: Path) -> list[str]:
    prefix = f"{base}/"
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as table:
        points = [line.split()[4] for line in table]
    return [point for point in points if point == str(base) or point.startswith(prefix)]


def _remove() -> None:
    if _base is None or os.getpid() != _creator:  # a forked child leaving: not its folder
        return
    mounted = _mounts_below(_base)
    if mounted:
        print(f"left {_base}: still mounted below it: {', '.join(mounted)}", file=sys.stderr)
        return
    shutil.rmtree(_base, ignore_errors=True)
