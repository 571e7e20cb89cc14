"""pywsl: WSL's service architecture in Python, running on Linux hosts.

`pywsl.connect()` gives the calling user's session (WSL's `ILxssUserSession`): in-process for
root, through the pywsl service otherwise. The public names are those of `pywsl.api`, loaded on
first use, so that `import pywsl.cli` or `import pywsl.wire` does not load the whole library.
"""

from __future__ import annotations

TYPE_CHECKING = False  # `typing` and `importlib` would cost every launch: loaded only when used
if TYPE_CHECKING:
    from typing import Any

    from pywsl.api import (
        DistributionConfiguration,
        DistributionInfo,
        DistributionState,
        UserSession,
        WslConfig,
        WslError,
        connect,
    )

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


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'pywsl' has no attribute {name!r}")
    import importlib  # only now: `from package import module` asks here first

    value = getattr(importlib.import_module("pywsl.api"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
