"""Distributions pywsl can build itself, for `--install` without a download server.

WSL's `--install` always downloads an image listed in its manifest. pywsl adds a local source: a
Debian (or Ubuntu, when its archive keyring is installed) root filesystem built with
`debootstrap --variant=minbase <suite>` from the host's own apt mirror, packed as a plain tar and
then imported exactly like a downloaded `.wsl` file. These entries appear in `--list --online`
beside the manifest's, marked as built locally, and are used when a name is not in the manifest or
the manifest cannot be fetched.

The build runs as root (debootstrap needs it) in a private mount namespace (`unshare --mount`), so
nothing debootstrap mounts can outlive it. Its tree sits beside the destination under a temporary
name locked with `flock` (see `download.clean_stale_temporaries`) and is removed whatever happens;
debootstrap's log is kept only when the build fails, and its path is part of the error.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pywsl.api.download import TemporaryFile
from pywsl.api.errors import WslError, from_os_error
from pywsl.api.manifest import host_architecture

__all__ = [
    "DEBIAN_KEYRING",
    "UBUNTU_KEYRING",
    "AptSource",
    "BuiltinDistribution",
    "DebootstrapProgress",
    "available_builtins",
    "build_rootfs_archive",
    "find_builtin",
    "host_apt_sources",
    "mirror_for",
    "parse_deb822_sources",
    "parse_one_line_sources",
]

DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
UBUNTU_KEYRING = Path("/usr/share/keyrings/ubuntu-archive-keyring.gpg")
DEBOOTSTRAP_SCRIPTS = Path("/usr/share/debootstrap/scripts")
DEFAULT_DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEFAULT_UBUNTU_MIRROR = "http://archive.ubuntu.com/ubuntu"
DEFAULT_UBUNTU_PORTS_MIRROR = "http://ports.ubuntu.com/ubuntu-ports"

# (progress total, message): the callback gets permille of the whole build and debootstrap's text.
BuildProgress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class BuiltinDistribution:
    """One distribution pywsl can build with debootstrap."""

    name: str
    friendly_name: str
    vendor: str        # "debian" or "ubuntu"
    suite: str
    keyring: Path
    is_default: bool   # the entry the bare family name ("Debian", "Ubuntu") picks
    script: str | None = None  # debootstrap script to use when it has none named after the suite


_DEBIAN = (
    ("Debian", "Debian GNU/Linux 12 (bookworm), built locally", "bookworm", True),
    ("Debian-11", "Debian GNU/Linux 11 (bullseye), built locally", "bullseye", False),
    ("Debian-12", "Debian GNU/Linux 12 (bookworm), built locally", "bookworm", False),
    ("Debian-13", "Debian GNU/Linux 13 (trixie), built locally", "trixie", False),
)
_UBUNTU = (
    ("Ubuntu", "Ubuntu 24.04 LTS, built locally", "noble", True),
    ("Ubuntu-22.04", "Ubuntu 22.04 LTS, built locally", "jammy", False),
    ("Ubuntu-24.04", "Ubuntu 24.04 LTS, built locally", "noble", False),
)
_DEBIAN_SUITES = {"buster", "bullseye", "bookworm", "trixie", "forky", "sid",
                  "oldoldstable", "oldstable", "stable", "testing", "unstable"}
_UBUNTU_SUITES = {"focal", "jammy", "noble", "oracular", "plucky", "questing", "devel"}


def debootstrap_path() -> str | None:
    """debootstrap's path when it is installed (it lives in sbin)."""
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return shutil.which("debootstrap", path=search)


def available_builtins(*, keyrings: Mapping[str, Path] | None = None,
                       scripts: Path = DEBOOTSTRAP_SCRIPTS) -> list[BuiltinDistribution]:
    """The distributions this host can build: needs root, debootstrap and the vendor's keyring."""
    if os.geteuid() != 0 or debootstrap_path() is None or host_architecture() is None:
        return []
    rings = dict(keyrings) if keyrings is not None else {"debian": DEBIAN_KEYRING, "ubuntu": UBUNTU_KEYRING}
    result: list[BuiltinDistribution] = []
    for vendor, table in (("debian", _DEBIAN), ("ubuntu", _UBUNTU)):
        keyring = rings.get(vendor)
        if keyring is None or not keyring.is_file():
            continue
        for name, friendly, suite, default in table:
            script: str | None = None
            if not (scripts / suite).exists():
                fallback = scripts / ("sid" if vendor == "debian" else "gutsy")
                if not fallback.exists():
                    continue
                script = str(fallback)
            result.append(BuiltinDistribution(name, friendly, vendor, suite, keyring, default, script))
    return result


