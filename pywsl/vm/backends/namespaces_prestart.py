"""The VM's interpreter, started before the boot is decided: a cold launch's two halves overlapped.

A cold `pywsl -d D -- cmd` (no VM running) used to run two interpreters one after the other: this
process loading the session stack and reading `.wslconfig` until `NamespacesBackend` boots the VM,
then the VM's interpreter (`MINI_INIT_CODE`) loading the guest. When root's quick launch
finds no VM, `begin` starts the VM's interpreter at once (`pywsl.guest.vm_prestart`): it loads the
guest on another processor while this process loads the session, then waits for its boot
arguments. `NamespacesBackend` hands them over (`take`, `Prestarted.hand_over`) with the
listening socket and the log, and from there the VM starts as a spawned one does, except that
the interpreter is the VM's monitor itself rather than forking one and exiting: it is this
process's child until this process ends (a VM stopped meanwhile stays a zombie until then, which
`namespaces.vm_process_alive` counts as gone).

A prestarted interpreter that nobody takes (the boot took another way: the qemu backend, a VM that
another process started meanwhile, an error before the boot) is ended when this process exits
(`discard`); it also ends itself when no arguments come within its own time limit. It carries the
VM's runtime folder on its command line (`--runtime-dir`, by which the VM's processes are
recognised) and the environment a spawned VM gets (`vm_environment`): a boot whose runtime folder,
interpreter or environment differ does not take it.
"""

from __future__ import annotations

import _socket
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal
    import subprocess
else:
    import _signal  # `signal` without its enums (`enum` would cost the quick launch)

__all__ = [
    "MINI_INIT_CODE",
    "PRESTART_CODE",
    "Prestarted",
    "PrestartedProcess",
    "begin",
    "discard",
    "exit_status_within",
    "exits_within",
    "take",
    "vm_environment",
]

COVERAGE_VARIABLES = ("COVERAGE_PROCESS_CONFIG", "COVERAGE_PROCESS_START")
END_TIMEOUT = 5.0  # s an unused interpreter has to go once killed
GROUPING_TIMEOUT = 5.0  # s the boot waits for the interpreter's move into the VM's cgroups
MOVER_SHELL = "/bin/sh"  # runs `cgroup_tables.MOVE_SCRIPT`
MOVER_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
# What the VM's interpreter runs (`python -S -P -c CODE ARGUMENTS...`): the prestarted one, and one
# spawned for a boot. Not `-m`: that loads `runpy` and what it imports first, 4 to 5 ms of a cold
# start. mini_init's collector is off while the guest loads (many objects and no garbage; it
# freezes them and turns it on itself); `vm_prestart.main` does the same.
PRESTART_CODE = "from pywsl.guest.vm_prestart import run; run()"
MINI_INIT_CODE = "import gc; gc.disable(); from pywsl.guest.mini_init import run; run()"
# The folder holding the `pywsl` package (this file is pywsl/vm/backends/namespaces_prestart.py).
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__)))))


def vm_environment() -> dict[str, str]:
    """The environment of the VM's interpreter (`python -S`: told where pywsl and construct are)."""
    return {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "PYTHONPATH": os.pathsep.join((PACKAGE_ROOT, _package_parent("construct"))),
        "PYTHONDONTWRITEBYTECODE": "1",
        # A coverage measurement of the test suite follows the VM (pywsl.coverage_startup).
        **{name: os.environ[name] for name in COVERAGE_VARIABLES if name in os.environ},
    }


def _package_parent(name: str) -> str:
    """The real folder that holds the package `name` as this interpreter would import it: found,
    not imported (the VM starts while this process has not loaded it)."""
    for entry in sys.path:
        init = os.path.join(entry or os.getcwd(), name, "__init__.py")
        if os.path.isfile(init):
            return os.path.dirname(os.path.dirname(os.path.realpath(init)))
    import importlib.util  # another finder's package (a zip, an editable install)

    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"the VM needs the {name} package", name=name)
    return os.path.dirname(os.path.dirname(os.path.realpath(spec.origin)))


