"""The files a utility VM keeps in its runtime folder, by name.

A module of constants only: a cold launch looks for the VM's socket before anything else of the
VM layer loads (`pywsl.api.session.cold_start`). The guest's side names the same files
(`pywsl.guest.vm_monitor`).
"""

from __future__ import annotations

__all__ = ["LOG_NAME", "PID_FILE_NAME", "PREVIOUS_LOG_NAME", "SOCKET_NAME"]

SOCKET_NAME = "mini_init.sock"  # mini_init's listening socket (the monitor's, for qemu)
PID_FILE_NAME = "mini_init.pid"  # the VM's pid 1 and its monitor, one per line
LOG_NAME = "mini_init.log"
# The previous VM's log, set aside by a boot (its blocks are freed by the new VM's monitor).
PREVIOUS_LOG_NAME = "mini_init.log.previous"
