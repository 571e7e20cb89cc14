"""The global configuration: WSL's `%USERPROFILE%\\.wslconfig`, here `$XDG_CONFIG_HOME/pywsl/wslconfig`.

Same format and keys as WSL (wsl-reference §6.1): every documented key of `[wsl2]`, `[general]` and
`[experimental]` is accepted; an unknown key, a bad value or a repeated key gives a warning (the
first occurrence of a key wins) and never stops anything. The keys that mean something for a VM
made of namespaces take effect:

* `[wsl2] memory`, `processors`, `swap` → the VM's cgroup limits (a cpuset and the CPU affinity of
  `processors` CPUs, so that `nproc` inside shows it; memory plus swap where the host accounts swap);
* `[wsl2] nestedVirtualization` → `/dev/kvm` in distributions; `gpuSupport` → the host GPU's
  device nodes and driver libraries (`/usr/lib/wsl/lib`); `guiApplications` → the caller's own X11,
  Wayland and PulseAudio sockets in distributions, as WSLg lays them out (`gui_share`);
* `[wsl2] vmIdleTimeout`, `[general] instanceIdleTimeout` → the idle timers (negative = never);
* `[wsl2] kernelBootTimeout`, `distributionStartTimeout` → how long to wait for the VM and for a
  distribution's init;
* `[wsl2] networkingMode` → `None` gives the VM its own empty network namespace, every other mode
  shares the host's network ("mirrored");
* `[general] distributionInstallPath` → where new distributions go;
* `[general] distributionListUrl`, `distributionListUrlAppend` → the manifests `--install` reads
  (machine-wide registry values in WSL);
* `[pywsl] backend` (pywsl's own section, not WSL's) → `namespaces` (the default: a VM made of
  namespaces) or `qemu` (a real VM with its own kernel, see docs/design.md); with `qemu`,
  `[wsl2] kernel`, `kernelModules`, `kernelCommandLine`, `localhostForwarding`, `debugConsole`
  (the guest console on the booting terminal) and `swapFile` (the swap disk's file) take effect too.

The rest is accepted and kept in `WslConfig.values`; each key set there that this host cannot
honour is named in `WslConfig.ignored`. Warnings use WSL's wording ("Unknown key 'wsl2.x' in
<file>:<line>"); whoever starts the VM shows them (`startup_warnings`). A `[wsl2] kernel` that does
not exist is `WSL_E_CUSTOM_KERNEL_NOT_FOUND` when a VM is to be started (`check_kernel`), as in WSL.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping
from pathlib import Path

from pywsl.api.errors import WslError
from pywsl.wire.config_format import (
    MAX_CONFIG_BYTES,
    ConfigValue,
    parse_bool,
    parse_config,
    parse_int,
    parse_memory_string,
)

TYPE_CHECKING = False  # `typing` would cost a cold launch's boot its load
if TYPE_CHECKING:
    from contextlib import AbstractContextManager
    from typing import Any, NamedTuple

    # credentials is Linux-only (pwd); it is imported only when acting as a user
    from pywsl.api.credentials import UserIdentity
else:
    from pywsl.records import NamedTuple

# Open flags that only some systems have (none of them on Windows).
_READ_FLAGS = (
    os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_NONBLOCK", 0)
)

__all__ = [
    "DEFAULT_DISTRIBUTION_START_TIMEOUT_MS",
    "DEFAULT_INSTANCE_IDLE_TIMEOUT_MS",
    "DEFAULT_KERNEL_BOOT_TIMEOUT_MS",
    "DEFAULT_VM_IDLE_TIMEOUT_MS",
    "WslConfig",
    "load_wslconfig",
    "parse_wslconfig",
]

DEFAULT_VM_IDLE_TIMEOUT_MS = 60_000
DEFAULT_INSTANCE_IDLE_TIMEOUT_MS = 15_000
DEFAULT_KERNEL_BOOT_TIMEOUT_MS = 30_000
DEFAULT_DISTRIBUTION_START_TIMEOUT_MS = 60_000
MIN_MEMORY_BYTES = 256 * 1024 * 1024

_NETWORKING_MODES = {
    "none": "None",
    "nat": "Nat",
    "bridged": "Bridged",
    "mirrored": "Mirrored",
    "consomme": "Consomme",
    "virtioproxy": "VirtioProxy",
}
_AUTO_MEMORY_RECLAIM = {"disabled": "Disabled", "gradual": "Gradual", "dropcache": "DropCache"}


class Kind:
    """What the text of a setting must be: an enumeration without `enum` (which a cold launch's
    boot, reading this module, does without); ``value`` describes it in warnings."""

    __slots__ = ("name", "value")
    BOOL: Kind
    INT: Kind
    MEMORY: Kind
    STRING: Kind
    PATH: Kind
    NETWORKING_MODE: Kind
    BACKEND: Kind
    MEMORY_RECLAIM: Kind

    def __init__(self, name: str, value: str) -> None:
        self.name = name
        self.value = value

    def __repr__(self) -> str:
        return f"<Kind.{self.name}>"


for _name, _value in (
    ("BOOL", "a boolean (true/false)"),
    ("INT", "an integer"),
    ("MEMORY", "a memory size (e.g. 4GB, 512MB)"),
    ("STRING", "a string"),
    ("PATH", "an absolute path"),
    ("NETWORKING_MODE", ", ".join(sorted(_NETWORKING_MODES.values()))),
    ("BACKEND", "namespaces, qemu"),
    ("MEMORY_RECLAIM", ", ".join(sorted(_AUTO_MEMORY_RECLAIM.values()))),
):
    setattr(Kind, _name, Kind(_name, _value))
del _name, _value


# The keys that take effect on this host (see the module docstring); any other key is ignored.
HONOURED_KEYS = frozenset(
    {
        "wsl2.memory",
        "wsl2.processors",
        "wsl2.swap",
        "wsl2.nestedVirtualization",
        "wsl2.gpuSupport",
        "wsl2.guiApplications",
        "wsl2.vmIdleTimeout",
        "wsl2.kernelBootTimeout",
        "wsl2.distributionStartTimeout",
        "wsl2.networkingMode",
        "experimental.networkingMode",
        "general.instanceIdleTimeout",
        "general.distributionInstallPath",
        "general.distributionListUrl",
        "general.distributionListUrlAppend",
        "pywsl.backend",
    }
)
# Keys that take effect only with `[pywsl] backend = qemu` (a real kernel).
QEMU_KEYS = frozenset(
    {
        "wsl2.kernel",
        "wsl2.kernelModules",
        "wsl2.kernelCommandLine",
        "wsl2.localhostForwarding",
        "wsl2.debugConsole",
        "wsl2.swapFile",
        "wsl2.defaultVhdSize",  # the size of a new distribution's disk image
        "experimental.sparseVhd",  # whether a new distribution's disk gives freed blocks back
    }
)
BACKENDS = ("namespaces", "qemu")


# Every documented key, by section, with the canonical spelling used as the key of `values`.
_KEYS: dict[str, dict[str, Kind]] = {
    "wsl2": {
        "kernel": Kind.PATH,
        "kernelCommandLine": Kind.STRING,
        "kernelModules": Kind.PATH,
        "memory": Kind.MEMORY,
        "processors": Kind.INT,
        "swap": Kind.MEMORY,
        "swapFile": Kind.PATH,
        "localhostForwarding": Kind.BOOL,
        "nestedVirtualization": Kind.BOOL,
        "debugConsole": Kind.BOOL,
        "debugConsoleLogFile": Kind.PATH,
        "earlyBootLogging": Kind.BOOL,
        "virtio": Kind.BOOL,
        "virtio9p": Kind.BOOL,
        "virtiofs": Kind.BOOL,
        "kernelDebugPort": Kind.INT,
        "gpuSupport": Kind.BOOL,
        "guiApplications": Kind.BOOL,
        "systemDistro": Kind.PATH,
        "telemetry": Kind.BOOL,
        "vmIdleTimeout": Kind.INT,
        "kernelBootTimeout": Kind.INT,
        "distributionStartTimeout": Kind.INT,
        "mountDeviceTimeout": Kind.INT,
        "hostFileSystemAccess": Kind.BOOL,
        "hardwarePerformanceCounters": Kind.BOOL,
        "networkingMode": Kind.NETWORKING_MODE,
        "vmSwitch": Kind.STRING,
        "macAddress": Kind.STRING,
        "dhcp": Kind.BOOL,
        "dhcpTimeout": Kind.INT,
        "ipv6": Kind.BOOL,
        "dnsProxy": Kind.BOOL,
        "dnsTunneling": Kind.BOOL,
        "firewall": Kind.BOOL,
        "autoProxy": Kind.BOOL,
        "safeMode": Kind.BOOL,
        "defaultVhdSize": Kind.MEMORY,
        "crashDumpFolder": Kind.PATH,
        "maxCrashDumpCount": Kind.INT,
        "loadDefaultKernelModules": Kind.BOOL,
        "loadKernelModules": Kind.STRING,
        "isolateDistroCgroup": Kind.BOOL,
    },
    "general": {
        "distributionInstallPath": Kind.PATH,
        "instanceIdleTimeout": Kind.INT,
        "distributionListUrl": Kind.STRING,
        "distributionListUrlAppend": Kind.STRING,
    },
    "experimental": {
        "networkingMode": Kind.NETWORKING_MODE,
        "dnsTunneling": Kind.BOOL,
        "firewall": Kind.BOOL,
        "autoProxy": Kind.BOOL,
        "autoMemoryReclaim": Kind.MEMORY_RECLAIM,
        "sparseVhd": Kind.BOOL,
        "bestEffortDnsParsing": Kind.BOOL,
        "dnsTunnelingIpAddress": Kind.STRING,
        "initialAutoProxyTimeout": Kind.INT,
        "ignoredPorts": Kind.STRING,
        "hostAddressLoopback": Kind.BOOL,
        "setVersionDebug": Kind.BOOL,
        "swiotlb": Kind.MEMORY,
        "virtioFsAggregateShares": Kind.BOOL,
    },
    # pywsl's own section (WSL has none): which utility VM backend runs this user's VM.
    "pywsl": {"backend": Kind.BACKEND},
}
_LOOKUP: dict[str, dict[str, str]] = {
    section: {key.lower(): key for key in keys} for section, keys in _KEYS.items()
}


class WslConfig(NamedTuple):  # not a dataclass: a launch reads it and never loads dataclasses
    """The global configuration as it applies to one user's VM."""

    memory_bytes: int | None = None  # None: half of the host's memory (WSL's default)
    processors: int | None = None  # None: every CPU
    swap_bytes: int | None = None  # None: no limit of its own (the host's swap)
    nested_virtualization: bool = True  # /dev/kvm in distributions (when the host has it)
    gpu_support: bool = True  # the host's GPU in distributions (when it has one)
    gui_applications: bool = True  # the caller's display sockets in distributions
    vm_idle_timeout_ms: int = DEFAULT_VM_IDLE_TIMEOUT_MS
    instance_idle_timeout_ms: int = DEFAULT_INSTANCE_IDLE_TIMEOUT_MS
    kernel_boot_timeout_ms: int = DEFAULT_KERNEL_BOOT_TIMEOUT_MS
    distribution_start_timeout_ms: int = DEFAULT_DISTRIBUTION_START_TIMEOUT_MS
    networking_mode_setting: str = "Nat"  # as WSL names it
    distribution_install_path: Path | None = None
    distribution_list_url: str | None = None
    distribution_list_url_append: str | None = None
    values: Mapping[str, Any] = {}  # "section.key" -> parsed value (never changed)
    warnings: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()  # a warning for each key set that this host cannot honour
    source: Path | None = None
    missing_kernel: Path | None = None  # [wsl2] kernel names a file that does not exist
    backend: str = "namespaces"  # [pywsl] backend: "namespaces" or "qemu"
    kernel: Path | None = None  # [wsl2] kernel (qemu backend)
    kernel_modules: Path | None = None  # [wsl2] kernelModules (qemu backend)
    kernel_command_line: str = ""  # [wsl2] kernelCommandLine (qemu backend)
    debug_console: bool = False  # [wsl2] debugConsole (qemu backend)
    swap_file: Path | None = None  # [wsl2] swapFile (qemu backend)

    def startup_warnings(self) -> tuple[str, ...]:
        """What the user is told when a VM starts with this configuration."""
        return (*self.warnings, *self.ignored)

    def check_kernel(self) -> None:
        """`WSL_E_CUSTOM_KERNEL_NOT_FOUND` when `[wsl2] kernel` names a file that does not exist."""
        if self.missing_kernel is not None:
            raise WslError(
                "WSL_E_CUSTOM_KERNEL_NOT_FOUND",
                f"The custom kernel specified in {self.source} was not found: '{self.missing_kernel}'.",
            )

    @property
    def networking_mode(self) -> str:
        """The VM's networking: "none" (own empty namespace) or "mirrored" (the host's network)."""
        return "none" if self.networking_mode_setting == "None" else "mirrored"

    def effective_memory_bytes(self, host_memory: int | None = None) -> int | None:
        """The memory limit to apply: the setting, or WSL's default of half the host's memory."""
        if self.memory_bytes is not None:
            return self.memory_bytes
        total = host_memory if host_memory is not None else _host_memory()
        return total // 2 if total else None


