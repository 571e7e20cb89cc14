"""``/etc/wsl.conf``: a distribution's own settings, read by its init at start.

The file uses WSL's gitconfig-style format (``pywsl.wire.config_format``). As in WSL, an unknown
key, a bad value or an unreadable file produces a warning (sent back to the host in
``CreateInstanceResult.Warnings``) and the default, never a failed start.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field

from pywsl.guest.rootfs import open_in_root
from pywsl.wire.config_format import MAX_CONFIG_BYTES, ConfigValue, parse_bool, parse_config, parse_int

WSL_CONF_PATH = "/etc/wsl.conf"
MAX_MOUNT_ROOT = 256
SHOWN_VALUE = 80
# Where the distribution's init mounts fresh pseudo-filesystems: no mount point can live there.
PSEUDO_FILESYSTEMS = ("/proc", "/sys", "/dev")
RESERVED_MOUNT_ROOTS = frozenset({
    *PSEUDO_FILESYSTEMS, "/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/boot",
    "/var",
})


@dataclass
class WslConf:
    """The settings of ``/etc/wsl.conf`` that pywsl's init uses, with WSL's defaults."""

    automount_enabled: bool = True
    automount_root: str = "/mnt/"
    automount_options: str = ""
    automount_mount_fs_tab: bool = True
    network_hostname: str | None = None
    network_generate_hosts: bool = True
    network_generate_resolv_conf: bool = True
    user_default: str | None = None
    boot_command: str | None = None
    boot_systemd: bool = False
    interop_enabled: bool = True
    interop_append_windows_path: bool = True
    umask: int = 0o022
    time_use_windows_timezone: bool = True
    warnings: list[str] = field(default_factory=list)

    @property
    def host_mount_point(self) -> str:
        """Where the host's filesystem appears: ``<automount.root>host`` (``/mnt/host``)."""
        return self.automount_root + "host"


def _boolean(entry: ConfigValue) -> bool | None:
    return parse_bool(entry.value)


def _text(entry: ConfigValue) -> str | None:
    return entry.value


def _mount_root(entry: ConfigValue) -> str | None:
    """``[automount] root``: an absolute, plain path where the host's files can be mounted.

    Refused (the default is used): relative paths, ``..`` or ``.`` components, control
    characters, over-long values, ``/`` itself, the pseudo-filesystems the distribution's init
    mounts (``/proc``, ``/sys``, ``/dev`` and anything beneath them) and the system folders.
    """
    value = entry.value.strip()
    if not value.startswith("/") or len(value) > MAX_MOUNT_ROOT or _has_control(value):
        return None
    parts = [part for part in value.split("/") if part]
    if not parts or any(part in (".", "..") for part in parts):
        return None
    normalized = "/" + "/".join(parts)
    if normalized in RESERVED_MOUNT_ROOTS or any(
            normalized.startswith(prefix + "/") for prefix in PSEUDO_FILESYSTEMS):
        return None
    return normalized + "/"


def _has_control(text: str) -> bool:
    return any(ord(char) < 0x20 or ord(char) == 0x7F for char in text)


def shown_value(value: str) -> str:
    """A value as a warning shows it: control characters escaped, at most ``SHOWN_VALUE`` characters."""
    text = "".join(f"\\x{ord(char):02x}" if ord(char) < 0x20 or ord(char) == 0x7F else char
                   for char in value)
    return text if len(text) <= SHOWN_VALUE else text[:SHOWN_VALUE] + "..."


def _umask(entry: ConfigValue) -> int | None:
    value = parse_int(entry.value)
    return value if value is not None and 0 <= value <= 0o777 else None


def _nonempty(entry: ConfigValue) -> str | None:
    value = entry.value.strip()
    return value or None


# section.key (lower case) -> (attribute, converter). A converter returning None = a bad value.
_KEYS: dict[str, tuple[str | None, Callable[[ConfigValue], object | None]]] = {
    "automount.enabled": ("automount_enabled", _boolean),
    "automount.root": ("automount_root", _mount_root),
    "automount.options": ("automount_options", _text),
    "automount.mountfstab": ("automount_mount_fs_tab", _boolean),
    "automount.ldconfig": (None, _boolean),
    "automount.cgroups": (None, lambda entry: entry.value if entry.value in ("v1", "v2") else None),
    "filesystem.umask": ("umask", _umask),
    "interop.enabled": ("interop_enabled", _boolean),
    "interop.appendwindowspath": ("interop_append_windows_path", _boolean),
    "network.generatehosts": ("network_generate_hosts", _boolean),
    "network.generateresolvconf": ("network_generate_resolv_conf", _boolean),
    "network.hostname": ("network_hostname", _nonempty),
    "time.usewindowstimezone": ("time_use_windows_timezone", _boolean),
    "fileserver.enabled": (None, _boolean),
    "fileserver.logfile": (None, _text),
    "fileserver.loglevel": (None, lambda entry: parse_int(entry.value)),
    "fileserver.logtruncate": (None, _boolean),
    "gpu.enabled": (None, _boolean),
    "gpu.appendlibpath": (None, _boolean),
    "user.default": ("user_default", _nonempty),
    "boot.command": ("boot_command", _nonempty),
    "boot.systemd": ("boot_systemd", _boolean),
    "boot.inittimeout": (None, lambda entry: parse_int(entry.value)),
    "boot.protectbinfmt": (None, _boolean),
    "general.guiapplications": (None, _boolean),
}


