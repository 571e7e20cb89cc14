"""Line coverage of pywsl's ``-S`` processes, measured only when the test suite asks for it.

Coverage.py measures a new interpreter through a ``.pth`` file when ``COVERAGE_PROCESS_START``
or ``COVERAGE_PROCESS_CONFIG`` is set. The utility VM's interpreter and the ``qemu`` backend's
monitor run without ``site`` (``-S``), so no ``.pth`` file runs: ``pywsl.guest`` (before mini_init
and the roles it forks are imported) and the monitor's ``main`` call :func:`start` instead. This
module imports no other part of pywsl, so that both layers can use it. Every role of the VM is a
fork of that process, and the guest needs more than coverage.py's own ``fork`` and ``_exit``
patches:

* its roles change their root (``pivot_root`` into a distribution), after which the data folder,
  a host path, is only reachable through the host's tree that the distribution shows
  (``/mnt/host``, or the interop view of the host). Data is kept in memory and written when a
  process saves, into the folder as that process reaches it; a root without a view of the host
  (the tar worker's) gets the serialized data in a file opened before ``pivot_root``
  (:meth:`Measurement.before_root_change`, which ``pywsl.guest`` calls), and a process whose
  folder a mount hid (mini_init's tmpfs on ``/tmp``) in a file it makes through the folder's
  descriptor, opened when it started (kept open through ``os.closerange``). Such data goes into
  two files in turn, so that a process killed while it writes one keeps the other;
* most of them never exit by themselves: the VM ends with SIGKILL. So a process saves what it
  measured so far, at most four times a second, before it forks and before it waits in its
  selector; before it executes a program (the fork-to-exec half of a launch, the monitor's file
  servers); and when it leaves (``os._exit`` or a normal exit). Each save replaces the process's
  previous file;
* coverage.py's ``fork`` patch starts a new measurement in each child, which then does not see
  the functions already running, and after ``pivot_root`` not the source files either; and it
  re-applies its patches each time, so that a few generations of forks start dozens of
  measurements at each fork. Here a forked child carries its parent's measurement on.

A ``qemu`` VM gets no environment from the host: its pid 1 is asked on the kernel command line
(:func:`vm_request`: the words ``PYWSL_COVERAGE`` (the configuration file),
``PYWSL_COVERAGE_FILE`` (the data file) and ``PYWSL_COVERAGE_SOURCE`` (pywsl's folder), all host
paths). It reads the configuration through the host's files (``/run/pywsl/host``), measures
pywsl's files as it imports them (from a folder the host shares) and saves them under the host's
names.

The interop client, which a distribution's launcher starts with the host's interpreter (``-I
-S``, an environment of the distribution's), is asked by the launcher itself: init writes the
launcher while it is measured, and :func:`client_code` gives the launcher's code the settings,
coverage.py's folder and the data folder as the distribution reaches them (:func:`follow`).

Nothing here runs unless one of the variables is set and coverage.py is importable.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import selectors
import stat
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn

# Where a process sees the host's ``/``: in a distribution ``[automount] root`` + ``host`` by
# default and the interop view every distribution has; in a ``qemu`` VM's own root the host's
# files that the initramfs mounts.
HOST_VIEWS = ("/mnt/host", "/run/WSL/interop/host", "/run/pywsl/host")
REQUEST_VARIABLES = ("COVERAGE_PROCESS_CONFIG", "COVERAGE_PROCESS_START")
# The kernel command line's words that ask a ``qemu`` VM's pid 1 to measure itself.
VM_CONFIG = "PYWSL_COVERAGE"
VM_DATA_FILE = "PYWSL_COVERAGE_FILE"
VM_SOURCE = "PYWSL_COVERAGE_SOURCE"
VM_WORDS = (VM_CONFIG, VM_DATA_FILE, VM_SOURCE)
PACKAGE_FOLDER = os.path.dirname(os.path.abspath(__file__))  # pywsl's folder, as this process sees it
_CONFIG_DATA_PREFIX = ":data:"  # coverage.py's marker for serialized settings
# A process saves before it forks if it has not saved for this long (seconds).
SAVE_INTERVAL = 0.25
# ... and before it executes a program (a PATH search tries several: one save is enough).
EXEC_SAVE_INTERVAL = 0.05
PARTIAL = "partial"  # the prefix of a data file being written
DUMP = "-dump."  # <data file>-dump.<pid>.<random>.<a|b>: serialized data of a process without the folder
# Warnings that would otherwise go to the stderr of a process the VM runs.
QUIET = ("no-data-collected", "module-not-imported", "module-not-measured", "no-ctracer")


_measurement: Measurement | None = None
_started = False


def requested() -> bool:
    """Did the caller ask for this process to be measured?"""
    return any(os.environ.get(name) for name in (*REQUEST_VARIABLES, VM_CONFIG))


def reachable_folder(folder: str) -> str | None:
    """``folder`` as this process reaches it: itself, or through a view of the host's tree."""
    if os.path.isdir(folder):
        return folder
    for view in HOST_VIEWS:
        candidate = view + folder
        if os.path.isdir(candidate) and os.access(candidate, os.W_OK | os.X_OK):
            return candidate
    return None


