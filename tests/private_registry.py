"""A private registry, configuration and VM runtime folder for tests that run the `pywsl` command."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["private_environment"]

WSLCONFIG = "[general]\ninstanceIdleTimeout=120000\n[wsl2]\nvmIdleTimeout=120000\n"


def private_environment(folder: Path, repository: Path) -> dict[str, str]:
    """The environment of a `pywsl` run whose registry, configuration (idle stops after two
    minutes) and VM runtime folder all lie in `folder`, with the package from `repository`."""
    runtime = folder / "run"
    for path in (folder / "home", folder / "config" / "pywsl", runtime):
        path.mkdir(parents=True)
    os.chmod(runtime, 0o700)
    (folder / "config" / "pywsl" / "wslconfig").write_text(WSLCONFIG)
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(folder / "home"),
        "XDG_DATA_HOME": str(folder / "data"),
        "XDG_CONFIG_HOME": str(folder / "config"),
        "PYWSL_RUNTIME_ROOT": str(runtime),
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(repository),
    }
