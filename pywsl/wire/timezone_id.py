"""What ``Initialize.Timezone`` may hold: an IANA time zone id, checked by both ends.

The host sends the id (``pywsl.vm.timezone``) and the distribution's init links
``/usr/share/zoneinfo/<id>`` (``pywsl.guest.timezone``). The id crosses the VM boundary, so it
must name a file below the zoneinfo folder and nothing else: relative, no ``.`` or ``..``
component, no empty component, no characters outside the tz database's own.
"""

from __future__ import annotations

import re

__all__ = ["MAX_TIMEZONE_LENGTH", "valid_timezone"]

MAX_TIMEZONE_LENGTH = 255
_COMPONENT = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9_.+-]*")


def valid_timezone(name: str) -> bool:
    """An IANA id usable below the zoneinfo folder: relative, no ``.``/``..``, no odd characters."""
    if not name or len(name) > MAX_TIMEZONE_LENGTH:
        return False
    return all(_COMPONENT.fullmatch(part) and part not in (".", "..") for part in name.split("/"))
