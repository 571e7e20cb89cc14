"""The utility VM of one user as the session reaches it: its settings, attach, what runs in it.

WSL's service creates one VM per user (`_CreateVm`) with the settings of the user's .wslconfig. Here
`vm_config` turns a `WslConfig` and the user's id ranges into the `VmConfig` the VM boots with,
`attach` finds the VM that runs already and `running_instances` lists its distributions. Starting
or reaching a VM takes root (`require_root`): an unprivileged caller goes through the service.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from pywsl.api.credentials import UserIdentity
from pywsl.api.errors import WslError
from pywsl.api.wslconfig import WslConfig

if TYPE_CHECKING:
    from pywsl.vm import CoreVm, VmConfig

__all__ = ["attach", "require_root", "running_instances", "vm_config"]


def require_root(what: str) -> None:
    """E_ACCESSDENIED naming `what` unless this process is root."""
    if os.geteuid() != 0:
        raise WslError("E_ACCESSDENIED", f"{what} needs root: use the pywsl service "
                       "(pywsl.connect()) or run as root.")


def vm_config(identity: UserIdentity, runtime_dir: Path, config: WslConfig) -> VmConfig:
    """The `VmConfig` of the VM of `identity`, whose runtime folder is `runtime_dir`."""
    from pywsl.vm import VmConfig
    from pywsl.vm.idmap import IdMapError, maps_for_owner

    try:
        uid_map, gid_map = maps_for_owner(identity.uid, identity.gid)
    except IdMapError as error:
        raise WslError("E_ACCESSDENIED", str(error)) from None
    return VmConfig(
        owner_uid=identity.uid,
        owner_gid=identity.gid,
        runtime_dir=runtime_dir,
        uid_map=uid_map,
        gid_map=gid_map,
        networking_mode=config.networking_mode,
        hostname=socket.gethostname(),
        memory_bytes=config.effective_memory_bytes(),
        processors=config.processors,
        vm_idle_timeout_ms=config.vm_idle_timeout_ms,
        instance_idle_timeout_ms=config.instance_idle_timeout_ms,
        kernel_boot_timeout_ms=config.kernel_boot_timeout_ms,
        distribution_start_timeout_ms=config.distribution_start_timeout_ms,
    )


def attach(runtime_dir: Path) -> CoreVm | None:
    """The VM serving in `runtime_dir`, or None when none runs."""
    from pywsl.vm import CoreVm

    try:
        return CoreVm.attach(runtime_dir)
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
