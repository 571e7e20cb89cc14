"""The benchmark's private pywsl: its own registry, settings and VM, and the commands it runs.

Everything lives in one scratch folder: ``XDG_DATA_HOME`` (the registry and the distributions),
``XDG_CONFIG_HOME`` (a wslconfig with long idle timeouts, so the VM stays up between runs) and
``PYWSL_RUNTIME_ROOT`` (the VM's sockets), so the user's own distributions and VM are never
touched. Closing the environment unregisters what it registered, shuts its VM down and deletes the
folder.

The interpreter the launch times are compared with is the one the ``pywsl`` console script
starts (its shebang), never a version-manager shim that would add its own start-up to the
baseline.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench_proc import BenchError, descendants, run_checked, shorten, timed_run
from bench_rootfs import remove_tree

__all__ = ["BenchEnvironment", "Launcher", "resolve_launcher"]

IDLE_TIMEOUT_MS = 600_000  # a crashed run's VM still goes away on its own
WSLCONFIG = f"[general]\ninstanceIdleTimeout={IDLE_TIMEOUT_MS}\n[wsl2]\nvmIdleTimeout={IDLE_TIMEOUT_MS}\n"
PID_FILE = "mini_init.pid"
SOCKET_FILE = "mini_init.sock"
SOCKET_PATH_LIMIT = 107  # sun_path holds 108 bytes with the terminating NUL


@dataclass(frozen=True)
class Launcher:
    """How to start pywsl (``command``) and the interpreter it runs on."""

    command: tuple[str, ...]
    interpreter: str

    def describe(self) -> str:
        return " ".join(self.command)


def _is_elf(path: str) -> bool:
    try:
        with open(path, "rb") as file:
            return file.read(4) == b"\x7fELF"
    except OSError:
        return False


def shebang_interpreter(script: Path) -> str | None:
    """The real Python binary a console script's ``#!`` line starts, or None (a shell shim, ...)."""
    try:
        with open(script, "rb") as file:
            first = file.readline(4096)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    words = first[2:].decode(errors="replace").split()
    if not words:
        return None
    program = words[0]
    if os.path.basename(program) == "env":
        rest = [word for word in words[1:] if not word.startswith("-")]
        if not rest:
            return None
        found = shutil.which(rest[0])
        if found is None:
            return None
        program = found
    if "python" not in os.path.basename(program):
        return None
    return program if _is_elf(os.path.realpath(program)) else None


def resolve_launcher(explicit: str | None = None) -> Launcher:
    """The ``pywsl`` console script to measure and its interpreter.

    Tried in order: ``explicit``; the script installed next to the running interpreter; the first
    ``pywsl`` on PATH. A script whose shebang does not lead straight to a Python binary (a pyenv
    shim, a wrapper) is skipped. Without any, ``<this interpreter> -m pywsl.cli.main``.
    """
    candidates: list[Path] = []
    if explicit:
        candidates.append(Path(explicit))
    else:
        candidates.append(Path(sys.executable).parent / "pywsl")
        found = shutil.which("pywsl")
        if found:
            candidates.append(Path(found))
    for candidate in candidates:
        interpreter = shebang_interpreter(candidate)
        if interpreter is not None and os.access(candidate, os.X_OK):
            return Launcher((str(candidate.absolute()),), interpreter)
    if explicit:
        raise BenchError(f"{explicit} is not a console script whose #! line starts a Python binary")
    return Launcher((sys.executable, "-m", "pywsl.cli.main"), sys.executable)


