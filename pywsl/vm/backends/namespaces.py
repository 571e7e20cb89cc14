"""The ``namespaces`` backend: a utility VM made of Linux namespaces.

Booting (``start``) mirrors ``WslCoreVm::Create``: it prepares the VM's runtime folder
(``/run/pywsl/<uid>``, root only), its cgroups (memory and processor limits), binds the listening
socket ``mini_init.sock`` and runs ``<python> -S -P -c MINI_INIT_CODE <boot arguments>`` in a new
session (or hands those arguments to such an interpreter that a cold quick launch started ahead,
``namespaces_prestart``). That process starts the VM detached and exits once mini_init serves, so
no host process stays the VM's parent: the VM outlives whoever booted it, and any host process
reaches it by connecting to ``mini_init.sock`` (``connect``). A refused connection means no VM.

The guest's log goes to ``mini_init.log`` in the runtime folder. ``mini_init.pid`` holds the host
pids of the VM's pid 1 and of its monitor; ``kill`` uses them for a forced shutdown.

The monitor removes the VM's socket, pid file and cgroups when the VM stops. When the monitor
itself was killed, the host does it: ``wait_stopped`` and ``attach`` (``remove_leftovers``) once
nothing of that VM runs any more, and every boot removes the empty cgroups a killed VM of the
same runtime folder left, wherever they are.
"""

from __future__ import annotations

import fcntl
import os
import stat
import sys
import time
from pathlib import Path

from pywsl.lean_context import suppress
from pywsl.vm.backends import namespaces_prestart
from pywsl.vm.backends.base import LOG_NAME, SOCKET_NAME, VmBackend, log_tail
from pywsl.vm.backends.namespaces_prestart import (
    MINI_INIT_CODE,
    PrestartedProcess,
    exit_status_within,
    vm_environment,
)
from pywsl.vm.errors import VmError
from pywsl.vm.runtime_names import PID_FILE_NAME, PREVIOUS_LOG_NAME
from pywsl.wire import unix_sockets as socket  # `socket` without its enums

TYPE_CHECKING = False  # `typing` would cost a cold launch's boot its load
if TYPE_CHECKING:
    import _socket
    import subprocess
    from collections.abc import Callable
    from signal import SIGKILL

    from pywsl.vm.backends.namespaces_prestart import Prestarted
    from pywsl.vm.cgroups import VmCgroup
    from pywsl.vm.config import VmConfig  # a dataclass: not loaded by a launch
else:
    from _signal import SIGKILL  # `signal.SIGKILL` without `signal` (it loads `enum`)

BOOT_GRACE = 5.0  # on top of kernelBootTimeout: the guest's own deadline is the one that fires
PREVIOUS_VM_TIMEOUT = 15.0
LEFTOVER_TIMEOUT = 5.0
MONITOR_NAME = "pywsl-vm"
MINI_INIT_NAME = "mini_init"


def boot_arguments(config: VmConfig, listen_fd: int, cgroups: tuple[Path, ...]) -> list[str]:
    """The VM's "kernel command line" (parsed by ``pywsl.guest.boot``)."""
    arguments = [
        "--runtime-dir",
        str(config.runtime_dir),
        "--listen-fd",
        str(listen_fd),
        "--networking-mode",
        config.networking_mode,
        "--hostname",
        config.hostname,
        "--instance-idle-timeout",
        str(config.instance_idle_timeout_ms),
        "--vm-idle-timeout",
        str(config.vm_idle_timeout_ms),
        "--owner-uid",
        str(config.owner_uid),
        "--boot-timeout",
        str(config.kernel_boot_timeout_ms),
    ]
    for inside, outside, count in config.uid_map:
        arguments += ["--uid-map", f"{inside}:{outside}:{count}"]
    for inside, outside, count in config.gid_map:
        arguments += ["--gid-map", f"{inside}:{outside}:{count}"]
    for path in cgroups:
        arguments += ["--cgroup", str(path)]
    if config.processors is not None:
        arguments += ["--processors", str(config.processors)]
    if not config.nested_virtualization:
        arguments.append("--no-nested-virtualization")
    if not config.gpu_support:
        arguments.append("--no-gpu-support")
    if config.lxcfs is not None:
        arguments += ["--lxcfs", config.lxcfs]
    for name, library in config.gpu_libraries if config.gpu_support else ():
        arguments += ["--gpu-library", f"{name}={library}"]
    folders = ":".join(folder for folder in config.host_path.split(":") if folder.startswith("/"))
    if folders and "\0" not in folders:  # only absolute folders count (`path_folders.host_path_folders`)
        arguments += ["--host-path", folders]
    return arguments


