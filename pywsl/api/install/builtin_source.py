"""Building the distributions pywsl can install without a download server.

WSL's `--install` always downloads an image listed in its manifest. pywsl adds a local source: a
Debian or Ubuntu root filesystem (`builtin_catalog` lists them and says which this host can build)
made with `debootstrap --variant=minbase --include=locales,sudo <suite>` from the host's own apt
mirror, turned into a WSL-like image (`builtin_image`: first-run setup, the official apt sources,
the `en_US.UTF-8` locale), packed as a plain tar and then imported exactly like a downloaded `.wsl`
file. These entries appear in `--list --online` beside the manifest's, marked as built locally,
and are used when a name is not in the manifest or the manifest cannot be fetched.

The build runs as root (debootstrap needs it) in a private mount namespace (`unshare --mount`), so
nothing debootstrap mounts can outlive it. Its tree sits beside the destination under a temporary
name locked with `flock` (see `download.clean_stale_temporaries`) and is removed whatever happens;
debootstrap's log is kept only when the build fails, and its path is part of the error.

A build follows the cancellation token of the request it serves (`pywsl.api.cancellation`): when
the token fires (the service's client went away), debootstrap's or tar's process group is killed
at once and the build ends with `E_ABORT`, leaving nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from pywsl.api import cancellation
from pywsl.api.errors import WslError, from_os_error
from pywsl.api.install.apt_sources import host_apt_sources, mirror_for, security_mirror_for
from pywsl.api.install.builtin_catalog import BuiltinDistribution, require_buildable
from pywsl.api.install.builtin_image import image_packages, make_wsl_image
from pywsl.api.install.download import TemporaryFile

__all__ = [
    "DebootstrapProgress",
    "build_rootfs_archive",
    "build_status",
    "debootstrap_path",
]

# (progress total, message): the callback gets permille of the whole build and debootstrap's text.
BuildProgress = Callable[[int, int, str], None]


def build_status(entry: BuiltinDistribution) -> str:
    """The step message a build shows (the root command line and the service say the same)."""
    return f"Building: {entry.friendly_name} (debootstrap --variant=minbase {entry.suite})"


def debootstrap_path() -> str | None:
    """debootstrap's path when it is installed (it lives in sbin)."""
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return shutil.which("debootstrap", path=search)


# -- debootstrap's progress protocol (--debian-installer) --------------------------------------

# Stages of a minbase run and the share of the whole bar each one covers (start, end, in permille).
_STAGES = {
    "DOWNREL": (0, 10),
    "DOWNRELSIG": (10, 20),
    "DOWNPKGS": (20, 120),
    "SIZEDEBS": (120, 130),
    "DOWNDEBS": (130, 550),
    "EXTRACTPKGS": (550, 650),
    "INSTCORE": (650, 700),
    "UNPACKREQ": (700, 800),
    "CONFREQ": (800, 900),
    "UNPACKBASE": (900, 930),
    "CONFBASE": (930, 950),
}
BUILD_END = 950  # setting up the image and packing the tree take the rest
PACK_START = 975
TOTAL = 1000


def _printf(fmt: str, args: list[str]) -> str:
    values = iter(args)

    def substitute(match: re.Match[str]) -> str:
        return "%" if match.group(0) == "%%" else next(values, "")

    return re.sub(r"%%|%[-0-9.]*[sdiu]", substitute, fmt).strip()


