"""``/etc/wsl.conf``: a distribution's own settings, read by its init at start.

The file uses WSL's gitconfig-style format (``pywsl.wire.config_format``), read as WSL's init reads
it: a syntax error stops the reading there (what came before counts). As in WSL, an unknown key,
a repeated key, a bad value or an unreadable file produces a warning (sent back to the host in
``CreateInstanceResult.Warnings``) and the default, never a failed start. String values are taken
as written, even empty (``hostname =`` names no host, so the host name becomes ``localhost``);
only ``[automount] root`` is checked further, for the distribution's safety.
"""

from __future__ import annotations

from pywsl.guest.distribution_files import UnusableFile, read_regular_file
from pywsl.guest.mounts import automount_attributes
from pywsl.wire.config_format import (
    MAX_CONFIG_BYTES,
    ConfigProblem,
    ConfigValue,
    duplicate_warning,
    parse_bool,
    parse_int,
    read_config,
    unknown_key_warning,
)

TYPE_CHECKING = False  # the type checker sees dataclasses; `records` gives the same classes cheaply
if TYPE_CHECKING:
    from dataclasses import dataclass, field
else:
    from pywsl.records import dataclass, field

WSL_CONF_PATH = "/etc/wsl.conf"
MAX_MOUNT_ROOT = 256
SHOWN_VALUE = 80
# Where the distribution's init mounts fresh pseudo-filesystems: no mount point can live there.
PSEUDO_FILESYSTEMS = ("/proc", "/sys", "/dev")
RESERVED_MOUNT_ROOTS = frozenset(
    {
        *PSEUDO_FILESYSTEMS,
        "/etc",
        "/usr",
        "/bin",
        "/sbin",
        "/lib",
        "/lib32",
        "/lib64",
        "/libx32",
        "/boot",
        "/var",
    }
)


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
    boot_init_timeout_ms: int = 10000
    interop_enabled: bool = True
    interop_append_windows_path: bool = True
    umask: int = 0o022
    automount_ldconfig: bool = True
    gpu_enabled: bool = True
    gpu_append_lib_path: bool = True
    gui_applications: bool = True  # [general] guiApplications: the caller's display shared
    time_use_windows_timezone: bool = True
    warnings: list[str] = field(default_factory=list)

    @property
    def automount_attributes(self) -> int:
        """The mount attributes ``[automount] options`` adds to the host's tree (``ro``, ``noexec``,
        ``nosuid``, ``nodev``); DrvFs' own options (``metadata``, ``uid=``...) do not apply to it."""
        return automount_attributes(self.automount_options)[0]

    @property
    def host_mount_point(self) -> str:
        """Where the host's filesystem appears: ``<automount.root>host`` (``/mnt/host``)."""
        return self.automount_root + "host"


class _Kind:
    """How WSL parses a key's value, and so which warning a bad one gets (plain strings: `enum`
    would cost the VM's start its load)."""

    BOOLEAN = "boolean"
    INTEGER = "integer"
    STRING = "string"
    CGROUPS = "cgroups"
    MOUNT_ROOT = "mount root"


CGROUP_VERSIONS = ("v1", "v2")


def _mount_root(value: str) -> str | None:
    """``[automount] root``: an absolute, plain path where the host's files can be mounted.

    Refused (the default is used): relative paths, ``..`` or ``.`` components, control
    characters, over-long values, ``/`` itself, the pseudo-filesystems the distribution's init
    mounts (``/proc``, ``/sys``, ``/dev`` and anything beneath them) and the system folders.
    """
    value = value.strip()
    if not value.startswith("/") or len(value) > MAX_MOUNT_ROOT or _has_control(value):
        return None
    parts = [part for part in value.split("/") if part]
    if not parts or any(part in (".", "..") for part in parts):
        return None
    normalized = "/" + "/".join(parts)
    if normalized in RESERVED_MOUNT_ROOTS or any(
        normalized.startswith(prefix + "/") for prefix in PSEUDO_FILESYSTEMS
    ):
        return None
    return normalized + "/"


def _has_control(text: str) -> bool:
    return any(ord(char) < 0x20 or ord(char) == 0x7F for char in text)


def shown_value(value: str) -> str:
    """A value as a warning shows it: control characters escaped, at most ``SHOWN_VALUE`` characters."""
    text = "".join(f"\\x{ord(char):02x}" if ord(char) < 0x20 or ord(char) == 0x7F else char for char in value)
    return text if len(text) <= SHOWN_VALUE else text[:SHOWN_VALUE] + "..."


def _convert(kind: str, value: str) -> object | None:
    """The value of a key of ``kind``; None when WSL would reject it."""
    if kind is _Kind.BOOLEAN:
        return parse_bool(value)
    if kind is _Kind.INTEGER:
        return parse_int(value)
    if kind is _Kind.CGROUPS:
        lowered = value.lower()
        return lowered if lowered in CGROUP_VERSIONS else None
    if kind is _Kind.MOUNT_ROOT:
        return _mount_root(value)
    return value


