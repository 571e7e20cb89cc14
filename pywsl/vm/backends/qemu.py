"""The ``qemu`` backend: the utility VM is a real virtual machine with its own Linux kernel.

``start`` finds the kernel (``pywsl.vm.kernel``), builds or reuses the cached initramfs
(``pywsl.vm.initramfs``; cache folder ``$PYWSL_CACHE_ROOT``, default ``/var/cache/pywsl``), and
runs ``qemu_monitor`` with the QEMU command line (``qemu_command``) under the runtime folder's
lock. The monitor starts QEMU with the VM's owner's ids (``qemu_process``) and exits its first
process once the guest's pid 1 serves; from
then on ``mini_init.sock`` in the runtime folder reaches the guest's mini_init, each connection
a channel multiplexed over one virtio-serial port. KVM is used when it works here, TCG otherwise
(with one warning per process: guest code runs much slower).

``mini_init.pid`` holds QEMU's pid and the monitor's. ``kill`` ends QEMU (the monitor then removes
the VM's files); when the monitor itself was killed, ``remove_leftovers`` removes them.
"""

from __future__ import annotations

import _socket
import contextlib
import fcntl
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import construct

from pywsl.coverage_startup import REQUEST_VARIABLES
from pywsl.vm.backends.base import LOG_NAME, SOCKET_NAME, VmBackend, log_tail
from pywsl.vm.backends.namespaces import _prepare_runtime_dir
from pywsl.vm.backends.qemu_command import TCG_MEMORY_LIMIT_MIB, QemuPlan, find_qemu, kvm_works, qemu_argv
from pywsl.vm.backends.qemu_console import start_relay, terminal_for_console
from pywsl.vm.backends.qemu_monitor import (
    BACKEND_FILE_NAME,
    MONITOR_NAME,
    RUNTIME_FILES,
)
from pywsl.vm.backends.qemu_process import owner_identity
from pywsl.vm.backends.qemu_shares import remove_share
from pywsl.vm.config import VmConfig
from pywsl.vm.errors import VmError
from pywsl.vm.initramfs import build_initramfs
from pywsl.vm.kernel import find_kernel
from pywsl.vm.runtime_names import PID_FILE_NAME

CACHE_ROOT_ENV = "PYWSL_CACHE_ROOT"
DEFAULT_CACHE_ROOT = Path("/var/cache/pywsl")
BOOT_GRACE = 10.0
LEFTOVER_TIMEOUT = 5.0
_PACKAGE_ROOT = Path(__file__).resolve().parents[3]
_FILES = (SOCKET_NAME, *RUNTIME_FILES)

log = logging.getLogger(__name__)
_warned_tcg = False


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ROOT_ENV) or DEFAULT_CACHE_ROOT)


def guest_python() -> str:
    """The host interpreter, which the guest runs from the shared ``/usr``."""
    python = os.path.realpath(sys.executable)
    if not python.startswith("/usr/"):
        raise VmError(f"the qemu backend needs the host's Python under /usr, not {python}")
    return python


def guest_shares() -> tuple[Path, ...]:
    """Folders the guest imports from: pywsl's and its dependency's (``construct``)."""
    folders = [_PACKAGE_ROOT, Path(construct.__file__).resolve().parent.parent]
    return tuple(dict.fromkeys(folder for folder in folders if not str(folder).startswith("/usr/")))


def _warn_tcg() -> None:
    global _warned_tcg
    if not _warned_tcg:
        _warned_tcg = True
        log.warning(
            "KVM does not work on this host: the utility VM runs under TCG emulation (much slower; "
            "its memory is limited to %d MiB)",
            TCG_MEMORY_LIMIT_MIB,
        )


def _read_pids(runtime_dir: Path) -> tuple[int, int] | None:
    try:
        words = (runtime_dir / PID_FILE_NAME).read_text().split()
    except OSError:
        return None
    if len(words) != 2 or not all(word.isdigit() for word in words):
        return None
    return int(words[0]), int(words[1])


def _stat_fields(pid: int) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first); [] when gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return []


def _process_of(pid: int, runtime_dir: Path, name: str) -> bool:
    """True while ``pid`` is a live process called ``name`` that belongs to this runtime folder."""
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    fields = _stat_fields(pid)
    return comm.startswith(name) and bool(fields) and fields[0] != "Z" and str(runtime_dir) in cmdline