def reachable_file(path: str) -> str | None:
    """The host's file ``path`` as this process reaches it: itself, or through a view of the host."""
    for candidate in (path, *(view + path for view in HOST_VIEWS)):
        if os.path.isfile(candidate) and os.access(candidate, os.R_OK):
            return candidate
    return None


def vm_request() -> dict[str, str]:
    """The kernel command line's words that ask a ``qemu`` VM to measure itself as this process is
    measured (asked by ``COVERAGE_PROCESS_*``); none when it is not, or its settings name no file.

    The settings are those of this process's running measurement: a new ``Coverage`` object made
    here would tell the measurement coverage.py started in this process not to save its data."""
    coverage = sys.modules.get("coverage")
    if coverage is None or not any(os.environ.get(name) for name in REQUEST_VARIABLES):
        return {}
    measured = coverage.Coverage.current()
    if measured is None or not measured.config.config_file:
        return {}
    settings = measured.config
    words = dict(
        zip(
            VM_WORDS,
            (os.path.abspath(settings.config_file), os.path.abspath(settings.data_file), PACKAGE_FOLDER),
            strict=True,
        )
    )
    # A word ends at a space; quotes would change it.
    return {} if any(" " in path or '"' in path for path in words.values()) else words


def _config_file() -> str:
    data = os.environ.get("COVERAGE_PROCESS_CONFIG")
    return _CONFIG_DATA_PREFIX + data if data else os.environ["COVERAGE_PROCESS_START"]


class PathMap:
    """The host's names of the files a ``qemu`` VM imports from pywsl's shared folder."""

    def __init__(self, guest_folder: str, host_folder: str) -> None:
        self.guest_folder = guest_folder
        self.host_folder = host_folder

    def __call__(self, path: str) -> str:
        if path.startswith(self.guest_folder + "/"):
            return self.host_folder + path[len(self.guest_folder) :]
        return path


