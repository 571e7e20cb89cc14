"""The relay's child, from fork to exec: the launched Linux process before its program runs.

The relay forks one child per ``CreateProcessUtilityVm`` (wsl-reference §4.3 step 7). The child
starts a new session, resolves the user from the distribution's ``/etc/passwd`` and
``/etc/group``, takes the terminal (if any) as its controlling terminal, installs the std streams
as descriptors 0, 1 and 2 (no other descriptor survives), builds the environment (interop host
PATH folders, GPU tools, the caller's GUI sockets), drops privileges, enters the working directory
and executes the program with ``execvpe`` semantics. A failure before the exec is written on the
child's stderr and ends it with exit code 1 (``LX_INIT_USER_NOT_FOUND`` when the user is unknown).
Everything here is imported before the guest enters the distribution: nothing is imported later.
"""

from __future__ import annotations

import errno
import fcntl
import os
import termios
from collections.abc import Callable, Sequence

from pywsl.guest import devices, gui, systemd_user
from pywsl.guest import lean_signal as signal
from pywsl.guest.environment import (
    DEFAULT_PATH,
    HOST_DIRECTORY_PREFIX,
    Program,
    UserNotFound,
    build_environment,
    resolve_program,
    resolve_user,
    resolve_working_directory,
    translate_host_directory,
)
from pywsl.guest.interop_init import InteropSettings, launch_environment
from pywsl.guest.locale_conf import read_language_at
from pywsl.guest.users import PasswdEntry, UserDatabase
from pywsl.lean_context import suppress
from pywsl.wire.constants import LX_INIT_USER_NOT_FOUND
from pywsl.wire.message_types import CreateProcessFlags, ShellOptions

TYPE_CHECKING = False  # `typing`, `dataclasses` would cost the VM's start (`records`: the same classes)
if TYPE_CHECKING:
    from dataclasses import dataclass
    from typing import Any, NoReturn
else:
    from pywsl.records import dataclass

__all__ = ["LaunchRequest", "RelayContext", "run_child", "spawn_child"]

_CONSOLE_FLAGS = (
    CreateProcessFlags.LxInitCreateProcessFlagsStdInConsole,
    CreateProcessFlags.LxInitCreateProcessFlagsStdOutConsole,
    CreateProcessFlags.LxInitCreateProcessFlagsStdErrConsole,
)
# The exit code of a child that could not run its program or could not be set up (WSL's
# FATAL_ERROR after a failed execvpe): a shell's 127 only comes from a shell.
_EXIT_SETUP_FAILED = 1


@dataclass(frozen=True)
class LaunchRequest:
    """The fields of ``LX_INIT_CREATE_PROCESS_UTILITY_VM`` the relay uses."""

    filename: str
    cwd: str
    command_line: tuple[str, ...]
    environment: tuple[str, ...]
    username: str
    default_uid: int
    login: bool
    console: tuple[bool, bool, bool]
    rows: int
    columns: int
    nt_path: str = ""  # the caller's host PATH (NtPath), appended as host PATH folders
    host_environment: tuple[str, ...] = ()  # NtEnvironment: what the host checked (GUI sockets)

    @classmethod
    def from_message(cls, message: Any) -> LaunchRequest:
        """Decode a parsed ``LX_INIT_CREATE_PROCESS_UTILITY_VM``."""
        common = message.Common
        flags = int(common.Flags)
        return cls(
            filename=common.Filename or "",
            cwd=common.CurrentWorkingDirectory or "",
            command_line=tuple(common.CommandLine or ()),
            environment=tuple(common.Environment or ()),
            username=common.Username or "",
            default_uid=int(common.DefaultUid),
            login=bool(int(common.ShellOptions) & ShellOptions.ShellOptionsLogin),
            console=(
                bool(flags & _CONSOLE_FLAGS[0]),
                bool(flags & _CONSOLE_FLAGS[1]),
                bool(flags & _CONSOLE_FLAGS[2]),
            ),
            rows=int(message.Rows),
            columns=int(message.Columns),
            nt_path=common.NtPath or "",
            host_environment=tuple(common.NtEnvironment or ()),
        )


