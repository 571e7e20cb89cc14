"""Errors of the host side of the utility VM."""

from __future__ import annotations

import os


class VmError(OSError):
    """A utility VM operation failed: boot, start of a distribution, import, export, a process.

    ``errno`` is the guest's error code (``CreateInstanceResult.Result``) when it sent one, and
    ``step`` its ``FailureStep``.
    """

    def __init__(self, message: str, *, code: int | None = None, step: int | None = None) -> None:
        if code:
            super().__init__(code, message)
        else:
            super().__init__(message)
        self.message = message
        self.step = step

    def __str__(self) -> str:
        return self.message


def describe_result(code: int) -> str:
    """A guest result code in words (an errno, or tar's exit status)."""
    if 0 < code < 4096:
        return os.strerror(code)
    return f"error {code}"
