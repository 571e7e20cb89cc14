"""A bounded wait for an advisory file lock (``flock``) in the VM's processes."""

from __future__ import annotations

import fcntl
import time

__all__ = ["lock_within"]


def lock_within(fd: int, operation: int, timeout: float, interval: float) -> bool:
    """Take the lock `operation` (``LOCK_SH`` or ``LOCK_EX``) on `fd`, trying every `interval` s
    for at most `timeout` s; False when it stayed taken."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(interval)
