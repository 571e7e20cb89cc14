"""Line coverage of the utility VM's processes, measured only when the test suite asks for it.

Coverage.py measures a new interpreter through a ``.pth`` file when ``COVERAGE_PROCESS_START``
or ``COVERAGE_PROCESS_CONFIG`` is set. The VM's interpreter runs without ``site`` (``-S``), so
no ``.pth`` file runs: ``pywsl.guest`` calls :func:`start` instead, before mini_init and the
roles it forks are imported. Every role of the VM is a fork of that process, and the guest needs
more than coverage.py's own ``fork`` and ``_exit`` patches:

* its roles change their root (``pivot_root`` into a distribution), after which the data folder,
  a host path, is only reachable through the host's tree that the distribution shows
  (``/mnt/host``, or the interop view of the host). Data is kept in memory and written when a
  process saves, into the folder as that process reaches it; a root without a view of the host
  (the tar worker's) gets the serialized data in a file opened before ``pivot_root``;
* most of them never exit by themselves: the VM ends with SIGKILL. So a process saves what it
  measured so far, at most four times a second, before it forks and before it waits in its
  selector; before it executes a program (the fork-to-exec half of a launch); and when it
  leaves (``os._exit`` or a normal exit). Each save replaces the process's previous file;
* coverage.py's ``fork`` patch starts a new measurement in each child, which then does not see
  the functions already running, and after ``pivot_root`` not the source files either; and it
  re-applies its patches each time, so that a few generations of forks start dozens of
  measurements at each fork. Here a forked child carries its parent's measurement on.

Nothing here runs unless one of the variables is set and coverage.py is importable.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import selectors
import time
from collections.abc import Callable
from typing import Any, NoReturn

# Where a distribution sees the host's ``/``: ``[automount] root`` + ``host`` by default, and
# the interop view every distribution has.
HOST_VIEWS = ("/mnt/host", "/run/WSL/interop/host")
REQUEST_VARIABLES = ("COVERAGE_PROCESS_CONFIG", "COVERAGE_PROCESS_START")
_CONFIG_DATA_PREFIX = ":data:"  # coverage.py's marker for serialized settings
# A process saves before it forks if it has not saved for this long (seconds).
SAVE_INTERVAL = 0.25
# ... and before it executes a program (a PATH search tries several: one save is enough).
EXEC_SAVE_INTERVAL = 0.05
PARTIAL = "partial"  # the prefix of a data file being written
DUMP = "-dump."  # <data file>-dump.<pid>.<random>: serialized data of a process without the folder
# Warnings that would otherwise go to the stderr of a process the VM runs.
QUIET = ("no-data-collected", "module-not-imported", "module-not-measured", "no-ctracer")


_started = False


def requested() -> bool:
    """Did the caller ask for this process to be measured?"""
    return any(os.environ.get(name) for name in REQUEST_VARIABLES)


def reachable_folder(folder: str) -> str | None:
    """``folder`` as this process reaches it: itself, or through a view of the host's tree."""
    if os.path.isdir(folder):
        return folder
    for view in HOST_VIEWS:
        candidate = view + folder
        if os.path.isdir(candidate) and os.access(candidate, os.W_OK | os.X_OK):
            return candidate
    return None


