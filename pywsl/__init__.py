"""pywsl: WSL's service architecture in Python, running on Linux hosts.

`pywsl.connect()` gives the calling user's session (WSL's `ILxssUserSession`): in-process for
root, through the pywsl service otherwise. The public names are loaded on first use, so that
`import pywsl.cli` or `import pywsl.wire` does not load the whole library.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pywsl.api.connect import connect
    from pywsl.api.distribution_info import DistributionConfiguration, DistributionInfo
    from pywsl.api.errors import WslError
    from pywsl.api.registry import DistributionState
    from pywsl.api.session import UserSession
    from pywsl.api.wslconfig import WslConfig

__version__ = "0.1.0"

__all__ = [
    "DistributionConfiguration",
    "DistributionInfo",
    "DistributionState",
    "UserSession",
    "WslConfig",
    "WslError",
    "__version__",
    "connect",
]

_EXPORTS = {
    "connect": "pywsl.api.connect",
    "WslError": "pywsl.api.errors",
    "DistributionState": "pywsl.api.registry",
    "DistributionInfo": "pywsl.api.distribution_info",
    "DistributionConfiguration": "pywsl.api.distribution_info",
    "UserSession": "pywsl.api.session",
    "WslConfig": "pywsl.api.wslconfig",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pywsl' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
