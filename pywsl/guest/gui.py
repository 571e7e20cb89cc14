"""GUI apps in a distribution: the caller's X11, Wayland and PulseAudio sockets, laid out as WSLg does.

The host side (``pywsl.api.session.gui_share``) checks each of the caller's sockets (a socket, owned by
the caller, reached without following a link) and sends what it found in the launch's
``NtEnvironment`` (the host environment, which only the host fills): ``PYWSL_GUI_X11=<n>:<dev>:<ino>:<path>``,
``PYWSL_GUI_WAYLAND=<name>:<dev>:<ino>:<path>``, ``PYWSL_GUI_PULSE=<dev>:<ino>:<path>`` and
``PYWSL_GUI_XAUTH=<cookie in hex>``. Here, as the distribution's root before the process drops
its rights, each socket is opened through the instance's read-only host view
(``/run/WSL/interop/host``) with ``O_PATH | O_NOFOLLOW``, must be the same socket (device and
inode) the host checked, and is bind-mounted from that descriptor:

* ``/mnt/wslg``: a tmpfs (WSLg's folder); ``/mnt/wslg/.X11-unix`` holds ``X<n>`` and is bound on
  ``/tmp/.X11-unix``; ``/mnt/wslg/runtime-dir`` (0700, the first launched user's) holds
  ``wayland-N`` and ``pulse/native``;
* the X11 cookie is written to ``/mnt/wslg/xauth/<uid>`` (0600, the launched user's);
* the process gets ``DISPLAY``, ``WAYLAND_DISPLAY``, ``XDG_RUNTIME_DIR``, ``PULSE_SERVER`` and
  ``XAUTHORITY``.

``[general] guiApplications=false`` in wsl.conf (init calls :func:`enable`) turns it off.
Failures never stop a launch: the process starts without the GUI variables.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct
from collections.abc import Sequence

from pywsl.guest import syscalls
from pywsl.guest.file_locks import lock_within
from pywsl.lean_context import suppress

TYPE_CHECKING = False  # the type checker sees dataclasses; `records` gives the same classes cheaply
if TYPE_CHECKING:
    from dataclasses import dataclass
else:
    from pywsl.records import dataclass

HOST_VIEW = "/run/WSL/interop/host"
WSLG = "/mnt/wslg"
X11_FOLDER = "/tmp/.X11-unix"
RUNTIME_DIR = WSLG + "/runtime-dir"
XAUTH_DIR = WSLG + "/xauth"
COOKIE_NAME = b"MIT-MAGIC-COOKIE-1"
FAMILY_WILD = 0xFFFF
LOCK_TIMEOUT = 5.0
MAX_COOKIE = 256

_enabled = True


def enable(on: bool) -> None:
    """wsl.conf's ``[general] guiApplications`` (set by init; session leaders and relays inherit it)."""
    global _enabled
    _enabled = on


@dataclass(frozen=True)
class SharedSocket:
    """One socket the host checked: where it goes inside (``name``), its identity and host path."""

    kind: str  # "X11", "WAYLAND" or "PULSE"
    name: str  # the display number (X11), the socket name (Wayland), "native" (Pulse)
    device: int
    inode: int
    host_path: str


@dataclass(frozen=True)
class GuiRequest:
    sockets: tuple[SharedSocket, ...] = ()
    cookie: bytes | None = None


def _plain(name: str) -> bool:
    return bool(name) and "/" not in name and name not in (".", "..") and "\0" not in name


def parse_request(host_environment: Sequence[str]) -> GuiRequest:
    """The GUI entries of a launch's host environment; malformed entries are left out."""
    sockets: list[SharedSocket] = []
    cookie: bytes | None = None
    for entry in host_environment:
        key, _, value = entry.partition("=")
        if not key.startswith("PYWSL_GUI_"):
            continue
        kind = key[len("PYWSL_GUI_") :]
        if kind == "XAUTH":
            with suppress(ValueError):
                data = bytes.fromhex(value)
                if 0 < len(data) <= MAX_COOKIE:
                    cookie = data
            continue
        parts = value.split(":", 3) if kind != "PULSE" else ["native", *value.split(":", 2)]
        if kind not in ("X11", "WAYLAND", "PULSE") or len(parts) != 4:
            continue
        name, device, inode, path = parts
        if not _plain(name) or not path.startswith("/") or not device.isdigit() or not inode.isdigit():
            continue
        if kind == "X11" and not name.isdigit():
            continue
        sockets.append(SharedSocket(kind, name, int(device), int(inode), path))
    return GuiRequest(tuple(sockets), cookie)


def xauthority_entry(display: str, cookie: bytes) -> bytes:
    """One Xauthority record: any address (FamilyWild), display ``display``, MIT-MAGIC-COOKIE-1."""

    def field(data: bytes) -> bytes:
        return struct.pack(">H", len(data)) + data

    return (
        struct.pack(">H", FAMILY_WILD)
        + field(b"")
        + field(display.encode())
        + field(COOKIE_NAME)
        + field(cookie)
    )