class PrestartedProcess:
    """The prestarted interpreter, a child of this process: what `NamespacesBackend` uses of a
    `subprocess.Popen` (`pid`, `args`, `poll`, `wait`, `kill`), without loading `subprocess`."""

    __slots__ = ("args", "pid", "returncode")

    def __init__(self, pid: int, args: list[str]) -> None:
        self.pid = pid
        self.args = args
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.returncode = -1  # not ours to reap any more
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Its exit status; `subprocess.TimeoutExpired` when it has not exited within `timeout` s."""
        if self.poll() is not None:
            assert self.returncode is not None
            return self.returncode
        if timeout is not None and not exits_within(self.pid, timeout):
            import subprocess

            raise subprocess.TimeoutExpired(self.args, timeout)
        try:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        except ChildProcessError:
            self.returncode = -1
        return self.returncode

    def kill(self) -> None:
        if self.returncode is not None:
            return
        try:
            os.kill(self.pid, _signal.SIGKILL)
        except ProcessLookupError:
            return


def exit_status_within(process: PrestartedProcess | subprocess.Popen[bytes], timeout: float) -> int | None:
    """`process.wait(timeout)` without its polling (sleeps of up to 50 ms, which every cold start
    would wait out): the process's pidfd is waited on instead, where the kernel has pidfds. Its
    exit status (it is reaped), or None when it has not exited within `timeout` seconds."""
    try:
        exited = exits_within(process.pid, timeout)
    except OSError:  # no pidfds
        import subprocess

        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
    return process.wait() if exited else None


def exits_within(pid: int, timeout: float) -> bool:
    """Whether process `pid` exits within `timeout` seconds (its pidfd is waited on; OSError where
    the kernel has no pidfds)."""
    import select

    fd = os.pidfd_open(pid)
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
    finally:
        os.close(fd)
    return bool(ready)


class Prestarted:
    """A VM interpreter waiting for its boot arguments on `handoff`."""

    __slots__ = ("environment", "groups", "handoff", "mover", "process", "runtime_dir")

    def __init__(
        self,
        process: PrestartedProcess,
        runtime_dir: str,
        environment: dict[str, str],
        handoff: _socket.socket,
    ) -> None:
        self.process = process
        self.runtime_dir = runtime_dir
        self.environment = environment
        self.handoff = handoff
        # The VM's cgroups, made here, and the shell that moves the interpreter into them while
        # both load (a move waits for an RCU grace period): the boot waits for its end.
        self.groups: tuple[str, ...] = ()
        self.mover: PrestartedProcess | None = None

    def group_early(self) -> None:
        """Make the VM's groups and start the shell that moves the interpreter into them
        (`cgroup_tables.MOVE_SCRIPT`). A shell, not a thread: after the grace period a thread
        would wait for this interpreter's lock between moves (milliseconds, as this one loads),
        and this one for it; the shell moves it into every group at once."""
        from pywsl.cgroup_tables import MOVE_SCRIPT, group_name, make_early  # `os` only, and a digest

        try:
            self.groups = make_early(group_name(os.geteuid(), self.runtime_dir))
        except OSError:
            return  # the boot's own `VmCgroup.create` makes them and reports what fails
        if not self.groups:
            return
        args = [MOVER_SHELL, "-c", MOVE_SCRIPT, "sh", str(self.process.pid), *self.groups]
        try:
            # A session of its own: a signal to this launch's process group does not stop it
            # half-way (the interpreter would be left with groups nobody removes).
            pid = os.posix_spawn(
                MOVER_SHELL, args, {"PATH": MOVER_PATH}, file_actions=_file_actions(-1), setsid=True
            )
        except OSError:
            return  # the boot moves it (`VmCgroup.add`)
        self.mover = PrestartedProcess(pid, args)

    def grouped(self, timeout: float = GROUPING_TIMEOUT) -> bool:
        """Wait (at most `timeout` s) until the shell `group_early` started has ended (reaped)."""
        mover = self.mover
        return mover is None or mover.poll() is not None or exit_status_within(mover, timeout) is not None

    def hand_over(self, arguments: list[str], listen_fd: int, log_fd: int) -> bool:
        """Boot with `arguments` (mini_init's; the value of `--listen-fd` is replaced by the
        socket's number on the other side), the listening socket and the log as stdout and
        stderr. False when the interpreter is gone: the caller then spawns the VM itself."""
        import array

        payload = "\0".join(arguments).encode()
        descriptors = array.array("i", [listen_fd, log_fd]).tobytes()
        try:
            if self.process.poll() is not None:
                self.handoff.close()
                return False
            self.handoff.sendmsg([payload], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, descriptors)])
            return True
        except OSError:
            self.end(keep_groups=True)  # the boot goes on in them
            return False

    def serving_within(self, timeout: float) -> bool:
        """After `hand_over`: whether the VM's monitor (the interpreter itself, from the hand-over
        on) says within `timeout` s, on the handoff socket, that the VM serves. False when the
        socket ended without it (the boot failed: the exit status says how) or time ran out. The
        interpreter then lives as long as the VM: it is reaped when this process exits
        (`discard`) if it has ended by then, else it goes to the init of this process's parents."""
        import select

        try:
            ready, _, _ = select.select([self.handoff], [], [], max(0.0, timeout))
            word = self.handoff.recv(1) if ready else b""
        except OSError:
            word = b""
        finally:
            self.handoff.close()
        if word != b"1":
            return False
        _handed_over.append(self.process)
        return True

    def end(self, *, keep_groups: bool = False) -> None:
        """End the interpreter (it has not booted), reap it and, unless a boot uses them, remove
        the groups it was moved into that are empty then."""
        self.handoff.close()
        self.process.kill()
        try:
            self.process.wait(END_TIMEOUT)
        except Exception:  # subprocess.TimeoutExpired: left to whoever reaps this process's children
            return
        if not keep_groups and self.grouped():
            from pywsl.cgroup_tables import remove_empty

            for group in self.groups:  # only one that is empty: another VM's is never removed
                remove_empty(group)


