"""`contextlib.suppress` and a descriptor's closing, without loading `contextlib`.

`contextlib` loads `collections`, `functools` and more: over a millisecond of the VM's interpreter,
which a cold launch waits for (`pywsl.guest.vm_prestart` loads the guest while the host reads its
configuration), and of the launch's own boot. The guest's modules, the wire's, and the VM layer's
a cold launch boots with use these instead. A leaf module (`os` alone).
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["closing_fd", "suppress"]


class suppress:
    """``with suppress(OSError): ...``: the exceptions of those classes end the block quietly
    (as `contextlib.suppress`: a subclass too; anything else goes on)."""

    __slots__ = ("_exceptions",)

    def __init__(self, *exceptions: type[BaseException]) -> None:
        self._exceptions = exceptions

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        return kind is not None and issubclass(kind, self._exceptions)


class closing_fd:
    """``with closing_fd(fd) as fd: ...``: the descriptor is closed when the block ends, however."""

    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def __enter__(self) -> int:
        return self._fd

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        os.close(self._fd)