def find_builtin(name: str,
                 entries: Iterable[BuiltinDistribution] | None = None) -> BuiltinDistribution | None:
    """The built-in entry with that name (case-insensitive)."""
    wanted = name.casefold()
    for entry in available_builtins() if entries is None else entries:
        if entry.name.casefold() == wanted:
            return entry
    return None


# -- the host's apt configuration -------------------------------------------------------------


@dataclass(frozen=True)
class AptSource:
    """One `deb` source: where, which suites, which components."""

    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]


def parse_one_line_sources(text: str) -> list[AptSource]:
    """`deb [options] uri suite [component...]` lines (sources.list and *.list)."""
    result: list[AptSource] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        line = re.sub(r"\[[^\]]*\]", " ", line)  # options
        fields = line.split()
        if len(fields) < 3 or fields[0] != "deb":
            continue
        result.append(AptSource(fields[1], (fields[2],), tuple(fields[3:])))
    return result


def parse_deb822_sources(text: str) -> list[AptSource]:
    """Stanzas of a deb822 `*.sources` file (`Types`, `URIs`, `Suites`, `Components`, `Enabled`)."""
    result: list[AptSource] = []
    stanzas: list[dict[str, str]] = [{}]
    last: str | None = None
    for raw in text.splitlines():
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if stanzas[-1]:
                stanzas.append({})
            last = None
            continue
        if raw[0] in " \t" and last is not None:
            stanzas[-1][last] += " " + raw.strip()
            continue
        key, sep, value = raw.partition(":")
        if not sep:
            continue
        last = key.strip().lower()
        stanzas[-1][last] = value.strip()
    for stanza in stanzas:
        if "deb" not in stanza.get("types", "").split():
            continue
        if stanza.get("enabled", "yes").strip().lower() in ("no", "false", "0"):
            continue
        suites = tuple(stanza.get("suites", "").split())
        components = tuple(stanza.get("components", "").split())
        for uri in stanza.get("uris", "").split():
            result.append(AptSource(uri, suites, components))
    return result


def host_apt_sources(root: Path = Path("/etc/apt")) -> list[AptSource]:
    """Every enabled `deb` source of the host, in apt's order."""
    result: list[AptSource] = []
    with contextlib.suppress(OSError):
        result += parse_one_line_sources((root / "sources.list").read_text(errors="replace"))
    try:
        names = sorted(os.listdir(root / "sources.list.d"))
    except OSError:
        names = []
    for name in names:
        path = root / "sources.list.d" / name
        try:
            if name.endswith(".list"):
                result += parse_one_line_sources(path.read_text(errors="replace"))
            elif name.endswith(".sources"):
                result += parse_deb822_sources(path.read_text(errors="replace"))
        except OSError:
            continue
    return result


def _suite_base(suite: str) -> str:
    return re.split(r"[-/]", suite, maxsplit=1)[0].lower()


def mirror_for(vendor: str, sources: Iterable[AptSource], machine: str | None = None) -> str:
    """The host's mirror for `vendor` ("debian"/"ubuntu"), or the vendor's default mirror."""
    known = _DEBIAN_SUITES if vendor == "debian" else _UBUNTU_SUITES
    for source in sources:
        if not source.uri.startswith(("http://", "https://", "file:/")) or "security" in source.uri:
            continue
        if any(_suite_base(suite) in known and "security" not in suite for suite in source.suites):
            return source.uri.rstrip("/")
    if vendor == "debian":
        return DEFAULT_DEBIAN_MIRROR
    return DEFAULT_UBUNTU_MIRROR if host_architecture(machine) == "Amd64" else DEFAULT_UBUNTU_PORTS_MIRROR


