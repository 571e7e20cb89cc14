"""``/etc/wsl.conf``: a distribution's own settings, read by its init at start.

The file uses WSL's gitconfig-style format (``pywsl.wire.config_format``). As in WSL, an unknown
key, a bad value or an unreadable file produces a warning (sent back to the host in
``CreateInstanceResult.Warnings``) and the default, never a failed start.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field

from pywsl.guest.rootfs import read_in_root
from pywsl.wire.config_format import MAX_CONFIG_BYTES, ConfigValue, parse_bool, parse_config, parse_int

WSL_CONF_PATH = "/etc/wsl.conf"


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
    value = entry.value.strip()
    if not value.startswith("/") or "\0" in value:
        return None
    normalized = posixpath.normpath(value)
    return normalized if normalized.endswith("/") else normalized + "/"


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
            if known is None:
                warnings.append(f"{source}:{entry.line}: unknown key '{entry.section}.{entry.key}', ignored")
                continue
            attribute, convert = known
            value = convert(entry)
            if value is None:
                warnings.append(f"{source}:{entry.line}: invalid value '{entry.value}' for "
                                f"'{entry.section}.{entry.key}', using the default")
                continue
            if attribute is not None:
                setattr(conf, attribute, value)
    conf.warnings = warnings
    return conf


def read_wsl_conf(root_fd: int) -> WslConf:
    """The wsl.conf of the tree ``root_fd``: defaults when it is absent, warnings when it is unreadable."""
    try:
        data = read_in_root(root_fd, WSL_CONF_PATH, MAX_CONFIG_BYTES)
    except (OSError, ValueError) as error:
        conf = WslConf()
        conf.warnings.append(f"{WSL_CONF_PATH}: cannot be read ({error}), using the defaults")
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
