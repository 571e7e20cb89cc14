"""The host side of the utility VM: ``CoreVm``, ``CoreInstance`` and the VM backends.

``CoreVm.boot(config)`` starts (or attaches to) a user's VM, ``CoreVm.attach(runtime_dir)`` finds a
running one; ``launch_instance`` gives a ``CoreInstance`` for a running distribution.
"""

from __future__ import annotations

from pywsl.vm.config import ImportOutcome, ProcessRequest, VmConfig
from pywsl.vm.core_instance import CoreInstance
from pywsl.vm.core_vm import CoreVm, ExitWatch
from pywsl.vm.errors import VmError

__all__ = ["CoreInstance", "CoreVm", "ExitWatch", "ImportOutcome", "ProcessRequest", "VmConfig", "VmError"]