def _host_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None


def _convert_path(text: str, home: Path | None) -> Path | None:
    """An absolute path; a leading ``~`` is the user's home."""
    value = text.strip()
    if value.startswith("~") and home is not None and (len(value) == 1 or value[1] == "/"):
        value = str(home) + value[1:]
    return Path(value) if value and os.path.isabs(value) else None


def _convert_backend(text: str, home: Path | None) -> str | None:
    value = text.strip().lower()
    return value if value in BACKENDS else None


# How the text of a setting of each kind becomes its value (None: it does not parse); a kind
# that is not here (STRING) keeps its text.
_CONVERTERS: dict[Kind, Callable[[str, Path | None], Any]] = {
    Kind.BOOL: lambda text, home: parse_bool(text),
    Kind.INT: lambda text, home: parse_int(text),
    Kind.MEMORY: lambda text, home: parse_memory_string(text),
    Kind.NETWORKING_MODE: lambda text, home: _NETWORKING_MODES.get(text.strip().lower()),
    Kind.MEMORY_RECLAIM: lambda text, home: _AUTO_MEMORY_RECLAIM.get(text.strip().lower()),
    Kind.BACKEND: _convert_backend,
    Kind.PATH: _convert_path,
}


def _convert(kind: Kind, text: str, home: Path | None) -> Any:
    """The value of one setting, or None when it does not parse as `kind`."""
    converter = _CONVERTERS.get(kind)
    return text if converter is None else converter(text, home)


