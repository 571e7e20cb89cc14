"""Root's cold launch: the VM's interpreter is started before the launch loads anything else.

A launch that finds no VM boots one, on whichever path it then takes (the quick one declines, the
full one boots). The VM's interpreter (`namespaces_prestart`) loads the guest meanwhile, so it is
started as early as the launch can tell that no VM runs: root's VM socket is missing.
"""

from __future__ import annotations

import os

from pywsl.api.session.path_rules import runtime_folder
from pywsl.vm.quick_launch import SOCKET_NAME

__all__ = ["prestart_if_no_vm"]


def prestart_if_no_vm() -> None:
    """Start the VM's interpreter for root's VM when its socket is missing (no VM runs)."""
    runtime = runtime_folder(0)
    if not os.path.exists(os.path.join(runtime, SOCKET_NAME)):
        from pywsl.vm.backends import namespaces_prestart

        namespaces_prestart.begin(runtime)