def _qemu_of(pids: tuple[int, int], runtime_dir: Path) -> bool:
    """True while QEMU (``pids[0]``) runs as the child of this runtime folder's monitor. QEMU's
    own command line names no file of the folder (it gets descriptors); it cannot outlive its
    monitor (it is killed when the monitor dies)."""
    qemu, monitor = pids
    try:
        comm = Path(f"/proc/{qemu}/comm").read_text().strip()
    except OSError:
        return False
    fields = _stat_fields(qemu)
    return (
        comm.startswith("qemu-system")
        and len(fields) > 1
        and fields[0] != "Z"
        and fields[1] == str(monitor)
        and _process_of(monitor, runtime_dir, MONITOR_NAME)
    )


def running_backend(runtime_dir: Path) -> str:
    """The backend of the VM (running, or left behind) in ``runtime_dir``: a qemu VM's monitor marks
    the folder while the VM runs (and a killed monitor leaves the mark for ``remove_leftovers``)."""
    return "qemu" if os.path.lexists(Path(runtime_dir) / BACKEND_FILE_NAME) else "namespaces"


def _networking(config: VmConfig) -> str:
    """``none``: no NIC; otherwise (WSL's NAT, the namespaces backend's ``mirrored``) QEMU's user
    networking, which is NAT."""
    return "none" if config.networking_mode == "none" else "nat"


def _forwards(config: VmConfig) -> bool:
    return _networking(config) == "nat" and config.localhost_forwarding


def _map_arguments(config: VmConfig) -> list[str]:
    words: list[str] = []
    for option, id_map in (("--uid-map", config.uid_map), ("--gid-map", config.gid_map)):
        for inside, outside, count in id_map:
            words += [option, f"{inside}:{outside}:{count}"]
    return words


def _swap_arguments(config: VmConfig) -> list[str]:
    """``[wsl2] swap``: a swap disk of that size, its file unnamed in the cache root (on a disk), or
    the file ``[wsl2] swapFile`` names (the monitor makes or opens it with the owner's rights)."""
    if not config.swap_bytes:
        return []
    named = ["--swap-file", str(config.swap_file)] if config.swap_file is not None else []
    return ["--swap-bytes", str(config.swap_bytes), "--swap-folder", str(cache_root()), *named]


def _monitor_argv(config: VmConfig, plan: QemuPlan, runtime_dir: Path, console: int | None) -> list[str]:
    return [
        sys.executable,
        "-S",
        "-m",
        "pywsl.vm.backends.qemu_monitor",
        "--runtime-dir",
        str(runtime_dir),
        "--boot-timeout",
        str(config.kernel_boot_timeout_ms),
        "--distributions",
        "--host-files",
        *_map_arguments(config),
        *(["--localhost-forwarding"] if _forwards(config) else []),
        "--owner",
        f"{config.owner_uid}:{config.owner_gid}",
        "--kernel",
        str(plan.kernel),
        *(["--host-kernel"] if config.kernel is None else []),
        "--initramfs",
        str(plan.initramfs),
        *_swap_arguments(config),
        *(["--console-fd", str(console)] if console is not None else []),
        "--",
        *qemu_argv(plan),
    ]