@dataclass(frozen=True)
class RelayContext:
    """What the relay knows about its distribution (from init, through the session leader)."""

    distribution_name: str
    default_user: str | None = None  # wsl.conf [user] default
    fallback_uid: int | None = None  # tried after the request's DefaultUid
    etc_root: str = "/"  # where etc/passwd and etc/group are read from
    host_mount_point: str | None = None  # where the host is mounted (None: [automount] disabled)
    interop: InteropSettings | None = None  # [interop] (None: off)


def _reset_signals() -> None:
    """Default dispositions and an empty mask, as a freshly exec'd program expects.

    Only the signals not at their default are changed (the interpreter knows each one's
    disposition: it read them at start-up and made every change since), not all 64 of them."""
    signal.set_wakeup_fd(-1)
    for number in signal.valid_signals():
        if number in (signal.SIGKILL, signal.SIGSTOP) or signal.getsignal(number) is signal.SIG_DFL:
            continue
        with suppress(OSError, ValueError):
            signal.signal(number, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def _write_error(message: str, fd: int = 2) -> None:
    with suppress(OSError):
        os.write(fd, f"pywsl: {message}\n".encode(errors="replace"))


def _write_warning(message: str, fd: int = 2) -> None:
    """A warning of the process's set-up, as WSL's relay prints the warnings it collected."""
    with suppress(OSError):
        os.write(fd, f"wsl: {message}\n".encode(errors="replace"))


def _install_stdio(sources: Sequence[int]) -> None:
    """Make ``sources`` the process's fds 0, 1 and 2 and close everything else."""
    lifted = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3) for fd in sources]
    for target, fd in enumerate(lifted):
        os.dup2(fd, target, inheritable=True)
    os.closerange(3, 0x7FFFFFFF)


def _drop_privileges(database: UserDatabase, user: PasswdEntry) -> None:
    """initgroups + setgid + setuid."""
    _set_groups(database, user)
    os.setgid(user.gid)
    os.setuid(user.uid)


def _set_groups(database: UserDatabase, user: PasswdEntry) -> None:
    """The user's supplementary groups (initgroups)."""
    try:
        os.setgroups(database.group_list(user))
    except PermissionError:
        # A user namespace with setgroups denied: fine as long as nothing changes identity.
        if user.uid != os.geteuid() or user.gid != os.getegid():
            raise


def _execvpe(file: str, argv: list[str], environment: dict[str, str]) -> int:
    """``execvpe``: search PATH (the child's own) unless ``file`` has a slash; returns the exit code."""

    def execute(path: str, arguments: list[str]) -> int:
        os.execve(path, arguments, environment)
        raise AssertionError("execve returned")

    _, code = _run_program(file, argv, environment, execute, 2)
    return code


def _missing(candidate: str) -> OSError | None:
    """The error an exec of `candidate` would fail with because it is not there, else None."""
    try:
        os.stat(candidate)
    except OSError as error:
        if error.errno in (errno.ENOENT, errno.ENOTDIR):
            return error
    return None


def _run_program(
    file: str,
    argv: list[str],
    environment: dict[str, str],
    start: Callable[[str, list[str]], int],
    err_fd: int,
) -> tuple[int, int]:
    """``execvpe``'s search with `start` (an exec, or a spawn that returns a pid): PATH (the
    program's own environment) unless ``file`` has a slash, a script without a ``#!`` line run by
    the shell. (pid, 0) once started; (0, exit code) after writing why not on `err_fd`."""
    if "/" in file:
        candidates = [file]
    else:
        search = environment.get("PATH", DEFAULT_PATH)
        candidates = [os.path.join(directory or ".", file) for directory in search.split(":")]
    failure: OSError | None = None
    for candidate in candidates:
        missing = _missing(candidate) if len(candidates) > 1 else None
        if missing is not None:
            failure = failure or missing  # as its exec would fail, without a process to try it
            continue
        try:
            return start(candidate, argv), 0
        except OSError as error:
            if error.errno == errno.ENOEXEC:
                # A script without a #! line: run it with the shell, like execvp does.
                try:
                    return start("/bin/sh", ["/bin/sh", candidate, *argv[1:]]), 0
                except OSError as shell_error:
                    error = shell_error
            if error.errno in (errno.ENOENT, errno.ENOTDIR, errno.ESTALE, errno.ENODEV, errno.ETIMEDOUT):
                failure = failure or error
                continue
            if error.errno == errno.EACCES:
                failure = error if failure is None or failure.errno != errno.EACCES else failure
                continue
            failure = error
            break
    assert failure is not None
    _write_error(f"execvpe({file}) failed: {os.strerror(failure.errno or 0)}", err_fd)
    return 0, _EXIT_SETUP_FAILED


