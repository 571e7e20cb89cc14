"""What one user may hold of the service: connections, running requests, and who counts as whom.

A distribution's root can switch to any id of its VM's range (65,536 host ids, ``pywsl.vm.idmap``),
so the peer uid of a connection is not a user on its own: ``RangeOwners`` maps an id inside a
user's VM range to that user (the owner), and every limit counts by owner. ``ConnectionLimits``
caps the connections held at once, in all and per owner; ``WorkerLimits`` caps the requests
running at once (each holds a thread), in all and per owner, and picks the next owner to serve
in turn. ``raise_descriptor_limit`` lifts the service's own ``RLIMIT_NOFILE`` soft limit to the
hard limit at start.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import pwd
import resource
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from pywsl.vm import idmap

__all__ = [
    "MAX_CONNECTIONS",
    "MAX_CONNECTIONS_PER_USER",
    "MAX_WORKERS",
    "MAX_WORKERS_PER_USER",
    "ConnectionLimits",
    "RangeOwners",
    "WorkerLimits",
    "raise_descriptor_limit",
]

log = logging.getLogger("pywsl.service")

# Connections held at once, in all and per owner (an idle connection costs one descriptor).
MAX_CONNECTIONS = 1024
MAX_CONNECTIONS_PER_USER = 256
# Requests being handled at once (each holds a thread), in all and per owner; more wait in turn.
MAX_WORKERS = 128
MAX_WORKERS_PER_USER = 16

_OWNER_CACHE_SECONDS = 10.0
_OWNER_CACHE_ENTRIES = 4096
_SUBUID_MAX_BYTES = 1024 * 1024


def raise_descriptor_limit() -> tuple[int, int]:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; returns the (soft, hard) now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (OSError, ValueError) as error:
            log.warning("cannot raise the descriptor limit from %d to %d: %s", soft, hard, error)
    return soft, hard


def _read_subordinate_file(path: Path) -> str:
    """``/etc/subuid`` (root's own file), read without blocking on a non-regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return ""
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""
        return file.read(_SUBUID_MAX_BYTES).decode("utf-8", errors="replace")


def _account_uid(name: str) -> int | None:
    if name.isdigit():
        return int(name)
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


def _account_gid(uid: int) -> int:
    try:
        return pwd.getpwuid(uid).pw_gid
    except KeyError:
        return uid


class RangeOwners:
    """Which host user's VM an id belongs to, asked of ``pywsl.vm.idmap`` (cached briefly)."""

    def __init__(
        self,
        *,
        subuid_path: Path = idmap.SUBUID_PATH,
        subgid_path: Path = idmap.SUBGID_PATH,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.subuid_path = subuid_path
        self.subgid_path = subgid_path
        self._clock = clock
        self._cache: dict[int, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def owner_of(self, uid: int) -> int:
        """The host user whose VM maps ``uid`` (``uid`` itself when no VM range holds it)."""
        now = self._clock()
        with self._lock:
            cached = self._cache.get(uid)
            if cached is not None and cached[1] > now:
                return cached[0]
        owner = self._find_owner(uid)
        with self._lock:
            if len(self._cache) >= _OWNER_CACHE_ENTRIES:
                self._cache.clear()
            self._cache[uid] = (owner, now + _OWNER_CACHE_SECONDS)
        return owner

    def _candidates(self, uid: int) -> Iterator[int]:
        """Users whose range could hold ``uid``: the default formula, then ``/etc/subuid`` entries."""
        offset = uid - idmap.DEFAULT_ID_BASE
        if offset >= 0 and offset // idmap.DEFAULT_RANGE_SIZE < idmap.DEFAULT_MAX_OWNER_UID:
            yield offset // idmap.DEFAULT_RANGE_SIZE
        for line in _read_subordinate_file(self.subuid_path).splitlines():
            fields = line.strip().split(":")
            if len(fields) != 3 or not (fields[1].isdigit() and fields[2].isdigit()):
                continue
            start, count = int(fields[1]), int(fields[2])
            if start <= uid < start + count:
                owner = _account_uid(fields[0])
                if owner is not None:
                    yield owner

    def _find_owner(self, uid: int) -> int:
        for candidate in self._candidates(uid):
            if candidate == uid:
                continue
            try:
                uid_map, _ = idmap.maps_for_owner(
                    candidate,
                    _account_gid(candidate),
                    subuid_path=self.subuid_path,
                    subgid_path=self.subgid_path,
                )
            except (idmap.IdMapError, OSError):
                continue
            if any(outside <= uid < outside + count for _, outside, count in uid_map):
                return candidate
        return uid


class ConnectionLimits:
    """Connections held at once: at most ``total``, and ``per_owner`` for each owner."""

    def __init__(self, total: int = MAX_CONNECTIONS, per_owner: int = MAX_CONNECTIONS_PER_USER) -> None:
        self.total = total
        self.per_owner = per_owner
        self._held: dict[int, int] = {}
        self._count = 0
        self._lock = threading.Lock()

    def admit(self, owner: int) -> bool:
        """Count one more connection of ``owner``; False (nothing counted) when over a limit."""
        with self._lock:
            mine = self._held.get(owner, 0)
            if self._count >= self.total or mine >= self.per_owner:
                return False
            self._held[owner] = mine + 1
            self._count += 1
            return True

    def release(self, owner: int) -> None:
        with self._lock:
            left = self._held.get(owner, 0) - 1
            if left < 0:
                return
            self._count -= 1
            if left:
                self._held[owner] = left
            else:
                del self._held[owner]

    def held(self, owner: int | None = None) -> int:
        with self._lock:
            return self._count if owner is None else self._held.get(owner, 0)


class WorkerLimits:
    """Requests handled at once: at most ``total``, ``per_owner`` per owner, owners served in turn.

    ``queue`` puts a ready item behind its owner's; ``next_ready`` hands out the next one that
    may start now (owners take turns), counting it as running until ``finished``.
    Not thread-safe: one thread (the service's loop) calls it.
    """

    def __init__(self, total: int = MAX_WORKERS, per_owner: int = MAX_WORKERS_PER_USER) -> None:
        self.total = total
        self.per_owner = per_owner
        self._waiting: collections.OrderedDict[int, collections.deque[object]] = collections.OrderedDict()
        self._running: dict[int, int] = {}
        self._count = 0

    @property
    def running(self) -> int:
        return self._count

    def queue(self, owner: int, item: object) -> None:
        self._waiting.setdefault(owner, collections.deque()).append(item)

    def withdraw(self, owner: int, item: object) -> bool:
        """Drop an item that has not started; False when it is not waiting."""
        waiting = self._waiting.get(owner)
        if waiting is None:
            return False
        with contextlib.suppress(ValueError):
            waiting.remove(item)
            if not waiting:
                del self._waiting[owner]
            return True
        return False

    def next_ready(self) -> tuple[int, object] | None:
        if self._count >= self.total:
            return None
        for owner in list(self._waiting):
            if self._running.get(owner, 0) >= self.per_owner:
                continue
            waiting = self._waiting.pop(owner)
            item = waiting.popleft()
            if waiting:
                self._waiting[owner] = waiting  # back of the line: the next owner goes first
            self._running[owner] = self._running.get(owner, 0) + 1
            self._count += 1
            return owner, item
        return None

    def finished(self, owner: int) -> None:
        left = self._running.get(owner, 0) - 1
        if left < 0:
            return
        self._count -= 1
        if left:
            self._running[owner] = left
        else:
            del self._running[owner]