def _read_values(
    sections: Mapping[str, Mapping[str, ConfigValue]], source: str, home: Path | None, warnings: list[str]
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The known settings by "section.key" and, for each one this host cannot honour, its key
    and warning; a warning in `warnings` for each unknown key and each value that does not parse."""
    values: dict[str, Any] = {}
    ignored: list[tuple[str, str]] = []
    for section_name, entries in sections.items():
        known = _LOOKUP.get(section_name)
        for entry in entries.values():
            canonical = known.get(entry.key.lower()) if known is not None else None
            if known is None or canonical is None:
                warnings.append(f"Unknown key '{entry.section}.{entry.key}' in {source}:{entry.line}")
                continue
            kind = _KEYS[section_name][canonical]
            value = _convert(kind, entry.value, home)
            if value is None:
                warnings.append(_bad_value(source, entry, kind))
                continue
            values[f"{section_name}.{canonical}"] = value
            if f"{section_name}.{canonical}" not in HONOURED_KEYS:
                ignored.append(
                    (
                        f"{section_name}.{canonical}",
                        f"Ignored key '{entry.section}.{entry.key}' in {source}:{entry.line}: "
                        "this host cannot honour it",
                    )
                )
    return values, ignored


def _limit_memory(memory: int | None, total: int | None, source: str, warnings: list[str]) -> int | None:
    """`wsl2.memory` raised to the minimum and lowered to the host's memory."""
    if memory is None:
        return None
    if memory < MIN_MEMORY_BYTES:
        warnings.append(f"{source}: wsl2.memory: {memory} bytes is below the minimum of 256MB; using 256MB")
        return MIN_MEMORY_BYTES
    if total and memory > total:
        warnings.append(f"{source}: wsl2.memory: more than the host's memory; using {total} bytes")
        return total
    return memory


def _limit_processors(
    processors: int | None, cpus: int | None, source: str, warnings: list[str]
) -> int | None:
    """`wsl2.processors` lowered to the host's logical processors."""
    if processors is not None and cpus and processors > cpus:
        warnings.append(
            f"{source}: wsl2.processors: {processors} is more than the {cpus} logical "
            f"processors of this machine; using {cpus}"
        )
        return cpus
    return processors


def parse_wslconfig(
    text: str,
    source: str = "wslconfig",
    *,
    home: Path | None = None,
    host_memory: int | None = None,
    host_cpus: int | None = None,
) -> WslConfig:
    """Parse the text of a .wslconfig; never raises for bad content (warnings instead)."""
    sections, warnings = parse_config(text, source)
    values, ignored_keys = _read_values(sections, source, home, warnings)

    def take(key: str, check: Callable[[Any], str | None] | None = None) -> Any:
        value = values.get(key)
        if value is not None and check is not None:
            problem = check(value)
            if problem is not None:
                warnings.append(f"{source}: {key}: {problem}; using the default")
                values.pop(key)
                return None
        return value

    memory = take("wsl2.memory", lambda v: "must not be 0" if v <= 0 else None)
    total = host_memory if host_memory is not None else _host_memory()
    memory = _limit_memory(memory, total, source, warnings)
    processors = take("wsl2.processors", lambda v: "must be at least 1" if v < 1 else None)
    cpus = host_cpus if host_cpus is not None else os.cpu_count()
    processors = _limit_processors(processors, cpus, source, warnings)

    swap = take("wsl2.swap", lambda v: "must not be negative" if v < 0 else None)

    def positive(value: int) -> str | None:
        return "must be a positive number of milliseconds" if value <= 0 else None

    networking = values.get("wsl2.networkingMode") or values.get("experimental.networkingMode") or "Nat"
    install_path = take("general.distributionInstallPath")
    backend = values.get("pywsl.backend", "namespaces")
    # The qemu backend honours the keys of its own VM.
    ignored = [text for key, text in ignored_keys if backend != "qemu" or key not in QEMU_KEYS]
    return WslConfig(
        memory_bytes=memory,
        processors=processors,
        swap_bytes=swap,
        nested_virtualization=values.get("wsl2.nestedVirtualization", True),
        gpu_support=values.get("wsl2.gpuSupport", True),
        gui_applications=values.get("wsl2.guiApplications", True),
        vm_idle_timeout_ms=_or(take("wsl2.vmIdleTimeout"), DEFAULT_VM_IDLE_TIMEOUT_MS),
        instance_idle_timeout_ms=_or(take("general.instanceIdleTimeout"), DEFAULT_INSTANCE_IDLE_TIMEOUT_MS),
        kernel_boot_timeout_ms=_or(take("wsl2.kernelBootTimeout", positive), DEFAULT_KERNEL_BOOT_TIMEOUT_MS),
        distribution_start_timeout_ms=_or(
            take("wsl2.distributionStartTimeout", positive), DEFAULT_DISTRIBUTION_START_TIMEOUT_MS
        ),
        networking_mode_setting=networking,
        distribution_install_path=install_path,
        distribution_list_url=take("general.distributionListUrl") or None,
        distribution_list_url_append=take("general.distributionListUrlAppend") or None,
        values=values,
        warnings=tuple(warnings),
        ignored=tuple(ignored),
        source=Path(source),
        backend=backend,
        kernel=values.get("wsl2.kernel"),
        kernel_modules=values.get("wsl2.kernelModules"),
        kernel_command_line=values.get("wsl2.kernelCommandLine", ""),
        debug_console=values.get("wsl2.debugConsole", False),
        swap_file=values.get("wsl2.swapFile"),
    )


def _or(value: int | None, default: int) -> int:
    return default if value is None else value


def _bad_value(source: str, entry: ConfigValue, kind: Kind) -> str:
    """WSL's warning for a value that does not parse (`MessageConfigInvalid*`)."""
    name, where = f"{entry.section}.{entry.key}", f"{source}:{entry.line}"
    if kind is Kind.BOOL:
        return f"Invalid boolean value '{entry.value}' for key '{name}' in {where}"
    if kind is Kind.INT:
        return f"Invalid integer value '{entry.value}' for key '{name}' in {where}"
    if kind is Kind.MEMORY:
        return f"Invalid memory string '{entry.value}' for .wslconfig entry '{name}' in {where}"
    return f"Invalid value '{entry.value}' for config key '{name}' in {where} (Valid values: {kind.value})"


class _AsThisProcess:
    """No change of rights: the file is read as this process (`contextlib.nullcontext`, which a
    cold launch's boot does not load)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exception: object) -> None:
        return None


def _as_user(identity: UserIdentity | None) -> AbstractContextManager[None]:
    """Acting as `identity` (`credentials.acting_as`), or nothing to do without one."""
    if identity is None:
        return _AsThisProcess()
    from pywsl.api.credentials import acting_as

    return acting_as(identity)


def _missing_kernel(config: WslConfig, identity: UserIdentity | None) -> WslConfig:
    """`config` with `missing_kernel` set when `[wsl2] kernel` does not exist (looked up as the user)."""
    kernel = config.values.get("wsl2.kernel")
    if not isinstance(kernel, Path):
        return config
    try:
        with _as_user(identity):
            found = os.path.isfile(kernel)
    except OSError:
        found = False
    return config if found else config._replace(missing_kernel=kernel)


def load_wslconfig(
    path: Path, identity: UserIdentity | None = None, *, home: Path | None = None
) -> WslConfig:
    """Read and parse the configuration file at `path` with the user's rights.

    A missing file is the default configuration; an unreadable one is the default with a warning.
    """
    try:
        with _as_user(identity):
            fd = os.open(path, _READ_FLAGS)
    except FileNotFoundError:
        return WslConfig(source=path)
    except OSError as error:
        return _unreadable(path, error)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return WslConfig(source=path, warnings=(f"{path}: not a regular file; using the defaults",))
        data = os.read(fd, MAX_CONFIG_BYTES + 1)
    except OSError as error:
        return _unreadable(path, error)
    finally:
        os.close(fd)
    if len(data) > MAX_CONFIG_BYTES:
        return WslConfig(
            source=path, warnings=(f"{path}: larger than {MAX_CONFIG_BYTES} bytes; using the defaults",)
        )
    text = data.decode("utf-8", errors="replace").lstrip("\ufeff")
    config = parse_wslconfig(
        text, str(path), home=home if home is not None else (identity.home if identity is not None else None)
    )
    return _missing_kernel(config, identity)


def _unreadable(path: Path, error: OSError) -> WslConfig:
    return WslConfig(source=path, warnings=(f"{path}: cannot read: {error.strerror}; using the defaults",))