def _enter_working_directory(cwd: str, home: str, host_mount_point: str | None, err_fd: int = 2) -> None:
    """chdir as the user: a host directory through the automount root, else home (with WSL's
    "Failed to translate" warning when automount is enabled); a Linux path or ~ as given."""
    host_directory = translate_host_directory(cwd, host_mount_point)
    if host_directory is not None:
        try:
            os.chdir(host_directory)
            return
        except OSError:
            pass
    if cwd.startswith(HOST_DIRECTORY_PREFIX):
        if host_mount_point is not None:
            _write_warning(f"Failed to translate '{cwd[len(HOST_DIRECTORY_PREFIX) :]}'", err_fd)
        cwd = ""
    try:
        os.chdir(resolve_working_directory(cwd, home))
    except (OSError, ValueError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        _write_error(f"cannot change to directory {cwd or home!r}: {reason}; starting in /", err_fd)
        with suppress(OSError):
            os.chdir("/")


def _start_child(
    request: LaunchRequest, context: RelayContext, stdio: Sequence[int], terminal: int | None
) -> int:
    """Everything between fork and exec; returns the exit code when exec did not happen."""
    _reset_signals()
    os.setsid()
    database = UserDatabase(context.etc_root)
    try:
        user = _user(request, context, database)
    except UserNotFound:
        return LX_INIT_USER_NOT_FOUND
    if terminal is not None:
        fcntl.ioctl(terminal, termios.TIOCSCTTY, 0)
        tty_group = database.group_by_name("tty")
        with suppress(OSError):
            os.fchown(terminal, user.uid, tty_group.gid if tty_group is not None else -1)
            os.fchmod(terminal, 0o620)
    _install_stdio(stdio)
    environment, program = _prepare(request, context, user, 2)
    _drop_privileges(database, user)
    _enter_working_directory(request.cwd, user.home, context.host_mount_point)
    return _execvpe(program.file, program.argv, environment)


def _user(request: LaunchRequest, context: RelayContext, database: UserDatabase) -> PasswdEntry:
    return resolve_user(
        database,
        request.username,
        default_user=context.default_user,
        default_uid=request.default_uid,
        fallback_uid=context.fallback_uid,
    )


def _prepare(
    request: LaunchRequest, context: RelayContext, user: PasswdEntry, err_fd: int
) -> tuple[dict[str, str], Program]:
    """The environment and the program of the process, with what root prepares for it first
    (host PATH folders, the caller's display, a systemd user session); warnings go to `err_fd`."""
    environment = build_environment(
        request.environment,
        user,
        distribution_name=context.distribution_name,
        hostname=os.uname().nodename,
        language=read_language_at(context.etc_root),
    )
    # As the distribution's root: the host PATH folders are made or refreshed before the user runs.
    environment = launch_environment(environment, context.interop, request.nt_path, context.host_mount_point)
    environment["PATH"] = devices.launch_path(environment.get("PATH", ""))  # GPU tools (nvidia-smi)
    shared, problems = gui.prepare(request.host_environment, user.uid, user.gid)  # the caller's display
    environment.update(shared)
    for problem in problems:
        _write_warning(f"GUI: {problem}", err_fd)
    session, problems = systemd_user.prepare(user.uid, user.gid, user.name, shared)  # with systemd as pid 1
    environment.update(session)
    for problem in problems:
        _write_warning(problem, err_fd)
    return environment, resolve_program(request.filename, request.command_line, user, login=request.login)


def spawn_child(
    request: LaunchRequest,
    context: RelayContext,
    stdio: Sequence[int],
    named: Callable[[int], None] | None = None,
) -> tuple[int, int]:
    """The process of a launch without a terminal, started without forking the interpreter.

    A fork of the relay costs milliseconds (the interpreter's pages are copied as it touches
    them); ``posix_spawn`` does not copy them. The relay prepares what the child would (user,
    environment, program, as root), takes the user's ids with root kept as the saved set-user-ID
    (so the working directory is entered with the user's rights, as the child does it), spawns
    the program in a new session on the std streams with every signal at its default and none
    blocked, and takes root back. The program's ``execve`` ends root's saved ids. Returns (pid, 0),
    or (0, exit code) when it did not start (``LX_INIT_USER_NOT_FOUND``, or 1 after the reason
    was written on the process's stderr).

    `named` is told the program's pid before the program can run (the pid the kernel gives next
    in this pid namespace, and the real one after the spawn if another process took that one), so
    that what the relay is called after its child (``Relay(N)``) is what the program sees."""
    try:
        return _spawn(request, context, stdio, named)
    except Exception as error:  # as `run_child` reports a set-up that failed
        _write_error(f"cannot start the process: {error}", stdio[2])
        return 0, _EXIT_SETUP_FAILED


def _spawn(
    request: LaunchRequest, context: RelayContext, stdio: Sequence[int], named: Callable[[int], None] | None
) -> tuple[int, int]:
    err_fd = stdio[2]
    database = UserDatabase(context.etc_root)
    try:
        user = _user(request, context, database)
    except UserNotFound:
        return 0, LX_INIT_USER_NOT_FOUND
    environment, program = _prepare(request, context, user, err_fd)
    defaults = _signals_to_reset()
    for fd in _open_descriptors():
        if fd > 2:
            with suppress(OSError):
                os.set_inheritable(fd, False)
    actions = [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(stdio)]

    def spawn(path: str, arguments: list[str]) -> int:
        expected = next_pid() if named is not None else 0
        if named is not None and expected:
            named(expected)
        pid = os.posix_spawn(
            path, arguments, environment, file_actions=actions, setsid=True, setsigmask=(), setsigdef=defaults
        )
        if named is not None and pid != expected:
            named(pid)
        return pid

    with _acting_as(database, user):
        _enter_working_directory(request.cwd, user.home, context.host_mount_point, err_fd)
        try:
            return _run_program(program.file, program.argv, environment, spawn, err_fd)
        finally:
            with suppress(OSError):
                os.chdir("/")


def next_pid() -> int:
    """The pid the kernel gives the next process of this pid namespace (0 when unknown): the one
    after ``ns_last_pid``, unless another process forks first."""
    try:
        with open("/proc/sys/kernel/ns_last_pid", "rb") as handle:
            return int(handle.read()) + 1
    except (OSError, ValueError):
        return 0


def _signals_to_reset() -> list[int]:
    """The signals whose disposition is not the default (a spawned program starts with defaults)."""
    return [
        number
        for number in signal.valid_signals()
        if number not in (signal.SIGKILL, signal.SIGSTOP) and signal.getsignal(number) is not signal.SIG_DFL
    ]


def _open_descriptors() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return []


class _acting_as:
    """The user's ids and groups, root kept as the saved ids to take back afterwards."""

    def __init__(self, database: UserDatabase, user: PasswdEntry) -> None:
        self._database = database
        self._user = user

    def __enter__(self) -> None:
        self._ids = os.getresuid(), os.getresgid(), os.getgroups()
        uid, gid, _groups = self._ids
        _set_groups(self._database, self._user)
        os.setresgid(self._user.gid, self._user.gid, gid[2])
        os.setresuid(self._user.uid, self._user.uid, uid[2])

    def __exit__(self, *exception: object) -> None:
        uid, gid, groups = self._ids
        os.setresuid(*uid)
        os.setresgid(*gid)
        with suppress(PermissionError):
            os.setgroups(groups)


def run_child(
    request: LaunchRequest, context: RelayContext, stdio: Sequence[int], terminal: int | None
) -> NoReturn:
    """The forked child: set the process up and exec its program; exits when that fails."""
    code = _EXIT_SETUP_FAILED
    try:
        code = _start_child(request, context, stdio, terminal)
    except BaseException as error:
        _write_error(f"cannot start the process: {error}")
    os._exit(code)
