"""``[boot] systemd=true``: the distribution's own ``/sbin/init`` (systemd) as pid 1 of the instance.

As WSL's init does, pywsl's init prepares the distribution, then forks: the parent (pid 1 of the
instance's pid namespace) execs ``/sbin/init`` and the child goes on as pywsl's init, serving the
instance's channels beside systemd. Before the fork, init gives systemd what it needs in a
container:

* a cgroup2 hierarchy of its own at ``/sys/fs/cgroup``: a sub-group of the VM's group (which the
  host delegated to the VM's root), entered before a new cgroup namespace is made, so that the
  mount shows that sub-group as the root (the shim removes it when the instance has ended);
* ``/run/lock`` as a tmpfs (``/run`` already is one);
* ``/dev/console``: the secondary end of a pty of the instance's own devpts; the child reads (and
  drops) what systemd writes there, so that pid 1 never blocks on its console;
* ``/etc/machine-id``: written (random) when it is missing or empty;
* ``container=wsl`` in systemd's environment (WSL's value).

The child then waits until ``systemctl is-system-running --wait`` answers ``running`` or
``degraded``, bounded by ``[boot] initTimeout``; past it, a warning, and the instance goes on.
"""

from __future__ import annotations

import os
import select
import time

from pywsl.guest import forking, syscalls
from pywsl.guest import lean_signal as signal
from pywsl.lean_context import suppress

TYPE_CHECKING = False  # the type checker sees dataclasses; `records` gives the same classes cheaply
if TYPE_CHECKING:
    from dataclasses import dataclass
else:
    from pywsl.records import dataclass

SYSTEMD_INIT = "/sbin/init"
SYSTEMCTL = ("/usr/bin/systemctl", "/bin/systemctl")
CONTAINER = "wsl"
CGROUP_MOUNT = "/sys/fs/cgroup"
MACHINE_ID = "/etc/machine-id"
READY_STATES = ("running", "degraded")
RETRY_INTERVAL = 0.05
STOP_SIGNAL = signal.SIGRTMIN + 3  # systemd: halt (in a container, pid 1 exits once units are stopped)
ENVIRONMENT = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
_CGROUP_FLAGS = syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC


@dataclass
class Console:
    """The primary end of the pty that is systemd's ``/dev/console``.

    ``keeper``: a secondary end init holds open, so that the primary end never reports a hang-up
    (which a poll would see again and again) while systemd has the console closed."""

    fd: int
    keeper: int = -1

    def drain(self) -> None:
        """Read (and drop) what systemd wrote; never blocks."""
        with suppress(BlockingIOError, OSError):
            while os.read(self.fd, 65536):
                pass


def can_boot(root: str = "/") -> bool:
    """True when the distribution has an executable ``/sbin/init``."""
    return os.access(os.path.join(root, SYSTEMD_INIT.lstrip("/")), os.X_OK)


def enter_cgroup(cgroup_fd: int, name: str) -> None:
    """Make ``name`` below the VM's cgroup, move this process into it and unshare the cgroup namespace,
    then mount that namespace's cgroup2 at ``/sys/fs/cgroup``. Runs after ``pivot_root``."""
    with suppress(FileExistsError):
        os.mkdir(name, 0o755, dir_fd=cgroup_fd)
    group = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=cgroup_fd)
    try:
        procs = os.open("cgroup.procs", os.O_WRONLY | os.O_CLOEXEC, dir_fd=group)
        try:
            os.write(procs, b"0")
        finally:
            os.close(procs)
    finally:
        os.close(group)
    syscalls.unshare(syscalls.CLONE_NEWCGROUP)
    syscalls.mount("cgroup2", CGROUP_MOUNT, "cgroup2", _CGROUP_FLAGS, None)


def mount_run_lock() -> None:
    os.makedirs("/run/lock", 0o1777, exist_ok=True)
    syscalls.mount("tmpfs", "/run/lock", "tmpfs", _CGROUP_FLAGS, "mode=1777,size=5m")