class QemuBackend(VmBackend):
    name = "qemu"

    def start(self, config: VmConfig) -> _socket.socket:
        runtime_dir = Path(config.runtime_dir).absolute()
        _prepare_runtime_dir(runtime_dir)
        lock = os.open(runtime_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            running = self.connect(runtime_dir)
            if running is not None:
                return running
            if not self.wait_stopped(runtime_dir, LEFTOVER_TIMEOUT):
                raise VmError(f"an earlier utility VM of {runtime_dir} is still stopping")
            self._launch(config, runtime_dir)
        finally:
            os.close(lock)
        sock = self.connect(runtime_dir)
        if sock is None:
            raise VmError(f"the utility VM stopped right after it started: {log_tail(runtime_dir)}")
        return sock

    def _plan(self, config: VmConfig, console_to_log: bool = True) -> QemuPlan:
        qemu = find_qemu()
        kernel = find_kernel(config.kernel, config.kernel_modules)
        kvm = kvm_works(qemu, owner_identity(config.owner_uid, config.owner_gid))
        if not kvm:
            _warn_tcg()
        return QemuPlan(
            qemu=qemu,
            kernel=kernel.image,
            initramfs=build_initramfs(kernel, cache_root()),
            python=guest_python(),
            shares=guest_shares(),
            console_to_log=console_to_log,
            memory_bytes=config.memory_bytes,
            processors=config.processors,
            kvm=kvm,
            vm_idle_timeout_ms=config.vm_idle_timeout_ms,
            extra_command_line=config.kernel_command_line,
            instance_idle_timeout_ms=config.instance_idle_timeout_ms,
            distributions=True,
            host_files=True,
            networking=_networking(config),
            qmp=True,  # disks are attached through it, and localhostForwarding forwards through it
            disks=True,
            swap=bool(config.swap_bytes),
        )

    def _launch(self, config: VmConfig, runtime_dir: Path) -> None:
        # [wsl2] debugConsole: the console on the booting terminal, through a relay (qemu_console)
        terminal = terminal_for_console(config.owner_uid) if config.debug_console else None
        console: int | None = None
        log_fd = -1
        try:
            plan = self._plan(config, console_to_log=terminal is None)
            for name in _FILES:
                with contextlib.suppress(FileNotFoundError):
                    (runtime_dir / name).unlink()
            log_fd = os.open(
                runtime_dir / LOG_NAME, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600
            )
            python_path = os.pathsep.join(str(share) for share in guest_shares()) or str(_PACKAGE_ROOT)
            if terminal is not None:
                console, terminal = start_relay(terminal, runtime_dir, python_path), None
            process = subprocess.Popen(
                _monitor_argv(config, plan, runtime_dir, console),
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=log_fd,
                cwd="/",
                env={
                    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                    "PYTHONPATH": python_path,
                    "LANG": "C.UTF-8",
                    # a coverage measurement of the test suite follows the monitor (coverage_startup)
                    **{name: os.environ[name] for name in REQUEST_VARIABLES if name in os.environ},
                },
                pass_fds=() if console is None else (console,),
                start_new_session=True,
            )
        finally:
            for fd in (terminal, console, log_fd):
                if fd is not None and fd >= 0:
                    os.close(fd)
        try:
            code = process.wait(config.kernel_boot_timeout_ms / 1000 + BOOT_GRACE)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            code = None
        if code != 0:
            self.kill(runtime_dir)
            self.wait_stopped(runtime_dir, LEFTOVER_TIMEOUT)
            how = "timed out" if code is None else f"exit {code}"
            raise VmError(f"the utility VM did not start ({how}): {log_tail(runtime_dir) or 'no log'}")

    def kill(self, runtime_dir: Path) -> None:
        runtime_dir = Path(runtime_dir).absolute()
        pids = _read_pids(runtime_dir)
        if pids is None:
            return
        if _qemu_of(pids, runtime_dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pids[0], signal.SIGKILL)

    def _alive(self, runtime_dir: Path, pids: tuple[int, int]) -> bool:
        return _qemu_of(pids, runtime_dir) or _process_of(pids[1], runtime_dir, MONITOR_NAME)

    def wait_stopped(self, runtime_dir: Path, timeout: float) -> bool:
        runtime_dir = Path(runtime_dir).absolute()
        deadline = time.monotonic() + timeout
        known: tuple[int, int] | None = None
        while True:
            known = _read_pids(runtime_dir) or known
            if known is None or not self._alive(runtime_dir, known):
                break
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return self.remove_leftovers(runtime_dir)

    def has_leftovers(self, runtime_dir: Path) -> bool:
        return any(os.path.lexists(Path(runtime_dir) / name) for name in _FILES)

    def remove_leftovers(self, runtime_dir: Path, timeout: float = 0.0) -> bool:
        runtime_dir = Path(runtime_dir).absolute()
        running = self.connect(runtime_dir)
        if running is not None:
            running.close()
            return True
        pids = _read_pids(runtime_dir)
        if pids is not None and self._alive(runtime_dir, pids):
            return False
        remove_share(runtime_dir)
        for name in _FILES:
            with contextlib.suppress(FileNotFoundError):
                (runtime_dir / name).unlink()
        return True

    def directory_handle(self, path: Path) -> int:
        return os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