class BenchEnvironment:
    """A scratch pywsl installation; use as a context manager."""

    def __init__(self, launcher: Launcher, *, base: Path | None, log: Callable[[str], None]) -> None:
        self.launcher = launcher
        self.log = log
        scratch = Path(base or tempfile.gettempdir()) / "pywsl-bench-12345678"  # mkdtemp's name length
        socket_path = scratch / "run" / str(os.geteuid()) / SOCKET_FILE
        if len(os.fsencode(socket_path.absolute())) > SOCKET_PATH_LIMIT:
            raise BenchError(f"{base} is too deep for the VM's socket path: choose a shorter --workdir")
        self.root = Path(tempfile.mkdtemp(prefix="pywsl-bench-", dir=base))
        self.data = self.root / "data"
        self.config = self.root / "config"
        self.runtime_root = self.root / "run"
        self.scratch = self.root / "scratch"
        for folder in (self.data, self.config / "pywsl", self.runtime_root, self.scratch, self.root / "home"):
            folder.mkdir(parents=True)
        os.chmod(self.runtime_root, 0o700)
        (self.config / "pywsl" / "wslconfig").write_text(WSLCONFIG)
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": str(self.root / "home"),
            "XDG_DATA_HOME": str(self.data),
            "XDG_CONFIG_HOME": str(self.config),
            "PYWSL_RUNTIME_ROOT": str(self.runtime_root),
            "LANG": "C.UTF-8",
            "TERM": "xterm-256color",
        }
        self.registered: list[str] = []
        self.vm_cgroups: set[str] = set()

    def __enter__(self) -> BenchEnvironment:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- pywsl commands ---------------------------------------------------------------------------

    def argv(self, *arguments: str) -> list[str]:
        return [*self.launcher.command, *arguments]

    def run(self, *arguments: str, stdin: int | None = None) -> str:
        return run_checked(self.argv(*arguments), self.env, stdin=stdin)

    def timed(self, *arguments: str) -> float:
        return timed_run(self.argv(*arguments), self.env)[0]

    def import_distribution(self, name: str, archive: Path) -> Path:
        """``--import``; returns the distribution's folder (its root filesystem is ``rootfs`` in it)."""
        location = self.distribution_folder(name)
        self.run("--import", name, str(location), str(archive))
        self.registered.append(name)
        return location

    def distribution_folder(self, name: str) -> Path:
        parent = self.data / "distributions"
        parent.mkdir(exist_ok=True)
        return parent / name

    def unregister(self, name: str) -> None:
        self.run("--unregister", name)
        with contextlib.suppress(ValueError):
            self.registered.remove(name)

    # -- the VM -----------------------------------------------------------------------------------

    @property
    def runtime_dir(self) -> Path:
        return self.runtime_root / str(os.geteuid())

    def vm_pids(self) -> list[int]:
        """The host pids named in the VM's pid file (pid 1 of the VM and its monitor)."""
        try:
            text = (self.runtime_dir / PID_FILE).read_text()
        except OSError:
            return []
        return [int(word) for word in text.split() if word.isdigit()]

    def vm_processes(self) -> set[int]:
        return descendants(self.vm_pids())

    def vm_running(self) -> bool:
        return bool(self.vm_processes())

    def _remember_cgroups(self) -> None:
        for pid in self.vm_pids():
            with contextlib.suppress(OSError):
                arguments = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
                self.vm_cgroups.update(
                    arguments[index + 1] for index, item in enumerate(arguments[:-1]) if item == "--cgroup"
                )

    def shutdown(self, timeout: float = 20.0) -> None:
        """``--shutdown`` and wait until every VM process has gone."""
        self._remember_cgroups()
        processes = self.vm_processes()
        self.run("--shutdown")
        deadline = time.monotonic() + timeout
        while processes and time.monotonic() < deadline:
            processes = {pid for pid in processes if Path(f"/proc/{pid}").exists() and not _zombie(pid)}
            if processes:
                time.sleep(0.01)
        if processes:
            raise BenchError(f"the VM did not stop within {timeout:g} s (processes {sorted(processes)})")

    def _force_stop(self) -> None:
        """Last resort after a failed shutdown: kill the VM this environment started, by pid."""
        self._remember_cgroups()
        processes = self.vm_processes()
        with contextlib.suppress(BenchError):
            self.run("--shutdown", "--force")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            processes = {pid for pid in processes if Path(f"/proc/{pid}").exists() and not _zombie(pid)}
            if not processes:
                return
            time.sleep(0.05)
        for pid in sorted(processes):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                self.log(f"killed VM process {pid}")
        deadline = time.monotonic() + 5
        while processes and time.monotonic() < deadline:
            processes = {pid for pid in processes if Path(f"/proc/{pid}").exists() and not _zombie(pid)}
            time.sleep(0.05)
        for cgroup in sorted(self.vm_cgroups, key=len, reverse=True):
            with contextlib.suppress(OSError):  # busy or gone: reported by close()
                os.rmdir(cgroup)

    def close(self) -> None:
        """Unregister, shut down, delete the scratch folder; problems are logged, not raised."""
        for name in list(self.registered):
            try:
                self.unregister(name)
            except BenchError as error:
                self.log(f"cleanup: {shorten(str(error))}")
        try:
            self.shutdown()
        except BenchError as error:
            self.log(f"cleanup: {shorten(str(error))}")
            self._force_stop()
        for cgroup in sorted(self.vm_cgroups):
            if os.path.isdir(cgroup):
                self.log(f"cleanup: the VM's cgroup {cgroup} is left behind")
        try:
            remove_tree(self.root)
        except (BenchError, OSError) as error:
            self.log(f"cleanup: {shorten(str(error))}")


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except (OSError, IndexError):
        return True