class DebootstrapProgress:
    """Turns debootstrap's fd 3 lines (`P:`, `PF:`, `I:`/`IA:`/`IF:`, `E:`...) into one bar."""

    def __init__(self, callback: BuildProgress | None) -> None:
        self.callback = callback
        self.stage = ""
        self.now = 0
        self.end = 0
        self.message = ""
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self._args: list[str] = []
        self._best = 0

    def permille(self) -> int:
        start, stop = _STAGES.get(self.stage, (self._best, self._best))
        fraction = self.now / self.end if self.end > 0 else 0.0
        value = start + int((stop - start) * min(max(fraction, 0.0), 1.0))
        self._best = max(self._best, value)  # never move backwards
        return self._best

    def _emit(self) -> None:
        if self.callback is not None:
            self.callback(self.permille(), TOTAL, self.message)

    def feed(self, line: str) -> None:
        tag, _, rest = line.partition(": ")
        if tag in ("P", "I", "E", "W"):
            self._args = []
        if tag == "P":
            fields = rest.split()
            if len(fields) >= 2 and fields[0].isdigit() and fields[1].isdigit():
                self.now, self.end = int(fields[0]), int(fields[1])
                if len(fields) >= 3:
                    self.stage = fields[2]
                self._emit()
        elif tag in ("PA", "IA", "EA", "WA"):
            self._args.append(rest)
        elif tag in ("IF", "PF"):
            self.message = _printf(rest, self._args)
            self._emit()
        elif tag == "EF":
            self.errors.append(_printf(rest, self._args))
        elif tag == "WF":
            self.warnings.append(_printf(rest, self._args))


# -- building ---------------------------------------------------------------------------------


def _log_folder() -> Path:
    state = os.environ.get("XDG_STATE_HOME", "")
    base = Path(state) if state and os.path.isabs(state) else Path.home() / ".local" / "state"
    return base / "pywsl"


