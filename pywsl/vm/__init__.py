"""The host side of the utility VM: ``CoreVm``, ``CoreInstance`` and the VM backends.

``CoreVm.boot(config)`` starts (or attaches to) a user's VM, ``CoreVm.attach(runtime_dir)`` finds a
running one; ``launch_instance`` gives a ``CoreInstance`` for a running distribution.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pywsl.vm.core_instance import CoreInstance
from pywsl.vm.core_vm import CoreVm, ExitWatch
from pywsl.vm.errors import VmError
from pywsl.vm.launch_types import ImportOutcome, ProcessRequest

if TYPE_CHECKING:
    from pywsl.vm.config import VmConfig

__all__ = ["CoreInstance", "CoreVm", "ExitWatch", "ImportOutcome", "ProcessRequest", "VmConfig", "VmError"]


def __getattr__(name: str) -> Any:
    """`VmConfig` (a dataclass) is loaded on first use: a launch into a running VM never needs it."""
    if name != "VmConfig":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from pywsl.vm.config import VmConfig

    return VmConfig
