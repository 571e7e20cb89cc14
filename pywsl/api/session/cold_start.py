"""Root's cold launch: the VM's interpreter starts before anything else loads, and the quick path
boots the VM itself.

A launch that finds no VM boots one. The VM's interpreter (`namespaces_prestart`) loads the guest
meanwhile, so it is started as early as the launch can tell that no VM runs: root's VM socket is
missing. The boot then needs `.wslconfig` and `CoreVm`, not the rest of the session
(`UserSession`: the registry's lock and recovery, the install verbs): `boot_vm` does what
`UserSession._boot` does for the namespaces backend, and the quick launch goes on as into a
running VM.
"""

from __future__ import annotations

import os

from pywsl.api.session.path_rules import runtime_folder
from pywsl.vm.runtime_names import SOCKET_NAME

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["boot_vm", "prestart_if_no_vm"]


def prestart_if_no_vm() -> None:
    """Start the VM's interpreter for root's VM when its socket is missing (no VM runs)."""
    runtime = runtime_folder(0)
    if not os.path.exists(os.path.join(runtime, SOCKET_NAME)):
        from pywsl.vm.backends import namespaces_prestart

        namespaces_prestart.begin(runtime)


def boot_vm(environ: Mapping[str, str]) -> list[str] | None:
    """Boot the calling root's VM as `UserSession._boot` does (`.wslconfig` read now, its warnings
    when this call booted the VM; a failed boot is the same `WslError`): the warnings for the
    user, or None when the full path is to boot it (another backend than namespaces, or
    `.wslconfig` could not be read: the full path meets that again and reports it)."""
    from pywsl.lean_pathlib import import_pathlib

    import_pathlib()  # before the boot's modules import it: without what only its methods need
    from pywsl.api.credentials import UserIdentity
    from pywsl.api.session import user_vm
    from pywsl.api.session.paths import user_paths
    from pywsl.api.session.wslconfig import load_wslconfig

    if os.geteuid() != 0:
        return None
    try:
        identity = UserIdentity.current()
        paths = user_paths(identity.uid, identity.home, environ)
        config = load_wslconfig(paths.config_file, identity, home=paths.home)
    except Exception:
        return None  # the full path meets it again and reports it where it does
    if config.backend != "namespaces":
        return None  # qemu: the user's disks are attached again after the boot (the full path)
    vm = user_vm.boot(identity, paths.runtime_dir, config)  # as `UserSession._boot` boots it
    try:
        return list(config.startup_warnings()) if vm.booted else []
    finally:
        vm.close()