def cgroup_digest(runtime_dir: Path) -> str:
    """The part of the VM's cgroup name that names its runtime folder."""
    from pywsl.cgroup_tables import group_digest  # off the launch path: boots, leftovers

    return group_digest(str(runtime_dir))


def cgroup_name(config: VmConfig) -> str:
    """``pywsl-<uid>-<digest of the runtime folder>``: one group per VM, even for one user's test VMs."""
    from pywsl.cgroup_tables import group_name

    return group_name(config.owner_uid, str(config.runtime_dir))


def cgroups_of(runtime_dir: Path) -> Callable[[str], bool]:
    """Whether a cgroup's name is one that a VM of ``runtime_dir`` uses (whatever its owner): the
    folder's digest is computed once for a whole walk of the hierarchies."""
    suffix = f"-{cgroup_digest(runtime_dir)}"

    def matches(name: str) -> bool:  # pywsl-[0-9]+-<digest>, without `re` (a cold boot calls this)
        if not (name.startswith("pywsl-") and name.endswith(suffix)):
            return False
        uid = name[len("pywsl-") : -len(suffix)]
        return uid.isascii() and uid.isdigit()

    return matches


def is_cgroup_of(runtime_dir: Path, name: str) -> bool:
    """True for the name of a cgroup that a VM of ``runtime_dir`` uses (whatever its owner)."""
    return cgroups_of(runtime_dir)(name)


def _process_name(pid: int) -> str | None:
    """The name of a live process (None when it does not exist or is a zombie)."""
    try:
        stat_text = Path(f"/proc/{pid}/stat").read_text()
        if stat_text.rpartition(")")[2].split()[0] == "Z":
            return None
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, IndexError):
        return None


def _runtime_dir_of(pid: int) -> str | None:
    """The ``--runtime-dir`` a VM process (monitor or mini_init) was started with; "" while the
    process is exiting (its memory, and with it the command line, is already gone)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    if not raw:
        return ""
    arguments = raw.decode(errors="replace").split("\0")
    for index, item in enumerate(arguments[:-1]):
        if item == "--runtime-dir":
            return arguments[index + 1]
    return None


def vm_process_alive(pid: int, name: str, runtime_dir: Path) -> bool:
    """True while ``pid`` is a live process called ``name`` of the VM of ``runtime_dir``.

    Both the monitor and the VM's pid 1 carry the boot arguments on their command line; checking
    them keeps a recycled pid from passing for the VM.
    """
    if _process_name(pid) != name:
        return False
    started_with = _runtime_dir_of(pid)
    if started_with == "":
        # Exiting but not yet a zombie: still alive (it may hold the VM's sockets and cgroups).
        return _process_name(pid) == name
    return started_with is not None and os.path.abspath(started_with) == os.path.abspath(runtime_dir)


def _vm_alive(runtime_dir: Path, pids: tuple[int, int]) -> bool:
    vm_pid, monitor = pids
    return vm_process_alive(monitor, MONITOR_NAME, runtime_dir) or vm_process_alive(
        vm_pid, MINI_INIT_NAME, runtime_dir
    )


def read_pid_file(runtime_dir: Path) -> tuple[int, int] | None:
    """(host pid of the VM's pid 1, host pid of its monitor), if the VM wrote them."""
    try:
        lines = (runtime_dir / PID_FILE_NAME).read_text().split()
    except OSError:
        return None
    if len(lines) != 2 or not all(item.isdigit() for item in lines):
        return None
    return int(lines[0]), int(lines[1])


def _boot_status(
    process: subprocess.Popen[bytes] | PrestartedProcess, prestarted: Prestarted | None, timeout: float
) -> int | None:
    """0 once the VM serves, else the exit status of the process that booted it (None: it did not
    end within `timeout` s and was killed; the monitor gives up by itself after kernelBootTimeout,
    this is the backstop). A prestarted interpreter, which becomes the VM's monitor, says that
    the VM serves on the handoff socket (it exits only when the VM has stopped, or did not start)."""
    deadline = time.monotonic() + timeout
    if prestarted is not None and process is prestarted.process and prestarted.serving_within(timeout):
        return 0
    code = exit_status_within(process, max(0.0, deadline - time.monotonic()))
    if code is None:
        process.kill()
        process.wait()
    return code


def _new_log(runtime_dir: Path) -> int:
    """The new VM's log, empty. The previous VM's is set aside (`PREVIOUS_LOG_NAME`: a link and
    an unlink) rather than truncated: freeing its blocks may wait for the disk (a discard on a
    file system mounted with `discard`), and the new VM's monitor removes it once the VM serves.
    When an older one is still set aside, the log is truncated as before."""
    log = runtime_dir / LOG_NAME
    try:
        os.link(log, runtime_dir / PREVIOUS_LOG_NAME, follow_symlinks=False)
    except OSError:
        pass  # no previous log, or one set aside still
    else:
        os.unlink(log)
    return os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)


