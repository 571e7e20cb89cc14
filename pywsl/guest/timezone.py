"""The distribution's time zone: init's part of WSL's ``[time] useWindowsTimezone``.

The host sends an IANA id in ``Initialize.Timezone`` (WSL maps the Windows zone to one). When the
distribution has ``/usr/share/zoneinfo/<id>``, init points ``/etc/localtime`` at it and rewrites
``/etc/timezone`` if the distribution keeps one. The id comes from outside the VM: it must be a
relative name below the zoneinfo folder (no ``..``, no absolute path, no odd characters).
Runs in init after ``pivot_root``: every path is the distribution's own.
"""

from __future__ import annotations

import os
import stat

from pywsl.guest import guest_log
from pywsl.guest.rootfs import write_file_atomic
from pywsl.lean_context import suppress
from pywsl.wire.timezone_id import valid_timezone

log = guest_log.getLogger("pywsl.init")

ZONEINFO_DIR = "/usr/share/zoneinfo"
LOCALTIME = "/etc/localtime"
TIMEZONE_FILE = "/etc/timezone"


def apply_timezone(name: str) -> bool:
    """Point ``/etc/localtime`` at the zone ``name``; False (and a log line) when it cannot be done."""
    if not valid_timezone(name):
        log.warning("ignoring the invalid time zone id %r", name)
        return False
    zone = f"{ZONEINFO_DIR}/{name}"
    try:
        if not stat.S_ISREG(os.stat(zone).st_mode):
            raise FileNotFoundError(zone)
    except OSError:
        log.info("time zone %s: %s is not in the distribution, /etc/localtime left as it is", name, zone)
        return False
    try:
        current = os.readlink(LOCALTIME)
    except OSError:
        current = None
    try:
        if current != zone:
            temporary = "/etc/.localtime.pywsl-new"
            with suppress(FileNotFoundError):
                os.unlink(temporary)
            os.symlink(zone, temporary)
            try:
                os.rename(temporary, LOCALTIME)
            except OSError:
                with suppress(OSError):
                    os.unlink(temporary)
                raise
        with suppress(FileNotFoundError):
            if stat.S_ISREG(os.lstat(TIMEZONE_FILE).st_mode):
                write_file_atomic(TIMEZONE_FILE, f"{name}\n".encode())
    except OSError as error:
        log.warning("cannot set the time zone to %s: %s", name, error)
        return False
    return True
