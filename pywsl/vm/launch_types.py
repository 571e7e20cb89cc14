"""What a launch into a running VM passes to it: ``ProcessRequest`` and the VM's default timeouts.

``ProcessRequest`` lives in ``process_request`` (a launch loads that module alone) and is
re-exported here. The others are named tuples rather than dataclasses: the ``dataclasses`` module
(with ``inspect``, ``ast`` and ``dis`` behind it) costs more than everything a launch imports.
``VmConfig``, which only a boot needs, stays a dataclass in ``pywsl.vm.config``, which re-exports
the names of this module.
"""

from __future__ import annotations

from pywsl.vm.process_request import ProcessRequest
from pywsl.vm.quick_launch import DEFAULT_DISTRIBUTION_START_TIMEOUT_MS

TYPE_CHECKING = False  # `typing` would cost a cold launch's boot its load
if TYPE_CHECKING:
    from typing import NamedTuple
else:
    from pywsl.records import NamedTuple

__all__ = [
    "DEFAULT_DISTRIBUTION_START_TIMEOUT_MS",
    "DEFAULT_KERNEL_BOOT_TIMEOUT_MS",
    "IdMap",
    "ImportOutcome",
    "ProcessRequest",
]

IdMap = list[tuple[int, int, int]]
DEFAULT_KERNEL_BOOT_TIMEOUT_MS = 30_000  # .wslconfig [wsl2] kernelBootTimeout


class ImportOutcome(NamedTuple):
    """The ``ImportResult`` of a successful extraction."""

    valid: bool  # /etc or /bin/sh exists in the tree
    flavor: str | None  # os-release ID
    version: str | None  # os-release VERSION_ID
    default_name: str | None  # /etc/wsl-distribution.conf [oobe] defaultName
    warnings: tuple[str, ...] = ()  # for the user (device nodes left out)