_pending: Prestarted | None = None
_handed_over: list[PrestartedProcess] = []  # booted VMs' interpreters, exiting: reaped at exit


def begin(runtime_dir: str) -> None:
    """Start the VM's interpreter for a boot in `runtime_dir` that may follow (once per process)."""
    global _pending
    if _pending is not None:
        return
    try:
        environment = vm_environment()
    except ModuleNotFoundError:
        return  # the boot reports it
    runtime_dir = os.path.abspath(runtime_dir)
    ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    try:
        handoff_fd = theirs.fileno()
        args = [
            sys.executable,
            "-S",
            "-P",
            "-c",
            PRESTART_CODE,
            "--runtime-dir",
            runtime_dir,
            "--handoff-fd",
            str(handoff_fd),
        ]
        os.set_inheritable(handoff_fd, True)
        pid = os.posix_spawn(
            sys.executable, args, environment, file_actions=_file_actions(handoff_fd), setsid=True
        )
    except OSError:
        ours.close()
        return  # the boot spawns the VM itself and reports what fails
    finally:
        theirs.close()
    _pending = Prestarted(PrestartedProcess(pid, args), runtime_dir, environment, ours)
    _pending.group_early()
    import atexit

    atexit.register(discard)


def _file_actions(handoff_fd: int) -> list[tuple[int, ...] | tuple[int, int, str, int, int]]:
    """Standard streams on /dev/null, and every other descriptor this process could pass on closed
    but the handoff socket (-1: none) (as `subprocess`'s `close_fds`): the VM outlives this
    process and must hold none of its pipes. (The interpreter leaves `/` as its folder itself:
    `-P` keeps the folder it starts in out of its module path.)"""
    actions: list[tuple[int, ...] | tuple[int, int, str, int, int]] = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd <= 2 or fd == handoff_fd:
            continue
        try:
            if os.get_inheritable(fd):
                actions.append((os.POSIX_SPAWN_CLOSE, fd))
        except OSError:
            continue  # the listing's own descriptor
    return actions


def take(runtime_dir: str, environment: dict[str, str]) -> Prestarted | None:
    """The prestarted interpreter, if there is one for a boot in `runtime_dir` with `environment`
    (and this interpreter); any other one is ended."""
    global _pending
    pending, _pending = _pending, None
    if pending is None:
        return None
    if pending.runtime_dir != os.path.abspath(runtime_dir) or pending.environment != environment:
        pending.end()
        return None
    return pending


def discard() -> None:
    """End a prestarted interpreter that no boot took; reap those that booted and have exited."""
    global _pending
    pending, _pending = _pending, None
    if pending is not None:
        pending.end()
    _handed_over[:] = [process for process in _handed_over if process.poll() is None]