def _stop(process: subprocess.Popen[bytes]) -> None:
    """End a child started in its own session, and everything it started."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 30.0)):
        if process.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(wait)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # stragglers of the group


def _killer(process: subprocess.Popen[bytes]) -> Callable[[], None]:
    """What a cancelled build does at once: kill the child's whole process group (the waiting
    thread then sees the end of its output and cleans up)."""

    def kill() -> None:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)

    return kill


def _run_debootstrap(
    entry: BuiltinDistribution,
    tree: Path,
    mirror: str,
    log: Path,
    lock_fd: int,
    progress: DebootstrapProgress,
) -> int:
    debootstrap = debootstrap_path()
    if debootstrap is None:
        raise WslError("ERROR_FILE_NOT_FOUND", "debootstrap is not installed (apt-get install debootstrap)")
    command = [
        debootstrap,
        "--debian-installer",
        "--variant=minbase",
        f"--keyring={entry.keyring}",
        "--include=" + ",".join(image_packages(entry.vendor)),
        entry.suite,
        str(tree),
        mirror,
    ]
    if entry.script is not None:
        command.append(entry.script)
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    environment = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "LC_ALL": "C",
        "HOME": "/root",
        "DEBIAN_FRONTEND": "noninteractive",
    }
    try:
        with open(log, "wb") as log_file:
            # fd 3 carries the progress protocol; the lock fd is inherited so that the build's
            # folder counts as in use for as long as any of its processes lives.
            process = subprocess.Popen(
                [
                    "unshare",
                    "--mount",
                    "--propagation",
                    "private",
                    "--",
                    "/bin/sh",
                    "-c",
                    'exec 3>"/proc/self/fd/$0"; exec "$@"',
                    str(write_end),
                    *command,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                pass_fds=(write_end, lock_fd),
                start_new_session=True,
                env=environment,
            )
        os.close(write_end)
        write_end = -1
        try:
            with cancellation.current().on_cancel(_killer(process)):
                with os.fdopen(read_end, "rb", closefd=True) as stream:
                    read_end = -1
                    for raw in stream:
                        progress.feed(raw.decode("utf-8", errors="replace").rstrip("\n"))
                return process.wait()
        finally:
            _stop(process)
    finally:
        for fd in (read_end, write_end):
            if fd >= 0:
                os.close(fd)


def _pack(tree: Path, output: TemporaryFile, lock_fd: int, log: Path) -> None:
    """GNU tar of the tree: numeric owners, xattrs, without device nodes, /proc, /sys or apt caches."""
    command = [
        "tar",
        "--create",
        "--file=-",
        "--numeric-owner",
        "--xattrs",
        "--xattrs-include=*",
        "--one-file-system",
        "--anchored",
        "--exclude=./dev/*",
        "--exclude=./proc/*",
        "--exclude=./sys/*",
        "--exclude=./var/cache/apt/archives/*.deb",
        "--exclude=./var/lib/apt/lists/*",
        "--exclude=./run/*",
        "--exclude=./tmp/*",
        "-C",
        str(tree),
        ".",
    ]
    with open(log, "ab") as log_file:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=output.fd,
            stderr=log_file,
            pass_fds=(lock_fd,),
            start_new_session=True,
        )
        try:
            with cancellation.current().on_cancel(_killer(process)):
                status = process.wait()
        finally:
            _stop(process)
    cancellation.current().check()
    if status != 0:
        raise WslError(
            "WSL_E_INSTALL_PROCESS_FAILED",
            f"Packing the built root filesystem failed (tar exit status {status}); see {log}",
        )


def build_rootfs_archive(
    entry: BuiltinDistribution,
    work_dir: Path,
    *,
    progress: BuildProgress | None = None,
    mirror: str | None = None,
    log_dir: Path | None = None,
) -> TemporaryFile:
    """Build `entry` with debootstrap in `work_dir` and pack it; returns the tar as a TemporaryFile.

    The caller closes the result (which deletes it). On any failure or interruption nothing is left
    in `work_dir`; the debootstrap log is kept (in `log_dir`, default `$XDG_STATE_HOME/pywsl`) and
    named in the error.
    """
    require_buildable(entry)
    if os.geteuid() != 0:
        raise WslError("E_ACCESSDENIED", f"Building {entry.name} locally runs debootstrap, which needs root.")
    sources = host_apt_sources()
    chosen_mirror = mirror or mirror_for(entry.vendor, sources)
    security_mirror = security_mirror_for(entry.vendor, sources)
    logs = log_dir if log_dir is not None else _log_folder()
    try:
        logs.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise from_os_error(error) from None
    log = logs / f"debootstrap-{entry.name}.log"
    tracker = DebootstrapProgress(progress)
    lock = TemporaryFile(work_dir, entry.name, ".rootfs.lock")
    tree = lock.path.with_suffix("")
    archive: TemporaryFile | None = None
    succeeded = False
    started = time.monotonic()
    try:
        os.mkdir(tree, 0o755)
        status = _run_debootstrap(entry, tree, chosen_mirror, log, lock.fd, tracker)
        cancellation.current().check()
        if status != 0:
            detail = f": {tracker.errors[-1]}" if tracker.errors else ""
            raise WslError(
                "WSL_E_INSTALL_PROCESS_FAILED",
                f"debootstrap {entry.suite} from {chosen_mirror} failed with exit status {status}{detail}. "
                f"Its log is kept at {log}",
            )
        if progress is not None:
            progress(BUILD_END, TOTAL, "Setting up the image (first-run setup, apt sources, locale)")
        make_wsl_image(
            tree,
            name=entry.name,
            vendor=entry.vendor,
            suite=entry.suite,
            mirror=chosen_mirror,
            security_mirror=security_mirror,
            log=log,
        )
        if progress is not None:
            progress(PACK_START, TOTAL, "Packing the root filesystem")
        cancellation.current().check()
        archive = TemporaryFile(work_dir, entry.name, ".tar")
        _pack(tree, archive, lock.fd, log)
        if progress is not None:
            elapsed = time.monotonic() - started
            progress(TOTAL, TOTAL, f"Built {entry.friendly_name} in {elapsed:.0f} s")
        succeeded = True
        return archive
    except OSError as error:
        raise from_os_error(error) from None
    finally:
        shutil.rmtree(tree, ignore_errors=True)
        lock.close()
        if not succeeded and archive is not None:
            archive.close()
        if succeeded or cancellation.current().cancelled:  # a cancelled build's log tells nothing
            with contextlib.suppress(OSError):
                log.unlink()
