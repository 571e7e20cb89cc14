"""What ``Initialize.Timezone`` may hold: an IANA time zone id, checked by both ends.

The host sends the id (``pywsl.vm.timezone``) and the distribution's init links
``/usr/share/zoneinfo/<id>`` (``pywsl.guest.timezone``). The id crosses the VM boundary, so it
must name a file below the zoneinfo folder and nothing else: relative, no ``.`` or ``..``
component, no empty component, no characters outside the tz database's own.
"""

from __future__ import annotations

__all__ = ["MAX_TIMEZONE_LENGTH", "valid_timezone"]

MAX_TIMEZONE_LENGTH = 255
# The tz database's characters; a component never starts with "." (no ".", "..", hidden files).
# Checked without `re`, which a launch (it sends the id) would otherwise load for this alone.
_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.+-")


def valid_timezone(name: str) -> bool:
    """An IANA id usable below the zoneinfo folder: relative, no ``.``/``..``, no odd characters."""
    if not name or len(name) > MAX_TIMEZONE_LENGTH:
        return False
    return all(part and part[0] != "." and _CHARACTERS.issuperset(part) for part in name.split("/"))
