"""`InstallBuiltinDistribution`: the service builds a built-in distribution for a user, as root.

debootstrap needs root, so an unprivileged `pywsl --install Debian` asks the service. The request
names a catalog entry and nothing else about the build: the suite, mirror, keyring and script are
the catalog's and the host's (`builtin_catalog`, `apt_sources`), never the caller's, so a user
cannot make root run debootstrap against anything of theirs. The build runs as root in a private
folder of root's (`builtin_cache.BuildCache`, in debootstrap's own private mount namespace as every
build does); the archive is then imported through the user's own `register_distribution`, exactly
as `--import` of a file would be (the location, its folders and ownership are handled there, with
the user's rights).

Builds are bounded (`BuildQueue`): one at a time per service, stopped after
`BUILD_TIMEOUT_SECONDS`; while one runs at most `MAX_WAITING_BUILDS` more wait, each at most
`BUILD_WAIT_SECONDS`, and a user has at most one build running or waiting; anything beyond is
`ERROR_BUSY` at once. A finished archive is kept for a while
and reused, so users waiting for the same distribution get it without another build. When the
client goes away the request's token fires: a waiting request leaves the queue, a build kills
debootstrap's process group and removes its folder, an import rolls back.

Progress reaches the client as objects: `{"status": text}` for each step (the same messages the root
command line shows) and `{"done": n, "total": n}` for the step's progress (permille of the build,
then archive bytes imported).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from pywsl.api import cancellation
from pywsl.api.cancellation import CancelToken
from pywsl.api.errors import WslError, error_context
from pywsl.api.install import builtin_catalog
from pywsl.api.install.builtin_cache import BuildCache
from pywsl.api.install.builtin_source import build_status
from pywsl.api.session.registry import validate_name

__all__ = [
    "BUILD_TIMEOUT_SECONDS",
    "BUILD_WAIT_SECONDS",
    "MAX_WAITING_BUILDS",
    "BuildQueue",
    "builtin_entry",
    "install_builtin_distribution",
]

MAX_WAITING_BUILDS = 4
BUILD_TIMEOUT_SECONDS = 60 * 60.0  # debootstrap --variant=minbase takes minutes; a stalled mirror hours
BUILD_WAIT_SECONDS = BUILD_TIMEOUT_SECONDS  # a waiter outlasts the one build it waits for
_BUSY_HRESULT = 0x800700AA  # HRESULT_FROM_WIN32(ERROR_BUSY)
_NAME_SHOWN = 64  # characters of an unknown name repeated in the error

Report = Callable[[dict[str, Any]], Any]


def _busy(message: str) -> WslError:
    return WslError("ERROR_BUSY", message, hresult=_BUSY_HRESULT)


class BuildQueue:
    """One build at a time; a bounded number of requests wait, each for a bounded time, and a user
    has at most one request running or waiting."""

    def __init__(
        self, *, max_waiting: int = MAX_WAITING_BUILDS, wait_seconds: float = BUILD_WAIT_SECONDS
    ) -> None:
        self.max_waiting = max_waiting
        self.wait_seconds = wait_seconds
        self._condition = threading.Condition()
        self._building = False
        self._waiting = 0
        self._users: set[int] = set()

    @property
    def waiting(self) -> int:
        with self._condition:
            return self._waiting

    @contextlib.contextmanager
    def turn(
        self, uid: int, token: CancelToken | None = None, on_wait: Callable[[], Any] | None = None
    ) -> Iterator[None]:
        """The block runs as the one build of the service. `on_wait` is called once if the request
        has to wait for another build first."""
        cancel = token if token is not None else cancellation.current()
        with self._condition:
            if uid in self._users:
                raise _busy(
                    "A built-in distribution is already being built for you; "
                    "wait until that install has finished."
                )
            if self._building and self._waiting >= self.max_waiting:
                raise _busy("The pywsl service is building other distributions; try again later.")
            self._users.add(uid)
            self._waiting += 1  # counted from here, so that the bound holds between the checks
            must_wait = self._building
        try:
            try:
                if must_wait and on_wait is not None:
                    on_wait()
                self._acquire(cancel)
            finally:
                with self._condition:
                    self._waiting -= 1
            try:
                yield
            finally:
                with self._condition:
                    self._building = False
                    self._condition.notify_all()
        finally:
            with self._condition:
                self._users.discard(uid)

    def _acquire(self, token: CancelToken) -> None:
        deadline = time.monotonic() + self.wait_seconds

        def wake() -> None:
            with self._condition:
                self._condition.notify_all()

        with token.on_cancel(wake), self._condition:
            while self._building:
                token.check()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise _busy(
                        f"Another distribution was still being built after "
                        f"{self.wait_seconds:.0f} s; try again later."
                    )
                self._condition.wait(remaining)
            token.check()
            self._building = True


_QUEUE = BuildQueue()


def builtin_entry(distribution: str) -> builtin_catalog.BuiltinDistribution:
    """The catalog entry named `distribution` (case-insensitive) that this host can build.

    Only a catalog name is accepted: anything else (a path, a URL, a suite) is not found.
    """
    entry = builtin_catalog.lookup_builtin(distribution) if isinstance(distribution, str) else None
    if entry is None:
        shown = distribution[:_NAME_SHOWN] if isinstance(distribution, str) else ""
        raise WslError(
            "WSL_E_DISTRO_NOT_FOUND",
            f"{shown!r} is not a distribution pywsl builds. '--list --online' lists the ones it can install.",
        )
    return builtin_catalog.require_buildable(entry)


def _ensure_name_free(session: Any, name: str) -> None:
    try:
        session.get_distribution_id(name, list_all=True)
    except WslError as error:
        if error.code == "WSL_E_DISTRO_NOT_FOUND":
            return
        raise
    raise WslError("ERROR_ALREADY_EXISTS", "A distribution with the supplied name already exists.")


def _archive(
    entry: builtin_catalog.BuiltinDistribution, uid: int, cache: BuildCache, queue: BuildQueue, report: Report
) -> int:
    """A read-only descriptor of the built archive: the kept one, or one built now."""
    fd = cache.open_fresh(entry)
    if fd is not None:
        return fd

    def waiting() -> None:
        report({"status": "Waiting for another distribution build to finish..."})

    with queue.turn(uid, on_wait=waiting):
        fd = cache.open_fresh(entry)  # built by the request this one waited for
        if fd is not None:
            return fd
        report({"status": build_status(entry)})

        def built(done: int, total: int, _text: str) -> None:
            report({"done": done, "total": total})

        return _bounded_build(entry, cache, built)


def _bounded_build(
    entry: builtin_catalog.BuiltinDistribution, cache: BuildCache, progress: Callable[[int, int, str], None]
) -> int:
    """`cache.build` under a token that fires when the request's does, or after
    `BUILD_TIMEOUT_SECONDS` (a mirror that stalls must not hold the one build forever)."""
    request = cancellation.current()
    build = CancelToken()
    timer = threading.Timer(BUILD_TIMEOUT_SECONDS, build.cancel)
    timer.daemon = True
    with request.on_cancel(build.cancel), cancellation.cancel_scope(build):
        timer.start()
        try:
            return cache.build(entry, progress=progress)
        except WslError as error:
            if error.code == "E_ABORT" and not request.cancelled:
                raise WslError(
                    "WSL_E_INSTALL_PROCESS_FAILED",
                    f"Building {entry.name} took longer than {BUILD_TIMEOUT_SECONDS / 60:.0f} "
                    "minutes and was stopped.",
                ) from None
            raise
        finally:
            timer.cancel()


def install_builtin_distribution(
    session: Any,
    distribution: str,
    *,
    name: str | None = None,
    location: str | None = None,
    version: int = 2,
    vhd_size: int | None = None,
    fixed_vhd: bool = False,
    progress: Report | None = None,
    cache: BuildCache | None = None,
    queue: BuildQueue | None = None,
) -> Any:
    """Build `distribution` (a built-in's name) and register it for the user of `session` as
    `name` (default: the built-in's name) in `location`; returns its `DistributionInfo`.

    `progress` gets the objects the module's text describes.
    """

    def report(value: dict[str, Any]) -> None:
        if progress is not None:
            progress(value)

    with error_context("InstallDistro"):
        entry = builtin_entry(distribution)
        target = name if name is not None else entry.name
        validate_name(target)
        _ensure_name_free(session, target)
        fd = _archive(
            entry, int(session.identity.uid), cache or BuildCache.from_environment(), queue or _QUEUE, report
        )
        try:
            cancellation.current().check()
            report({"status": f"Installing: {entry.friendly_name}"})
            total = os.fstat(fd).st_size

            def imported(done: int) -> None:
                report({"done": done, "total": total})

            disk: dict[str, Any] = {} if vhd_size is None else {"vhd_size": vhd_size, "fixed_vhd": fixed_vhd}
            return session.register_distribution(
                target, fd, location=location, version=version, run_oobe=True, progress=imported, **disk
            )
        finally:
            os.close(fd)