def _bad_value_warning(kind: str, entry: ConfigValue, source: str) -> str:
    """WSL's wording for a value it rejects (``MessageConfigInvalid*``)."""
    value, where = shown_value(entry.value), f"{source}:{entry.line}"
    if kind is _Kind.BOOLEAN:
        return f"Invalid boolean value '{value}' for key '{entry.name}' in {where}"
    if kind is _Kind.INTEGER:
        return f"Invalid integer value '{value}' for key '{entry.name}' in {where}"
    if kind is _Kind.CGROUPS:
        return (
            f"Invalid value '{value}' for config key '{entry.name}' in {where} "
            f"(Valid values: {', '.join(CGROUP_VERSIONS)})"
        )
    return f"Invalid value '{value}' for key '{entry.name}' in {where}"


# section.key (lower case) -> (attribute or None when pywsl has no use for it, kind). WSL's list.
_KEYS: dict[str, tuple[str | None, str]] = {
    "automount.enabled": ("automount_enabled", _Kind.BOOLEAN),
    "automount.root": ("automount_root", _Kind.MOUNT_ROOT),
    "automount.options": ("automount_options", _Kind.STRING),
    "automount.mountfstab": ("automount_mount_fs_tab", _Kind.BOOLEAN),
    "automount.ldconfig": ("automount_ldconfig", _Kind.BOOLEAN),
    "automount.cgroups": (None, _Kind.CGROUPS),
    "filesystem.umask": ("umask", _Kind.INTEGER),
    "interop.enabled": ("interop_enabled", _Kind.BOOLEAN),
    "interop.appendwindowspath": ("interop_append_windows_path", _Kind.BOOLEAN),
    "network.generatehosts": ("network_generate_hosts", _Kind.BOOLEAN),
    "network.generateresolvconf": ("network_generate_resolv_conf", _Kind.BOOLEAN),
    "network.hostname": ("network_hostname", _Kind.STRING),
    "time.usewindowstimezone": ("time_use_windows_timezone", _Kind.BOOLEAN),
    "fileserver.enabled": (None, _Kind.BOOLEAN),
    "fileserver.logfile": (None, _Kind.STRING),
    "fileserver.loglevel": (None, _Kind.INTEGER),
    "fileserver.logtruncate": (None, _Kind.BOOLEAN),
    "gpu.enabled": ("gpu_enabled", _Kind.BOOLEAN),
    "gpu.appendlibpath": ("gpu_append_lib_path", _Kind.BOOLEAN),
    "user.default": ("user_default", _Kind.STRING),
    "boot.command": ("boot_command", _Kind.STRING),
    "boot.systemd": ("boot_systemd", _Kind.BOOLEAN),
    "boot.inittimeout": ("boot_init_timeout_ms", _Kind.INTEGER),
    "boot.protectbinfmt": (None, _Kind.BOOLEAN),
    "general.guiapplications": ("gui_applications", _Kind.BOOLEAN),
}


def parse_wsl_conf(text: str, source: str = WSL_CONF_PATH) -> WslConf:
    """Parse the text of a wsl.conf as WSL's init does; problems end up in ``.warnings``.

    Warnings come in the order of the file. A syntax error ends the reading there (the keys
    before it keep their values, the rest are defaults); an unknown key, a repeated key (the
    first one stays, even when its value was bad) or a bad value is a warning and reading goes on.
    """
    conf = WslConf()
    seen: dict[str, ConfigValue] = {}
    for item in read_config(text, source, skip_invalid_lines=False):
        if isinstance(item, ConfigProblem):
            conf.warnings.append(item.message)
            continue
        name = item.name.lower()
        known = _KEYS.get(name)
        if known is None:
            conf.warnings.append(unknown_key_warning(item, source))
            continue
        if name in seen:
            conf.warnings.append(duplicate_warning(item, seen[name], source))
            continue
        seen[name] = item
        attribute, kind = known
        value = _convert(kind, item.value)
        if value is None:
            conf.warnings.append(_bad_value_warning(kind, item, source))
        elif attribute is not None:
            setattr(conf, attribute, value)
    return conf


def read_wsl_conf(root_fd: int) -> WslConf:
    """The wsl.conf of the tree ``root_fd``: defaults when it is absent, warnings when it is unusable.

    Whatever the file is (a FIFO, a device, a symlink to ``/dev/zero``, far too big), the
    distribution starts: only a regular file of at most ``MAX_CONFIG_BYTES`` is read, never
    waiting on it.
    """
    try:
        data = read_regular_file(root_fd, WSL_CONF_PATH, MAX_CONFIG_BYTES)
    except UnusableFile as problem:
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
