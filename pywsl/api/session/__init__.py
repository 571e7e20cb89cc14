"""The user session: `UserSession`, the per-user registry, registrations, folders and the
global configuration.

`UserSession` is loaded on first use, so that importing `pywsl.api.session.paths` or the registry
does not import the whole session.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pywsl.api.session.user_session import UserSession

__all__ = ["UserSession"]


def __getattr__(name: str) -> Any:
    if name != "UserSession":
        raise AttributeError(f"module 'pywsl.api.session' has no attribute {name!r}")
    value = importlib.import_module("pywsl.api.session.user_session").UserSession
    globals()[name] = value
    return value