class Measurement:
    """This process's measurement, kept in memory; a forked child carries it on."""

    def __init__(
        self, coverage: Any, config_file: str, data_file: str | None = None, path_map: PathMap | None = None
    ) -> None:
        self.coverage = coverage
        # The configuration's real name, or its serialized settings (for client_code).
        serialized = config_file.startswith(_CONFIG_DATA_PREFIX)
        self.config_file = config_file if serialized else os.path.realpath(config_file)
        # coverage.py's folder, for a process started from a view of this tree (client_code)
        self.library = os.path.realpath(os.path.dirname(os.path.dirname(coverage.__file__)))
        self.measured = coverage.Coverage(config_file=config_file, data_file=None)  # in memory
        self.data_file = os.path.abspath(data_file or self.measured.config.data_file)
        self.path_map = path_map
        # Forks and exits are handled here; and no folder is made for an in-memory data file.
        self.measured.set_option("run:patch", [])
        self.measured.set_option("run:data_file", "/" + os.path.basename(self.data_file))
        self.measured.set_option("run:disable_warnings", list(QUIET))
        if path_map is not None:  # the settings name the host's files: pywsl's, here under another name
            self.measured.set_option("run:include", [path_map.guest_folder + "/*"])
            self.measured.set_option("run:source", None)
        self.last_saved = 0.0
        self.suffix = ""  # this process's data file: .coverage<suffix>, chosen at its first save
        # Two dump files written in turn: a process killed while it writes one keeps the other.
        self.dump_fds: list[int] = []
        self.dump_turn = 0
        self.dump_owner = 0  # the pid that opened dump_fds (a forked child's copy is not its own)
        # The data folder, opened at the start: a dump file can be made in it after a mount hid
        # it (mini_init's tmpfs on /tmp) or after a change of root.
        self.folder_fd = -1
        self.folder_id = (0, 0)
        self.running = False

    def begin(self) -> None:
        folder = reachable_folder(os.path.dirname(self.data_file))
        if folder is not None:
            with contextlib.suppress(OSError):
                self.folder_fd = os.open(folder, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
                info = os.fstat(self.folder_fd)
                self.folder_id = (info.st_dev, info.st_ino)
        self.measured.start()
        self.running = True

    def opened_folder(self) -> int:
        """The data folder's descriptor, or -1 when this process closed it since (the guest's
        children close the descriptors they do not know; the number may be another file's now)."""
        with contextlib.suppress(OSError):
            info = os.fstat(self.folder_fd)
            if stat.S_ISDIR(info.st_mode) and (info.st_dev, info.st_ino) == self.folder_id:
                return self.folder_fd
        return -1

    def measured_data(self) -> Any:
        """What this process measured so far, under the host's names of the files."""
        data = self.measured.get_data()
        if self.path_map is None:
            return data
        mapped = self.coverage.CoverageData(no_disk=True)
        mapped.update(data, map_path=self.path_map)
        return mapped

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
        written.update(self.measured.get_data(), map_path=self.path_map)
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
        if self.dump_owner != os.getpid():
            self._open_dump()

    def _open_dump(self) -> None:
        """A dump file of this process's own: by the folder's name, else through its descriptor."""
        name = f"{os.path.basename(self.data_file)}{DUMP}{os.getpid()}.{os.urandom(6).hex()}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        target = reachable_folder(os.path.dirname(self.data_file))
        folder = self.opened_folder() if target is None else -1
        if target is None and folder < 0:
            return
        opened: list[int] = []
        try:
            for slot in "ab":
                if target is not None:
                    opened.append(os.open(os.path.join(target, f"{name}.{slot}"), flags, 0o644))
                else:
                    opened.append(os.open(f"{name}.{slot}", flags, 0o644, dir_fd=folder))
        except OSError:
            for fd in opened:
                os.close(fd)
            return
        self.dump_fds, self.dump_turn, self.dump_owner = opened, 0, os.getpid()

    def _dump(self) -> None:
        """No folder reachable: coverage.py's serialized data into this process's dump file."""
        if self.dump_owner != os.getpid():
            self._open_dump()
        if self.dump_owner != os.getpid():
            return
        payload = self.measured_data().dumps()
        fd = self.dump_fds[self.dump_turn]
        os.ftruncate(fd, 0)
        os.pwrite(fd, payload, 0)
        self.dump_turn ^= 1
        self.last_saved = time.monotonic()

    def _close_dump(self) -> None:
        if self.dump_owner == os.getpid():
            for fd in self.dump_fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
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


def start() -> Measurement | None:
    """Measure this process and every child it forks, if asked and coverage.py is there: the
    measurement (the one already running when called again), or None."""
    global _started
    if _started or not requested():
        return _measurement
    _started = True
    try:
        import sqlite3.dump  # noqa: F401  (loaded lazily by a dump, when the files may be gone)

        import coverage
    except ImportError:
        return None
    settings = _settings()
    if settings is None or coverage.Coverage.current() is not None:  # or coverage.py's start-up ran
        return None
    return _begin(coverage, *settings)


def follow(config_file: str, data_file: str, source: str) -> Measurement | None:
    """Measure the interop client as the process that wrote its launcher was measured
    (:func:`client_code`): ``config_file`` and the folder of ``data_file`` as this process reaches
    them, ``source`` the host's name of pywsl's folder. None when coverage.py is not there."""
    global _started
    if _started:
        return _measurement
    _started = True
    try:
        import coverage

        return _begin(coverage, config_file, data_file, PathMap(PACKAGE_FOLDER, source))
    except Exception:  # the client runs on unmeasured rather than not at all
        return None


def _begin(coverage: Any, config_file: str, data_file: str | None, path_map: PathMap | None) -> Measurement:
    global _measurement
    measurement = Measurement(coverage, config_file, data_file, path_map)
    measurement.begin()
    os.register_at_fork(before=measurement.before_fork, after_in_child=measurement.after_fork_in_child)
    atexit.register(measurement.at_exit)
    _save_at_exit_and_exec(measurement)
    _save_when_waiting(measurement)
    _keep_folder_open(measurement)
    _measurement = measurement
    return measurement


def client_code(view: str, mount_point: str | None) -> str:
    """Python statements for the interop client's launcher, to run once ``pywsl`` can be imported:
    they start measuring the client as this process is measured (pid 1 of a distribution, after
    its change of root); "" when this process is not measured or the distribution cannot reach
    the data folder. ``view`` shows this process's former root read-only (coverage.py and the
    configuration are read through it); ``mount_point`` is where the host's tree is mounted."""
    measurement = _measurement
    if measurement is None or not measurement.running:
        return ""
    folder = os.path.dirname(measurement.data_file)
    candidates = [folder, *(prefix + folder for prefix in (mount_point or "", *HOST_VIEWS) if prefix)]
    reached = next((path for path in candidates if _writable(path)), None)
    config_file = measurement.config_file
    if not config_file.startswith(_CONFIG_DATA_PREFIX):
        config_file = view + config_file
    # A qemu VM's view shows the host's tree, where its own names of these files may not exist.
    seen = os.path.isdir(view + measurement.library) and (
        config_file.startswith(_CONFIG_DATA_PREFIX) or os.path.isfile(config_file)
    )
    if reached is None or not seen:
        return ""
    source = measurement.path_map(PACKAGE_FOLDER) if measurement.path_map else PACKAGE_FOLDER
    data_file = os.path.join(reached, os.path.basename(measurement.data_file))
    return (
        f"sys.path.append({view + measurement.library!r}); from pywsl import coverage_startup; "
        f"coverage_startup.follow({config_file!r}, {data_file!r}, {source!r})"
    )


def _writable(folder: str) -> bool:
    return os.path.isdir(folder) and os.access(folder, os.W_OK | os.X_OK)


def _settings() -> tuple[str, str | None, PathMap | None] | None:
    """The configuration file, the data file and the path map, from the variables or the VM's words."""
    if any(os.environ.get(name) for name in REQUEST_VARIABLES):
        return _config_file(), None, None
    config_file = reachable_file(os.environ.get(VM_CONFIG, ""))
    data_file = os.environ.get(VM_DATA_FILE, "")
    source = os.environ.get(VM_SOURCE, "")
    if config_file is None or not os.path.isabs(data_file) or not os.path.isabs(source):
        return None
    return config_file, data_file, PathMap(PACKAGE_FOLDER, source)


def run_before(owner: Any, name: str, hook: Callable[[], None]) -> None:
    """Make the function ``owner.<name>`` call ``hook`` first (``pywsl.guest``: ``pivot_root``)."""
    real = getattr(owner, name)

    def with_hook(*args: Any, **keywords: Any) -> Any:
        hook()
        return real(*args, **keywords)

    setattr(owner, name, with_hook)


def _save_at_exit_and_exec(measurement: Measurement) -> None:
    real_exit = os._exit
    real_execve = os.execve
    real_execv = os.execv

    def exit_saving(status: int) -> NoReturn:
        measurement.at_exit()
        real_exit(status)

    def execve_saving(path: Any, argv: Any, environment: Any) -> NoReturn:
        measurement.before_exec()
        real_execve(path, argv, environment)

    def execv_saving(path: Any, argv: Any) -> NoReturn:
        measurement.before_exec()
        real_execv(path, argv)

    os._exit = exit_saving
    os.execve = execve_saving  # type: ignore[assignment]  # the guest executes programs with it
    os.execv = execv_saving  # the monitor's children execute their file servers with it


def _save_when_waiting(measurement: Measurement) -> None:
    real_select = selectors.EpollSelector.select  # the guest's loops wait in DefaultSelector

    def select_saving(selector: selectors.EpollSelector, timeout: float | None = None) -> list[Any]:
        return measurement.waiting(lambda wait: real_select(selector, wait), timeout)

    selectors.EpollSelector.select = select_saving  # type: ignore[method-assign,assignment]


def _keep_folder_open(measurement: Measurement) -> None:
    """The guest's forked children close every descriptor they do not know (``os.closerange``):
    the data folder's stays open, for the dump files of processes that no longer reach it."""
    real_closerange = os.closerange

    def closerange_keeping(low: int, high: int) -> None:
        kept = measurement.opened_folder()
        if low <= kept < high:
            real_closerange(low, kept)
            low = kept + 1
        real_closerange(low, high)

    os.closerange = closerange_keeping
