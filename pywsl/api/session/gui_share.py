"""The caller's display for GUI apps (`.wslconfig [wsl2] guiApplications`, WSLg's layout inside).

From the caller's `DISPLAY`, `WAYLAND_DISPLAY`, `XDG_RUNTIME_DIR`, `PULSE_SERVER` and
`XAUTHORITY`, this finds the X11 socket (`/tmp/.X11-unix/X<n>`), the Wayland socket and the
PulseAudio/PipeWire socket (`<XDG_RUNTIME_DIR>/pulse/native`), and keeps only those that are
sockets owned by the caller: each path is walked from `/` one component at a time with
`O_PATH | O_NOFOLLOW` (no link is followed anywhere), and the object reached is checked with
`fstat`, so root's or another user's socket is never shared, whatever the caller names. The X11
cookie (`MIT-MAGIC-COOKIE-1` of that display) is read from the caller's `XAUTHORITY` file, or
`~/.Xauthority`, under the same walk: a regular file owned by the caller, at most 64 KiB.

The result is the launch's host environment (WSL's `NtEnvironment`, which only the host fills):
`PYWSL_GUI_X11=<n>:<dev>:<ino>:<path>`, `PYWSL_GUI_WAYLAND=<name>:<dev>:<ino>:<path>`,
`PYWSL_GUI_PULSE=<dev>:<ino>:<path>`, `PYWSL_GUI_XAUTH=<cookie hex>`. The distribution's relay
binds exactly those sockets (same device and inode) from its host view (`pywsl.guest.gui`).
"""

from __future__ import annotations

import os
import stat
import struct

TYPE_CHECKING = False  # a launch takes GUI_VARIABLES from here: `collections.abc` would cost it
if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["GUI_VARIABLES", "display_number", "gui_host_environment", "read_cookie", "xauthority_cookie"]

# What a client sends of its environment for GUI apps (with TERM, PATH and WSLENV).
GUI_VARIABLES = ("DISPLAY", "WAYLAND_DISPLAY", "XDG_RUNTIME_DIR", "PULSE_SERVER", "XAUTHORITY")
X11_FOLDER = "/tmp/.X11-unix"
COOKIE_NAME = b"MIT-MAGIC-COOKIE-1"
FAMILY_LOCAL = 256
FAMILY_WILD = 0xFFFF
MAX_XAUTHORITY = 64 * 1024
MAX_PATH = 4096


def display_number(display: str) -> str | None:
    """The local display number of `DISPLAY` (`:0`, `:0.1`, `unix:0`); None for TCP or malformed."""
    host, separator, rest = display.rpartition(":")
    if not separator or host not in ("", "unix"):
        return None
    number = rest.partition(".")[0]
    return number if number.isdigit() and len(number) <= 6 else None


def _open_path(path: str) -> int:
    """`path` reached from `/` without following any link (O_PATH); OSError otherwise."""
    if not path.startswith("/") or len(path) > MAX_PATH or "\0" in path:
        raise OSError(f"{path!r} is not an absolute path")
    parts = [part for part in path.split("/") if part]
    if any(part in (".", "..") for part in parts):
        raise OSError(f"{path!r} is not a plain path")
    fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts:
            next_fd = os.open(part, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = next_fd
        return fd
    except BaseException:
        os.close(fd)
        raise


def _own_socket(path: str, uid: int) -> tuple[int, int] | None:
    """(device, inode) of `path` when it is a socket owned by `uid` (links never followed)."""
    try:
        fd = _open_path(path)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
    finally:
        os.close(fd)
    if not stat.S_ISSOCK(info.st_mode) or info.st_uid != uid:
        return None
    return info.st_dev, info.st_ino


def read_cookie(path: str, uid: int) -> bytes | None:
    """The bytes of the caller's Xauthority file `path`: a regular file owned by `uid`, bounded."""
    try:
        fd = _open_path(path)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != uid or info.st_size > MAX_XAUTHORITY:
            return None
        data_fd = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        again = os.fstat(data_fd)
        if (again.st_dev, again.st_ino) != (info.st_dev, info.st_ino):
            return None
        return os.read(data_fd, MAX_XAUTHORITY + 1)[:MAX_XAUTHORITY]
    except OSError:
        return None
    finally:
        os.close(data_fd)


def xauthority_cookie(data: bytes, number: str) -> bytes | None:
    """The MIT-MAGIC-COOKIE-1 of local display `number` in an Xauthority file's bytes."""
    offset = 0
    while offset + 2 <= len(data):
        (family,) = struct.unpack_from(">H", data, offset)
        offset += 2
        fields: list[bytes] = []
        for _ in range(4):
            if offset + 2 > len(data):
                return None
            (length,) = struct.unpack_from(">H", data, offset)
            offset += 2
            if offset + length > len(data):
                return None
            fields.append(data[offset : offset + length])
            offset += length
        _address, display, name, cookie = fields
        if (
            family in (FAMILY_LOCAL, FAMILY_WILD)
            and display == number.encode()
            and name == COOKIE_NAME
            and 0 < len(cookie) <= 256
        ):
            return cookie
    return None


def gui_host_environment(source: Mapping[str, str], uid: int, home: str) -> list[str]:
    """The `PYWSL_GUI_*` entries for a launch by `uid` whose environment is `source` (see above)."""
    entries: list[str] = []
    number = display_number(source.get("DISPLAY", ""))
    if number is not None:
        path = f"{X11_FOLDER}/X{number}"
        found = _own_socket(path, uid)
        if found is not None:
            entries.append(f"PYWSL_GUI_X11={number}:{found[0]}:{found[1]}:{path}")
            authority = source.get("XAUTHORITY") or (f"{home.rstrip('/')}/.Xauthority" if home else "")
            data = read_cookie(authority, uid) if authority else None
            cookie = xauthority_cookie(data, number) if data else None
            if cookie is not None:
                entries.append(f"PYWSL_GUI_XAUTH={cookie.hex()}")
    runtime = source.get("XDG_RUNTIME_DIR", "")
    wayland = source.get("WAYLAND_DISPLAY", "")
    if wayland:
        relative = f"{runtime}/{wayland}" if runtime.startswith("/") else ""
        path = wayland if wayland.startswith("/") else relative
        name = os.path.basename(path)
        found = _own_socket(path, uid) if path and name else None
        if found is not None:
            entries.append(f"PYWSL_GUI_WAYLAND={name}:{found[0]}:{found[1]}:{path}")
    pulse = source.get("PULSE_SERVER", "")
    pulse_path = pulse[len("unix:") :] if pulse.startswith("unix:/") else ""
    if not pulse_path and not pulse and runtime.startswith("/"):
        pulse_path = f"{runtime}/pulse/native"
    if pulse_path:
        found = _own_socket(pulse_path, uid)
        if found is not None:
            entries.append(f"PYWSL_GUI_PULSE={found[0]}:{found[1]}:{pulse_path}")
    return entries
