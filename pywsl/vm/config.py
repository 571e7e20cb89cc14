"""The utility VM's configuration and the requests the host makes of it (WSL's VM settings).

``VmConfig`` is what ``WslCoreVm::Create`` takes from ``.wslconfig`` and the calling user;
``ProcessRequest`` becomes ``LX_INIT_CREATE_PROCESS_UTILITY_VM``; ``ImportOutcome`` is the
``ImportResult`` of an import. Those two and the default timeouts live in ``launch_types``
(no dataclasses there: a warm launch loads them, never this module) and are re-exported here.
"""

from __future__ import annotations

from pathlib import Path

# What a launch needs is defined without dataclasses (a warm launch never imports this module).
from pywsl.vm.launch_types import (
    DEFAULT_DISTRIBUTION_START_TIMEOUT_MS,
    DEFAULT_KERNEL_BOOT_TIMEOUT_MS,
    IdMap,
    ImportOutcome,
    ProcessRequest,
)

TYPE_CHECKING = False  # the type checker sees a dataclass; a cold launch's boot loads no `dataclasses`
if TYPE_CHECKING:
    from dataclasses import dataclass
else:
    from pywsl.records import dataclass

__all__ = [
    "DEFAULT_DISTRIBUTION_START_TIMEOUT_MS",
    "DEFAULT_KERNEL_BOOT_TIMEOUT_MS",
    "IdMap",
    "ImportOutcome",
    "ProcessRequest",
    "VmConfig",
]


@dataclass(frozen=True)
class VmConfig:
    """What the api resolved from ``.wslconfig`` and the user."""

    owner_uid: int
    owner_gid: int
    runtime_dir: Path  # /run/pywsl/<uid>
    uid_map: IdMap  # (inside, outside, count), written to uid_map
    gid_map: IdMap
    networking_mode: str  # "mirrored" (host network shared) or "none"
    hostname: str
    memory_bytes: int | None
    processors: int | None
    vm_idle_timeout_ms: int
    instance_idle_timeout_ms: int
    backend: str = "namespaces"
    kernel_boot_timeout_ms: int = DEFAULT_KERNEL_BOOT_TIMEOUT_MS  # until the VM serves
    distribution_start_timeout_ms: int = DEFAULT_DISTRIBUTION_START_TIMEOUT_MS  # until init is ready
    swap_bytes: int | None = None  # [wsl2] swap: memory + swap is limited (memsw) where the host can
    nested_virtualization: bool = True  # [wsl2] nestedVirtualization: /dev/kvm in distributions
    gpu_support: bool = True  # [wsl2] gpuSupport: GPU nodes and libraries in distributions
    gpu_libraries: tuple[tuple[str, str], ...] = ()  # (name in /usr/lib/wsl/lib, host path)
    lxcfs: str | None = None  # where root's lxcfs is mounted: its /proc files go to distributions
    kernel: Path | None = None  # [wsl2] kernel (qemu backend; None: the host's own)
    kernel_modules: Path | None = None  # [wsl2] kernelModules (qemu backend; None: /lib/modules/<release>)
    kernel_command_line: str = ""  # [wsl2] kernelCommandLine (qemu backend), appended
    localhost_forwarding: bool = True  # [wsl2] localhostForwarding (qemu backend with NAT)
    debug_console: bool = False  # [wsl2] debugConsole (qemu backend): the console on the booting terminal
    swap_file: Path | None = None  # [wsl2] swapFile (qemu backend): the swap disk's file, the owner's
    host_path: str = ""  # the booting caller's host PATH: instances make its interop folders as they start

    def __post_init__(self) -> None:
        for name in ("kernel_boot_timeout_ms", "distribution_start_timeout_ms"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"VmConfig.{name} must be a positive number of milliseconds, not {value!r}")