def _open_checked(shared: SharedSocket) -> int:
    """The host's socket through the host view, opened without following links, the one the host checked."""
    fd = os.open(HOST_VIEW + shared.host_path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISSOCK(info.st_mode) or (info.st_dev, info.st_ino) != (shared.device, shared.inode):
            raise OSError(errno.ESTALE, f"{shared.host_path} changed since the host checked it")
        return fd
    except BaseException:
        os.close(fd)
        raise


def _same_mounted(target: str, fd: int) -> bool:
    with suppress(OSError):
        here, there = os.lstat(target), os.fstat(fd)
        return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)
    return False


def _bind_socket(fd: int, target: str) -> None:
    if _same_mounted(target, fd):
        return
    if os.path.ismount(target):
        syscalls.umount2(target, syscalls.MNT_DETACH)
    with suppress(FileExistsError):
        os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666))
    syscalls.mount(f"/proc/self/fd/{fd}", target, None, syscalls.MS_BIND)


def _folder(path: str, mode: int, owner: tuple[int, int] = (0, 0)) -> None:
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        info = os.lstat(path)
        if not stat.S_ISDIR(info.st_mode):
            raise OSError(errno.ENOTDIR, f"{path} is not a folder") from None
        return
    os.chown(path, *owner)
    os.chmod(path, mode)


def _prepare_wslg(uid: int, gid: int) -> None:
    """``/mnt/wslg`` (tmpfs), its folders, and ``/tmp/.X11-unix`` bound to ``/mnt/wslg/.X11-unix``."""
    if not os.path.ismount(WSLG):
        os.makedirs(WSLG, mode=0o755, exist_ok=True)
        syscalls.mount("tmpfs", WSLG, "tmpfs", syscalls.MS_NOSUID | syscalls.MS_NODEV, "mode=755,size=1m")
    _folder(WSLG + "/.X11-unix", 0o1777)
    _folder(RUNTIME_DIR, 0o700, (uid, gid))
    _folder(XAUTH_DIR, 0o711)
    if not os.path.ismount(X11_FOLDER):
        if not os.path.isdir("/tmp"):
            os.makedirs("/tmp", mode=0o1777, exist_ok=True)
        _folder(X11_FOLDER, 0o1777)
        syscalls.mount(WSLG + "/.X11-unix", X11_FOLDER, None, syscalls.MS_BIND)


def _write_cookie(display: str, cookie: bytes, uid: int, gid: int) -> str:
    path = f"{XAUTH_DIR}/{uid}"
    temporary = f"{path}.{os.getpid()}"
    fd = os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, xauthority_entry(display, cookie))
        os.fchown(fd, uid, gid)
    finally:
        os.close(fd)
    os.rename(temporary, path)
    return path


class _setup_lock:
    """Serialises the setup between concurrent launches of the distribution (bounded wait)."""

    def __enter__(self) -> None:
        fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            if not lock_within(fd, fcntl.LOCK_EX, LOCK_TIMEOUT, 0.005):
                raise OSError(errno.ETIMEDOUT, "another launch holds the GUI setup")
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def __exit__(self, *exception: object) -> None:
        os.close(self._fd)


def prepare(host_environment: Sequence[str], uid: int, gid: int) -> tuple[dict[str, str], list[str]]:
    """As the distribution's root: share the checked sockets; the variables for the process and warnings."""
    request = parse_request(host_environment)
    if not _enabled or not request.sockets:
        return {}, []
    variables: dict[str, str] = {}
    warnings: list[str] = []
    try:
        with _setup_lock():
            _prepare_wslg(uid, gid)
            for shared in request.sockets:
                try:
                    fd = _open_checked(shared)
                except OSError as error:
                    warnings.append(f"{shared.host_path}: {error.strerror or error}")
                    continue
                try:
                    variables.update(_share(shared, fd, request.cookie, uid, gid))
                except OSError as error:
                    warnings.append(f"{shared.host_path}: {error.strerror or error}")
                finally:
                    os.close(fd)
    except OSError as error:
        warnings.append(f"GUI sockets not shared: {error.strerror or error}")
    return variables, warnings


def _share(shared: SharedSocket, fd: int, cookie: bytes | None, uid: int, gid: int) -> dict[str, str]:
    if shared.kind == "X11":
        _bind_socket(fd, f"{X11_FOLDER}/X{shared.name}")
        result = {"DISPLAY": f":{shared.name}"}
        if cookie is not None:
            result["XAUTHORITY"] = _write_cookie(shared.name, cookie, uid, gid)
        return result
    if shared.kind == "WAYLAND":
        _bind_socket(fd, f"{RUNTIME_DIR}/{shared.name}")
        return {"WAYLAND_DISPLAY": shared.name, "XDG_RUNTIME_DIR": RUNTIME_DIR}
    _folder(RUNTIME_DIR + "/pulse", 0o700, (uid, gid))
    _bind_socket(fd, f"{RUNTIME_DIR}/pulse/native")
    return {"PULSE_SERVER": f"unix:{RUNTIME_DIR}/pulse/native", "XDG_RUNTIME_DIR": RUNTIME_DIR}
