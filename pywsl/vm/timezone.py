"""The host's time zone, as WSL sends the Windows one: an IANA id in ``Initialize.Timezone``.

WSL maps the Windows zone to an IANA id (``Europe/Paris``) and the distribution's init links
``/etc/localtime`` to ``/usr/share/zoneinfo/<id>``. The host here already has an IANA zone: the
first line of ``/etc/timezone`` (Debian), else the target of the ``/etc/localtime`` symlink below a
``zoneinfo`` folder, else none.
"""

from __future__ import annotations

import os

from pywsl.wire.timezone_id import MAX_TIMEZONE_LENGTH, valid_timezone

__all__ = ["host_timezone", "valid_timezone"]

_VARIANTS = ("posix/", "right/")


def _from_localtime(target: str) -> str | None:
    marker = "zoneinfo/"
    index = target.rfind(marker)
    if index < 0:
        return None
    name = target[index + len(marker) :]
    for variant in _VARIANTS:
        if name.startswith(variant):
            name = name[len(variant) :]
    return name


def host_timezone(etc: str | os.PathLike[str] = "/etc") -> str | None:
    """The host's IANA time zone id, or None when it has none that can be named."""
    try:
        with open(os.path.join(etc, "timezone"), encoding="utf-8", errors="replace") as handle:
            first = handle.readline(MAX_TIMEZONE_LENGTH + 2).strip()
    except OSError:
        first = ""
    if valid_timezone(first):
        return first
    try:
        target = os.readlink(os.path.join(etc, "localtime"))
    except OSError:
        return None
    name = _from_localtime(target)
    return name if name is not None and valid_timezone(name) else None
