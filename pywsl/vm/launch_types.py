"""What a launch into a running VM passes to it: ``ProcessRequest`` and the VM's default timeouts.

These are named tuples rather than dataclasses: ``pywsl -d D -- cmd`` loads this module, and the
``dataclasses`` module (with ``inspect``, ``ast`` and ``dis`` behind it) would cost a warm launch
more than everything else it imports. ``VmConfig``, which only a boot needs, stays a dataclass in
``pywsl.vm.config``, which re-exports the names of this module.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = [
    "DEFAULT_DISTRIBUTION_START_TIMEOUT_MS",
    "DEFAULT_KERNEL_BOOT_TIMEOUT_MS",
    "IdMap",
    "ImportOutcome",
    "ProcessRequest",
]

IdMap = list[tuple[int, int, int]]
DEFAULT_KERNEL_BOOT_TIMEOUT_MS = 30_000  # .wslconfig [wsl2] kernelBootTimeout
DEFAULT_DISTRIBUTION_START_TIMEOUT_MS = 60_000  # .wslconfig [wsl2] distributionStartTimeout


class ProcessRequest(NamedTuple):
    """A process to start in a distribution (becomes LX_INIT_CREATE_PROCESS_UTILITY_VM)."""

    filename: str  # "" = the user's shell
    command_line: list[str]  # shell mode: ["-c", "<string>"] with filename ""; exec: argv
    cwd: str  # "" = home; "~..." or "/..."
    environment: list[str]  # "K=V"
    username: str  # "" = default user chain
    default_uid: int
    login_shell: bool
    console: tuple[bool, bool, bool]  # stdin/stdout/stderr are terminals
    rows: int
    columns: int
    nt_path: str = ""  # the caller's host PATH (NtPath): host PATH folders for interop
    host_environment: tuple[str, ...] = ()  # NtEnvironment: host facts the api checked (GUI sockets)


class ImportOutcome(NamedTuple):
    """The ``ImportResult`` of a successful extraction."""

    valid: bool  # /etc or /bin/sh exists in the tree
    flavor: str | None  # os-release ID
    version: str | None  # os-release VERSION_ID
    default_name: str | None  # /etc/wsl-distribution.conf [oobe] defaultName
    warnings: tuple[str, ...] = ()  # for the user (device nodes left out)