class _Measurement:
    """This process's measurement, kept in memory; a forked child carries it on."""

    def __init__(self, coverage: Any, config_file: str) -> None:
        self.coverage = coverage
        self.measured = coverage.Coverage(config_file=config_file, data_file=None)  # in memory
        self.data_file = os.path.abspath(self.measured.config.data_file)
        # Forks and exits are handled here; and no folder is made for an in-memory data file.
        self.measured.set_option("run:patch", [])
        self.measured.set_option("run:data_file", "/" + os.path.basename(self.data_file))
        self.measured.set_option("run:disable_warnings", list(QUIET))
        self.last_saved = 0.0
        self.suffix = ""  # this process's data file: .coverage<suffix>, chosen at its first save
        self.dump_fd = -1
        self.dump_owner = 0  # the pid that opened dump_fd (a forked child's copy is not its own)
        self.running = False

    def begin(self) -> None:
        self.measured.start()
        self.running = True

    def save(self) -> None:
        """Write everything this process has measured so far into its data file."""
        target = reachable_folder(os.path.dirname(self.data_file))
        if target is None:
            self._dump()
            return
        self._close_dump()
        name = os.path.basename(self.data_file)
        # Written under another name, then renamed over this process's file: a process killed
        # while it writes leaves no half-written file where the data files are combined.
        written = self.coverage.CoverageData(basename=os.path.join(target, PARTIAL + name), suffix=True)
        written.update(self.measured.get_data())
        written.write()
        partial = written.data_filename()
        if not self.suffix:
            # ".<host>.pid<pid>.X<random>x", without the hash of this first save's data that
            # coverage.py appends (".H<hash>h"): combining skips files whose hash it has seen.
            suffix = os.path.basename(partial)[len(PARTIAL + name) :]
            self.suffix = suffix.rpartition(".H")[0] or suffix
        os.rename(partial, os.path.join(target, name + self.suffix))
        self.last_saved = time.monotonic()

    def before_root_change(self) -> None:
        """About to ``pivot_root`` into a tree that may not show the host (the tar worker's):
        save, and open a file in the data folder that stays writable after the change."""
        self.save_quietly()
        target = reachable_folder(os.path.dirname(self.data_file))
        if target is None or self.dump_owner == os.getpid():
            return
        name = f"{os.path.basename(self.data_file)}{DUMP}{os.getpid()}.{os.urandom(6).hex()}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        with contextlib.suppress(OSError):
            self.dump_fd = os.open(os.path.join(target, name), flags, 0o644)
            self.dump_owner = os.getpid()

    def _dump(self) -> None:
        """No folder reachable: coverage.py's serialized data into the file opened before."""
        if self.dump_owner != os.getpid():
            return
        payload = self.measured.get_data().dumps()
        os.ftruncate(self.dump_fd, 0)
        os.pwrite(self.dump_fd, payload, 0)
        self.last_saved = time.monotonic()

    def _close_dump(self) -> None:
        if self.dump_owner == os.getpid():
            with contextlib.suppress(OSError):
                os.close(self.dump_fd)
        self.dump_owner = 0

    def save_quietly(self) -> None:
        with contextlib.suppress(Exception):
            self.save()

    def until_next_save(self) -> float:
        return max(0.0, self.last_saved + SAVE_INTERVAL - time.monotonic())

    def before_fork(self) -> None:
        """Save now and then: a process that never exits by itself keeps what it did until here."""
        if self.running and self.until_next_save() == 0.0:
            self.save_quietly()

    def waiting(self, select: Callable[[float | None], list[Any]], timeout: float | None) -> list[Any]:
        """A selector about to wait: save first, at most every SAVE_INTERVAL, so that a process
        killed while it waits (the VM ends with SIGKILL) keeps what it did. Returns the events
        as the selector would, after the same timeout."""
        if not self.running or (timeout is not None and timeout <= 0):
            return select(timeout)
        wait = self.until_next_save()
        if wait > 0.0 and (timeout is None or timeout > wait):
            ready = select(wait)
            if ready:
                return ready
            timeout = None if timeout is None else timeout - wait
            wait = 0.0
        if wait == 0.0:
            self.save_quietly()
        return select(timeout)

    def after_fork_in_child(self) -> None:
        self.last_saved = 0.0  # what the parent saved is not this child's
        self.suffix = ""

    def before_exec(self) -> None:
        """A forked child about to execute a program: its data since the fork would be lost."""
        if self.running and time.monotonic() - self.last_saved >= EXEC_SAVE_INTERVAL:
            self.save_quietly()

    def at_exit(self) -> None:
        if not self.running:
            return
        self.running = False
        with contextlib.suppress(Exception):
            self.measured.stop()
        self.save_quietly()


def start() -> None:
    """Measure this process and every child it forks, if asked and coverage.py is there."""
    global _started
    if _started or not requested():
        return
    _started = True
    try:
        import sqlite3.dump  # noqa: F401  (loaded lazily by a dump, when the files may be gone)

        import coverage
    except ImportError:
        return
    data = os.environ.get("COVERAGE_PROCESS_CONFIG")
    config_file = _CONFIG_DATA_PREFIX + data if data else os.environ["COVERAGE_PROCESS_START"]
    measurement = _Measurement(coverage, config_file)
    measurement.begin()
    os.register_at_fork(before=measurement.before_fork, after_in_child=measurement.after_fork_in_child)
    atexit.register(measurement.at_exit)
    _save_at_exit_and_exec(measurement)
    _save_when_waiting(measurement)
    _save_before_root_changes(measurement)


def _save_at_exit_and_exec(measurement: _Measurement) -> None:
    real_exit = os._exit
    real_execve = os.execve

    def exit_saving(status: int) -> NoReturn:
        measurement.at_exit()
        real_exit(status)

    def execve_saving(path: Any, argv: Any, environment: Any) -> NoReturn:
        measurement.before_exec()
        real_execve(path, argv, environment)

    os._exit = exit_saving
    os.execve = execve_saving  # type: ignore[assignment]  # the guest executes programs with it


def _save_when_waiting(measurement: _Measurement) -> None:
    real_select = selectors.EpollSelector.select  # the guest's loops wait in DefaultSelector

    def select_saving(selector: selectors.EpollSelector, timeout: float | None = None) -> list[Any]:
        return measurement.waiting(lambda wait: real_select(selector, wait), timeout)

    selectors.EpollSelector.select = select_saving  # type: ignore[method-assign,assignment]


def _save_before_root_changes(measurement: _Measurement) -> None:
    from pywsl.guest import syscalls

    real_pivot_root = syscalls.pivot_root

    def pivot_root_saving(new_root: str, put_old: str) -> None:
        measurement.before_root_change()
        real_pivot_root(new_root, put_old)

    syscalls.pivot_root = pivot_root_saving
