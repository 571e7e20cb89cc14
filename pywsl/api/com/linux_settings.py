"""pywsl's own `.wslconfig` setting that means nothing on Windows: `[pywsl] backend`.

On Linux the key chooses pywsl's utility VM (the namespaces or the qemu backend). On Windows the
installed WslService runs WSL's own VM and reads `%USERPROFILE%\\.wslconfig` itself; the client
says once per session, as a user warning, that the choice is ignored there.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pywsl.wire.config_format import parse_config

__all__ = ["MAX_CONFIG_BYTES", "ignored_setting_warnings", "wslconfig_warnings"]

MAX_CONFIG_BYTES = 1 << 20  # a larger .wslconfig is not read for this note


def ignored_setting_warnings(text: str, source: str) -> list[str]:
    """The warning for a `[pywsl] backend` key in the configuration `text`, if it has one."""
    sections, _ = parse_config(text, source)
    entry = sections.get("pywsl", {}).get("backend")
    if entry is None:
        return []
    return [
        f"Ignored key '{entry.name}' in {source}:{entry.line}: on Windows the installed WslService "
        "runs WSL's own virtual machine"
    ]


def wslconfig_warnings(environ: Mapping[str, str]) -> list[str]:
    """`ignored_setting_warnings` of the caller's `%USERPROFILE%\\.wslconfig`; none when it is
    absent, unreadable or too large (the service reports its own problems with the file)."""
    profile = environ.get("USERPROFILE")
    if not profile:
        return []
    path = os.path.join(profile, ".wslconfig")
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_CONFIG_BYTES + 1)
    except OSError:
        return []
    if len(data) > MAX_CONFIG_BYTES:
        return []
    return ignored_setting_warnings(data.decode("utf-8", errors="replace").lstrip("\ufeff"), path)