def _prepare_runtime_dir(runtime_dir: Path) -> None:
    runtime_dir.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    with suppress(FileExistsError):
        runtime_dir.mkdir(mode=0o700)
    info = os.lstat(runtime_dir)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise VmError(f"{runtime_dir} is not a directory owned by uid {os.geteuid()}")
    os.chmod(runtime_dir, 0o700)


class NamespacesBackend(VmBackend):
    name = "namespaces"

    def start(self, config: VmConfig) -> _socket.socket:
        runtime_dir = Path(config.runtime_dir)
        _prepare_runtime_dir(runtime_dir)
        self._wait_for_previous(runtime_dir)
        lock = os.open(runtime_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            running = self.connect(runtime_dir)
            if running is not None:
                return running
            self._launch(config, runtime_dir)
        finally:
            os.close(lock)
        sock = self.connect(runtime_dir)
        if sock is None:
            raise VmError(f"the utility VM stopped right after it started: {log_tail(runtime_dir)}")
        return sock

    def _launch(self, config: VmConfig, runtime_dir: Path) -> None:
        """Boot (the caller holds the runtime folder's lock and no VM answers)."""
        self._remove_runtime_files(runtime_dir)
        environment = vm_environment()
        # An interpreter a cold quick launch started ahead (it has loaded the guest), else a new
        # one; its groups are the VM's (made, and it moved into them, while both loaded).
        prestarted = namespaces_prestart.take(str(runtime_dir), environment)
        # Groups the interpreter started ahead is in are the VM's: what stale VMs of this runtime
        # folder left elsewhere is removed while the VM boots (the VM's own groups spared), not
        # before the hand-over, which a cold launch waits for.
        grouped = prestarted is not None and prestarted.grouped()
        try:
            cgroup = self._make_groups(config, runtime_dir, grouped)
        except BaseException:
            if prestarted is not None:
                prestarted.end()
            raise
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        log_fd = -1
        process: subprocess.Popen[bytes] | PrestartedProcess | None = None
        try:
            listener.bind(str(runtime_dir / SOCKET_NAME))
            os.chmod(runtime_dir / SOCKET_NAME, 0o600)
            listener.listen(64)
            log_fd = _new_log(runtime_dir)
            arguments = boot_arguments(config, listener.fileno(), cgroup.paths)
            if prestarted is not None:
                # Its processes are the VM's: in the groups before it forks (it is already, but
                # for a group made now, such as cpuset's for a processor limit).
                cgroup.add(prestarted.process.pid)
            if prestarted is not None and prestarted.hand_over(arguments, listener.fileno(), log_fd):
                process = prestarted.process
            else:
                import subprocess  # no interpreter was started ahead

                process = subprocess.Popen(
                    [sys.executable, "-S", "-P", "-c", MINI_INIT_CODE, *arguments],
                    pass_fds=(listener.fileno(),),
                    stdin=subprocess.DEVNULL,
                    stdout=log_fd,
                    stderr=log_fd,
                    cwd="/",
                    env=environment,
                    start_new_session=True,
                )
        except BaseException:
            if prestarted is not None and process is not prestarted.process:
                prestarted.end(keep_groups=True)  # not handed over (the groups go below)
            cgroup.remove()
            raise
        finally:
            listener.close()
            if log_fd >= 0:
                os.close(log_fd)
        if grouped:  # (else removed before the groups were made)
            self._remove_stale_groups(runtime_dir, 0.0, spare=cgroup.paths)
        code = _boot_status(process, prestarted, config.kernel_boot_timeout_ms / 1000 + BOOT_GRACE)
        if code != 0:
            # The monitor cleans up when it got as far as starting; if it did not, nobody else will.
            cgroup.remove()
            (runtime_dir / SOCKET_NAME).unlink(missing_ok=True)
            detail = log_tail(runtime_dir) or "no log"
            how = "timed out" if code is None else f"exit {code}"
            raise VmError(f"the utility VM did not start ({how}): {detail}")

    def _make_groups(self, config: VmConfig, runtime_dir: Path, grouped: bool) -> VmCgroup:
        """The VM's cgroups with their limits (the prestarted interpreter's when it is `grouped`
        in them; else made once what stale VMs of this runtime folder left is removed)."""
        from pywsl.vm.cgroups import VmCgroup
        from pywsl.vm.idmap import host_id

        if not grouped:
            self._remove_stale_groups(runtime_dir, 0.0)
        # The VM's root gets the v2 group: a distribution's systemd makes its sub-groups there.
        return VmCgroup.create(
            cgroup_name(config),
            memory_bytes=config.memory_bytes,
            processors=config.processors,
            swap_bytes=config.swap_bytes,
            delegate_to=(host_id(config.uid_map, 0), host_id(config.gid_map, 0)),
        )

    def _wait_for_previous(self, runtime_dir: Path) -> None:
        """A VM that is stopping still removes its files: let it finish before a new one starts."""
        pids = read_pid_file(runtime_dir)
        if pids is None or not vm_process_alive(pids[1], MONITOR_NAME, runtime_dir):
            return
        deadline = time.monotonic() + PREVIOUS_VM_TIMEOUT
        while time.monotonic() < deadline:
            sock = self.connect(runtime_dir)
            if sock is not None:
                sock.close()
                return
            if not vm_process_alive(pids[1], MONITOR_NAME, runtime_dir):
                return
            time.sleep(0.02)

    def kill(self, runtime_dir: Path) -> None:
        runtime_dir = Path(runtime_dir)
        pids = read_pid_file(runtime_dir)
        if pids is None:
            return
        # pid 1 of the VM, even when its monitor is gone (the kernel then ends the rest of the VM).
        if vm_process_alive(pids[0], MINI_INIT_NAME, runtime_dir):
            with suppress(ProcessLookupError):
                os.kill(pids[0], SIGKILL)

    def wait_stopped(self, runtime_dir: Path, timeout: float) -> bool:
        runtime_dir = Path(runtime_dir)
        deadline = time.monotonic() + timeout
        known: tuple[int, int] | None = None
        while True:
            known = read_pid_file(runtime_dir) or known
            if known is None or not _vm_alive(runtime_dir, known):
                break
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return self.remove_leftovers(runtime_dir, max(LEFTOVER_TIMEOUT, deadline - time.monotonic()))

    def remove_leftovers(self, runtime_dir: Path, timeout: float = 0.0) -> bool:
        """Remove what a VM that is no more left behind (its monitor was killed): socket, pid file,
        cgroups. False when something could not be removed yet.

        Nothing happens while a VM of that folder answers, runs, or is being booted (the boot
        cleans up itself).
        """
        runtime_dir = Path(runtime_dir)
        try:
            lock = os.open(runtime_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return self._remove_stale_groups(runtime_dir, timeout)
        try:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True  # a boot is under way: it removes what is stale
            running = self.connect(runtime_dir)
            if running is not None:
                running.close()
                return True
            pids = read_pid_file(runtime_dir)
            if pids is not None and _vm_alive(runtime_dir, pids):
                return False  # still stopping: its monitor removes everything
            self._remove_runtime_files(runtime_dir)
            return self._remove_stale_groups(runtime_dir, timeout)
        finally:
            os.close(lock)

    def has_leftovers(self, runtime_dir: Path) -> bool:
        """True when the runtime folder still holds a socket or pid file (cheap; no cgroup walk)."""
        return any(os.path.lexists(Path(runtime_dir) / name) for name in (SOCKET_NAME, PID_FILE_NAME))

    @staticmethod
    def _remove_runtime_files(runtime_dir: Path) -> None:
        for name in (SOCKET_NAME, PID_FILE_NAME):
            (runtime_dir / name).unlink(missing_ok=True)

    @staticmethod
    def _remove_stale_groups(runtime_dir: Path, timeout: float, spare: tuple[Path, ...] = ()) -> bool:
        """Remove the cgroups of this runtime folder's VMs that no process uses any more, but for
        those in `spare` (the new VM's)."""
        from pywsl.vm.cgroups import find_groups, remove_group

        removed = True
        for path in find_groups(cgroups_of(runtime_dir)):
            if path in spare:
                continue
            if not remove_group(path, timeout):
                import logging

                logging.getLogger(__name__).warning(
                    "cgroup %s of an earlier VM still has processes; left in place", path
                )
                removed = False
        return removed

    def directory_handle(self, path: Path) -> int:
        return os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
