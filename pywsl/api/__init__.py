"""The user-session layer: WSL's `ILxssUserSession` and what surrounds it.

`UserSession` (in-process), the service and its client proxy, the per-user registry, the global
configuration (.wslconfig), errors (`WslError` with WSL's HRESULTs). Names are loaded on first
use, so importing one submodule (the client, the service) does not import the rest.
"""

from __future__ import annotations

TYPE_CHECKING = False  # `typing` and `importlib` would cost every launch: loaded only when used
if TYPE_CHECKING:
    from typing import Any

    from pywsl.api.connect import connect
    from pywsl.api.errors import WslError
    from pywsl.api.session.distribution_info import DistributionConfiguration, DistributionInfo
    from pywsl.api.session.registry import DistributionState
    from pywsl.api.session.user_session import UserSession
    from pywsl.api.session.wslconfig import WslConfig

__all__ = [
    "DistributionConfiguration",
    "DistributionInfo",
    "DistributionState",
    "UserSession",
    "WslConfig",
    "WslError",
    "connect",
]

_EXPORTS = {
    "connect": "pywsl.api.connect",
    "WslError": "pywsl.api.errors",
    "DistributionState": "pywsl.api.session.registry",
    "DistributionInfo": "pywsl.api.session.distribution_info",
    "DistributionConfiguration": "pywsl.api.session.distribution_info",
    "UserSession": "pywsl.api.session.user_session",
    "WslConfig": "pywsl.api.session.wslconfig",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pywsl.api' has no attribute {name!r}")
    import importlib  # only now: `from package import module` asks here first

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