def make_console() -> tuple[Console, int]:
    """A pty of the instance bound onto ``/dev/console``: its primary end (non-blocking), its secondary fd."""
    primary, secondary = os.openpty()
    try:
        os.set_blocking(primary, False)
        os.set_inheritable(primary, False)
        os.set_inheritable(secondary, False)
        path = os.ttyname(secondary)
        if not os.path.lexists("/dev/console"):
            os.close(os.open("/dev/console", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
        syscalls.mount(path, "/dev/console", None, syscalls.MS_BIND, None)
    except BaseException:
        os.close(primary)
        os.close(secondary)
        raise
    return Console(primary), secondary


def random_uuid_hex() -> str:
    """``uuid.uuid4().hex``: 32 hex digits of a random version 4 UUID. ``uuid`` (which loads
    ``platform``) would be loaded by every VM at start, as all the guest's modules are."""
    value = int.from_bytes(os.urandom(16), "big")
    value &= ~(0xC000 << 48)  # variant: RFC 4122
    value |= 0x8000 << 48
    value &= ~(0xF000 << 64)  # version: 4
    value |= 4 << 76
    return f"{value:032x}"


def ensure_machine_id() -> str | None:
    """Write a random ``/etc/machine-id`` when it is missing or empty; a warning when that fails."""
    try:
        with open(MACHINE_ID, "rb") as handle:
            if handle.read(64).strip():
                return None
    except FileNotFoundError:
        pass
    except OSError as error:
        return f"{MACHINE_ID} cannot be read: {error.strerror or error}"
    from pywsl.guest.rootfs import write_file_atomic

    try:
        write_file_atomic(MACHINE_ID, (random_uuid_hex() + "\n").encode(), 0o444)
    except OSError as error:
        return f"{MACHINE_ID} cannot be written: {error.strerror or error}"
    return None


def exec_systemd(console_secondary: int) -> None:
    """pid 1 of the instance: become systemd, its std streams on the console. Never returns."""
    try:
        for target in (0, 1, 2):
            os.dup2(console_secondary, target)
        forking.close_other_fds(())
        for number in range(1, signal.NSIG):
            with suppress(OSError, ValueError):
                signal.signal(number, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        os.chdir("/")
        os.umask(0o022)
        os.execve(SYSTEMD_INIT, [SYSTEMD_INIT], {"container": CONTAINER, **ENVIRONMENT})
    except OSError:
        pass
    forking.exit_now(127)


def _systemctl() -> str | None:
    return next((path for path in SYSTEMCTL if os.access(path, os.X_OK)), None)


def _run_state_query(program: str, deadline: float, console: Console) -> str:
    """One ``systemctl is-system-running --wait``: what it printed ("" if killed at ``deadline``)."""
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            forking.become_child([write_fd])
            null = os.open("/dev/null", os.O_RDWR)
            os.dup2(null, 0)
            os.dup2(write_fd, 1)
            os.dup2(null, 2)
            os.execve(program, ["systemctl", "is-system-running", "--wait"], ENVIRONMENT)
        except OSError:
            pass
        forking.exit_now(127)
    os.close(write_fd)
    output = bytearray()
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                output.clear()
                break
            ready, _, _ = select.select([read_fd, console.fd], [], [], remaining)
            if console.fd in ready:
                console.drain()
            if read_fd in ready:
                chunk = os.read(read_fd, 256)
                if not chunk:
                    break
                output += chunk[:256]
    finally:
        os.close(read_fd)
        forking.wait_for(pid)
    return output.decode("ascii", "replace").strip()


def wait_until_running(timeout_ms: int, console: Console) -> str | None:
    """Wait for systemd to be ``running`` or ``degraded``; a warning when it is not within ``timeout_ms``."""
    program = _systemctl()
    if program is None:
        return "systemd is enabled but the distribution has no systemctl: not waiting for it"
    deadline = time.monotonic() + max(0, timeout_ms) / 1000
    state = ""
    while time.monotonic() < deadline:
        state = _run_state_query(program, deadline, console)
        if state in READY_STATES:
            return None
        # Not up yet (its bus is not listening): look again shortly, the console drained meanwhile.
        pause = min(RETRY_INTERVAL, max(0.0, deadline - time.monotonic()))
        ready, _, _ = select.select([console.fd], [], [], pause)
        if ready:
            console.drain()
    return (
        f"systemd did not start within [boot] initTimeout ({timeout_ms} ms, state "
        f"'{state or 'unknown'}'): going on"
    )