def parse_wsl_conf(text: str, source: str = WSL_CONF_PATH) -> WslConf:
    """Parse the text of a wsl.conf; problems end up in ``.warnings``."""
    sections, warnings = parse_config(text, source)
    conf = WslConf()
    for section_name, entries in sections.items():
        for key_name, entry in entries.items():
            known = _KEYS.get(f"{section_name}.{key_name}")
            name, where = f"{entry.section}.{entry.key}", f"{source}:{entry.line}"
            if known is None:
                warnings.append(f"Unknown key '{name}' in {where}")   # WSL's wording
                continue
            attribute, convert = known
            value = convert(entry)
            if value is None:
                kind = "boolean value" if convert is _boolean else "value"
                warnings.append(f"Invalid {kind} '{shown_value(entry.value)}' for key '{name}' in {where}")
                continue
            if attribute is not None:
                setattr(conf, attribute, value)
    conf.warnings = warnings
    return conf


def read_wsl_conf(root_fd: int) -> WslConf:
    """The wsl.conf of the tree ``root_fd``: defaults when it is absent, warnings when it is unusable.

    Whatever the file is (a FIFO, a device, a symlink to ``/dev/zero``, far too big), the
    distribution starts: only a regular file of at most ``MAX_CONFIG_BYTES`` is read, never
    waiting on it.
    """
    try:
        data = _read_regular_file(root_fd, WSL_CONF_PATH, MAX_CONFIG_BYTES)
    except _Unusable as problem:
        conf = WslConf()
        conf.warnings.append(f"{WSL_CONF_PATH}: {problem}, using the defaults")
        return conf
    if data is None:
        return WslConf()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("utf-8", "replace")
        conf = parse_wsl_conf(text)
        conf.warnings.insert(0, f"{WSL_CONF_PATH}: not valid UTF-8, undecodable bytes replaced")
        return conf
    return parse_wsl_conf(text)


def _is_symlink(root_fd: int, path: str) -> bool:
    try:
        fd = open_in_root(root_fd, path, os.O_PATH | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        return stat.S_ISLNK(os.fstat(fd).st_mode)
    finally:
        os.close(fd)


class _Unusable(Exception):
    """The file exists but is not something to read a configuration from."""


def _read_regular_file(root_fd: int, path: str, limit: int) -> bytes | None:
    """The bytes of ``path`` inside the tree, None if absent; ``_Unusable`` for anything else.

    The path is opened ``O_PATH`` first (opening a FIFO or a device has effects of its own), and
    only a regular file is then opened for reading, non-blocking, and read up to ``limit``.
    """
    try:
        handle = open_in_root(root_fd, path, os.O_PATH)
    except FileNotFoundError:
        if _is_symlink(root_fd, path):
            raise _Unusable("a symbolic link to nothing in the distribution") from None
        return None
    except OSError as error:
        raise _Unusable(f"cannot be opened ({error.strerror or error})") from None
    try:
        info = os.fstat(handle)
        if not stat.S_ISREG(info.st_mode):
            raise _Unusable("not a regular file")
        if info.st_size > limit:
            raise _Unusable(f"larger than {limit} bytes")
        try:
            fd = os.open(f"/proc/self/fd/{handle}", os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        except OSError as error:
            raise _Unusable(f"cannot be read ({error.strerror or error})") from None
    finally:
        os.close(handle)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _Unusable("not a regular file")
        chunks: list[bytes] = []
        total = 0
        while total <= limit:
            chunk = os.read(fd, min(65536, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:
            raise _Unusable(f"larger than {limit} bytes")
        return b"".join(chunks)
    except OSError as error:
        raise _Unusable(f"cannot be read ({error.strerror or error})") from None
    finally:
        os.close(fd)
