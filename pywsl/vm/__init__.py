"""The host side of the utility VM: ``CoreVm``, ``CoreInstance`` and the VM backends.

``CoreVm.boot(config)`` starts (or attaches to) a user's VM, ``CoreVm.attach(runtime_dir)`` finds a
running one; ``launch_instance`` gives a ``CoreInstance`` for a running distribution.
"""

from __future__ import annotations

TYPE_CHECKING = False  # a launch loads single modules of this package: nothing is loaded eagerly
if TYPE_CHECKING:
    from typing import Any

    from pywsl.vm.config import VmConfig
    from pywsl.vm.core_instance import CoreInstance
    from pywsl.vm.core_vm import CoreVm, ExitWatch
    from pywsl.vm.errors import VmError
    from pywsl.vm.launch_types import ImportOutcome, ProcessRequest

__all__ = ["CoreInstance", "CoreVm", "ExitWatch", "ImportOutcome", "ProcessRequest", "VmConfig", "VmError"]

_MODULES = {
    "CoreInstance": "pywsl.vm.core_instance",
    "CoreVm": "pywsl.vm.core_vm",
    "ExitWatch": "pywsl.vm.core_vm",
    "ImportOutcome": "pywsl.vm.launch_types",
    "ProcessRequest": "pywsl.vm.launch_types",
    "VmConfig": "pywsl.vm.config",  # a dataclass: a launch into a running VM never needs it
    "VmError": "pywsl.vm.errors",
}


def __getattr__(name: str) -> Any:
    """The public names, each loaded on first use (a launch imports `launch_types` alone)."""
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import sys  # (`importlib` would be one more import on a cold launch's boot)

    __import__(module)
    value = getattr(sys.modules[module], name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
