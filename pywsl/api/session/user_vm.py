"""The utility VM of one user as the session reaches it: its settings, attach, what runs in it.

WSL's service creates one VM per user (`_CreateVm`) with the settings of the user's .wslconfig. Here
`vm_config` turns a `WslConfig` and the user's id ranges into the `VmConfig` the VM boots with,
`attach` finds the VM that runs already and `running_instances` lists its distributions. Starting
or reaching a VM takes root (`require_root`): an unprivileged caller goes through the service.
"""

from __future__ import annotations

import os
from _socket import gethostname  # `socket.gethostname` itself, without `socket` (its enums)

from pywsl.api.errors import WslError, error_context

TYPE_CHECKING = False  # `typing` would cost a cold launch's boot its load
if TYPE_CHECKING:
    from pathlib import Path

    from pywsl.api.credentials import UserIdentity
    from pywsl.api.session.wslconfig import WslConfig
    from pywsl.vm import CoreVm, VmConfig

__all__ = ["attach", "boot", "limits_note", "require_root", "running_instances", "vm_config"]

LIMITS_NOTE = (
    "Memory inside distributions: `free` and /proc/meminfo show the host's memory, not the VM's "
    "[wsl2] memory limit (install lxcfs on the host to show the limit)."
)


def require_root(what: str) -> None:
    """E_ACCESSDENIED naming `what` unless this process is root."""
    if os.geteuid() != 0:
        raise WslError(
            "E_ACCESSDENIED", f"{what} needs root: use the pywsl service (pywsl.connect()) or run as root."
        )


def boot(identity: UserIdentity, runtime_dir: Path, config: WslConfig) -> CoreVm:
    """`_CreateVm`'s boot: the VM of `identity` with `config`'s settings (the running one when
    another process booted it first: `booted` says which); a failure is `CreateVm`'s error."""
    from pywsl.vm.core_vm import CoreVm

    with error_context("CreateVm"):
        config.check_kernel()
        return CoreVm.boot(vm_config(identity, runtime_dir, config))


def vm_config(identity: UserIdentity, runtime_dir: Path, config: WslConfig) -> VmConfig:
    """The `VmConfig` of the VM of `identity`, whose runtime folder is `runtime_dir`."""
    from pywsl.vm import VmConfig
    from pywsl.vm.gpu import discover_gpu_libraries
    from pywsl.vm.idmap import IdMapError, maps_for_owner, owner_device_groups, with_host_groups
    from pywsl.vm.lxcfs import find_lxcfs

    try:
        uid_map, gid_map = maps_for_owner(identity.uid, identity.gid)
    except IdMapError as error:
        raise WslError("E_ACCESSDENIED", str(error)) from None
    gid_map = with_host_groups(gid_map, owner_device_groups(identity.uid, identity.gid))
    return VmConfig(
        owner_uid=identity.uid,
        owner_gid=identity.gid,
        runtime_dir=runtime_dir,
        uid_map=uid_map,
        gid_map=gid_map,
        networking_mode=config.networking_mode,
        hostname=gethostname(),
        memory_bytes=config.effective_memory_bytes(),
        processors=config.processors,
        vm_idle_timeout_ms=config.vm_idle_timeout_ms,
        instance_idle_timeout_ms=config.instance_idle_timeout_ms,
        kernel_boot_timeout_ms=config.kernel_boot_timeout_ms,
        distribution_start_timeout_ms=config.distribution_start_timeout_ms,
        swap_bytes=config.swap_bytes,
        nested_virtualization=config.nested_virtualization,
        gpu_support=config.gpu_support,
        gpu_libraries=discover_gpu_libraries() if config.gpu_support else (),
        lxcfs=find_lxcfs(),
        backend=config.backend,
        kernel=config.kernel,
        kernel_modules=config.kernel_modules,
        kernel_command_line=config.kernel_command_line,
        localhost_forwarding=bool(config.values.get("wsl2.localhostForwarding", True)),
        debug_console=config.debug_console,
        swap_file=config.swap_file,
        host_path=os.environ.get("PATH", ""),  # the booting caller's: the likely PATH of the launches
    )


def limits_note() -> str | None:
    """What `--status` says about the figures programs see inside: None when lxcfs shows the limits."""
    from pywsl.vm.lxcfs import find_lxcfs

    return None if find_lxcfs() is not None else LIMITS_NOTE


def attach(runtime_dir: Path) -> CoreVm | None:
    """The VM serving in `runtime_dir`, or None when none runs."""
    from pywsl.vm import CoreVm
    from pywsl.vm.backends.base import running_backend

    try:
        return CoreVm.attach(runtime_dir, running_backend(runtime_dir))
    except PermissionError:
        require_root("Reaching the utility VM")
        raise


def running_instances(runtime_dir: Path) -> dict[str, int]:
    """Running distributions (casefolded name → init pid); empty when no VM runs or it cannot be
    reached."""
    try:
        vm = attach(runtime_dir)
    except (OSError, WslError):
        return {}
    if vm is None:
        return {}
    try:
        return vm.running_instances()
    finally:
        vm.close()