# -- debootstrap's progress protocol (--debian-installer) --------------------------------------

# Stages of a minbase run and the share of the whole bar each one covers (start, end, in permille).
_STAGES = {
    "DOWNREL": (0, 10), "DOWNRELSIG": (10, 20), "DOWNPKGS": (20, 120), "SIZEDEBS": (120, 130),
    "DOWNDEBS": (130, 550), "EXTRACTPKGS": (550, 650), "INSTCORE": (650, 700), "UNPACKREQ": (700, 800),
    "CONFREQ": (800, 900), "UNPACKBASE": (900, 930), "CONFBASE": (930, 950),
}
BUILD_END = 950   # packing the tree takes the rest
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


def _run_debootstrap(entry: BuiltinDistribution, tree: Path, mirror: str, log: Path,
                     lock_fd: int, progress: DebootstrapProgress) -> int:
    debootstrap = debootstrap_path()
    if debootstrap is None:
        raise WslError("ERROR_FILE_NOT_FOUND", "debootstrap is not installed (apt-get install debootstrap)")
    command = [debootstrap, "--debian-installer", "--variant=minbase", f"--keyring={entry.keyring}",
               entry.suite, str(tree), mirror]
    if entry.script is not None:
        command.append(entry.script)
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    environment = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", "HOME": "/root",
                   "DEBIAN_FRONTEND": "noninteractive"}
    try:
        with open(log, "wb") as log_file:
            # fd 3 carries the progress protocol; the lock fd is inherited so that the build's
            # folder counts as in use for as long as any of its processes lives.
            process = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "--",
                 "/bin/sh", "-c", 'exec 3>"/proc/self/fd/$0"; exec "$@"', str(write_end), *command],
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                pass_fds=(write_end, lock_fd), start_new_session=True, env=environment,
            )
        os.close(write_end)
        write_end = -1
        try:
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
        "tar", "--create", "--file=-", "--numeric-owner", "--xattrs", "--xattrs-include=*",
        "--one-file-system", "--anchored",
        "--exclude=./dev/*", "--exclude=./proc/*", "--exclude=./sys/*",
        "--exclude=./var/cache/apt/archives/*.deb", "--exclude=./var/lib/apt/lists/*",
        "--exclude=./run/*", "--exclude=./tmp/*",
        "-C", str(tree), ".",
    ]
    with open(log, "ab") as log_file:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=output.fd, stderr=log_file,
                                   pass_fds=(lock_fd,), start_new_session=True)
        try:
            status = process.wait()
        finally:
            _stop(process)
    if status != 0:
        raise WslError("WSL_E_INSTALL_PROCESS_FAILED",
                       f"Packing the built root filesystem failed (tar exit status {status}); see {log}")


def build_rootfs_archive(entry: BuiltinDistribution, work_dir: Path, *, progress: BuildProgress | None = None,
                         mirror: str | None = None, log_dir: Path | None = None) -> TemporaryFile:
    """Build `entry` with debootstrap in `work_dir` and pack it; returns the tar as a TemporaryFile.

    The caller closes the result (which deletes it). On any failure or interruption nothing is left
    in `work_dir`; the debootstrap log is kept (in `log_dir`, default `$XDG_STATE_HOME/pywsl`) and
    named in the error.
    """
    if os.geteuid() != 0:
        raise WslError("E_ACCESSDENIED", f"Building {entry.name} locally runs debootstrap, which needs root.")
    chosen_mirror = mirror or mirror_for(entry.vendor, host_apt_sources())
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
        if status != 0:
            detail = f": {tracker.errors[-1]}" if tracker.errors else ""
            raise WslError(
                "WSL_E_INSTALL_PROCESS_FAILED",
                f"debootstrap {entry.suite} from {chosen_mirror} failed with exit status {status}{detail}. "
                f"Its log is kept at {log}",
            )
        if progress is not None:
            progress(BUILD_END, TOTAL, "Packing the root filesystem")
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
        if not succeeded:
            if archive is not None:
                archive.close()
        else:
            with contextlib.suppress(OSError):
                log.unlink()
