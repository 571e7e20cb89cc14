"""`pywsl.connect()`: how a client reaches its `ILxssUserSession`.

wsl.exe activates the COM class `LxssUserSession`, which the service runs for the caller. pywsl
gives root the session in its own process (root can run the VM itself) and everybody else a proxy
to the root service (`pywsl.api.service.client.ServiceClient`) with the same methods. On Windows it is
the installed WslService itself, over COM (`pywsl.api.com.ComUserSession`).
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

from pywsl.api.errors import WslError

if TYPE_CHECKING:
    from pywsl.api.session.user_session import UserSession

__all__ = ["TRANSPORTS", "connect"]

TRANSPORTS = ("auto", "inprocess", "service")


def connect(transport: str = "auto") -> UserSession:
    """The calling user's session.

    `transport`: "inprocess" runs the session here (the VM needs root), "service" talks to the
    pywsl service, "auto" picks "inprocess" for root and "service" for everybody else. On Windows
    "auto" (the only transport there) is the installed WslService over COM.
    """
    if transport not in TRANSPORTS:
        choices = ", ".join(TRANSPORTS)
        raise WslError("E_INVALIDARG", f"Unknown transport {transport!r}: use one of {choices}.")
    if sys.platform == "win32":
        if transport != "auto":
            raise WslError(
                "E_INVALIDARG", f"Transport {transport!r} needs a Linux host; on Windows use 'auto'."
            )
        from pywsl.api.com import connect as connect_com

        com_session: Any = connect_com()
        return com_session  # type: ignore[no-any-return]
    if transport == "auto":
        transport = "inprocess" if os.geteuid() == 0 else "service"
    if transport == "inprocess":
        from pywsl.api.session.user_session import UserSession

        return UserSession()
    from pywsl.api.service.client import ServiceClient

    client: Any = ServiceClient()
    return client  # type: ignore[no-any-return]
