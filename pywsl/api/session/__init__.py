"""The user session: `UserSession`, the per-user registry, registrations, folders and the
global configuration.

`UserSession` is loaded on first use, so that importing `pywsl.api.session.paths` or the registry
does not import the whole session.
"""

from __future__ import annotations

TYPE_CHECKING = False  # `typing` and `importlib` would cost every launch: loaded only when used
if TYPE_CHECKING:
    from typing import Any

    from pywsl.api.session.user_session import UserSession

__all__ = ["UserSession"]


def __getattr__(name: str) -> Any:
    if name != "UserSession":
        raise AttributeError(f"module 'pywsl.api.session' has no attribute {name!r}")
    import importlib  # only now: `from package import module` asks here first

    value = importlib.import_module("pywsl.api.session.user_session").UserSession
    globals()[name] = value
    return value
