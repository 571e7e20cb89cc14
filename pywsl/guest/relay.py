"""The relay: WSL's per-process helper between a client and one launched Linux process.

The session leader forks one relay per ``CreateProcessUtilityVm`` (wsl-reference §4.3 steps 5-7).
The relay is a child subreaper; it forks the user's process and stays until every descendant of
it has exited. It gets five descriptors from the client: stdin, stdout, stderr, the
terminal-control channel and the exit channel.

* A std stream that is not a console is the client's own file, pipe or socket: the process gets
  it as is, nothing is copied.
* The console streams share one PTY opened from the distribution's own ``/dev/ptmx``. The relay
  copies socket [0] → PTY master and PTY master → socket [1] (or [2] when stdout is not a
  console, or back on [0] when neither output is), non-blocking with pending buffers. EOF on
  socket [0] becomes end-of-file on the terminal (VEOF at the start of a line), or a hang-up
  when the terminal is in raw mode.
* Control channel (sequence numbers ignored): ``WindowSizeChanged`` → ``TIOCSWINSZ``; the pywsl
  extension ``SignalProcess`` → the signal to the process group of the child (pipes) or to the
  terminal's foreground process group (PTY). The control channel closing means the client is
  gone: the terminal is hung up (as WSL's relay ends when socket [3] closes).
* No PTY available: the process is not started and its exit status is ``LX_INIT_TTY_LIMIT``.
* When the direct child exits, the remaining terminal output is flushed, then ``ExitStatus``
  goes on the exit channel: the exit status, or 128 + the signal number when the child was killed
  (a deliberate difference from WSL's raw wait status). After the client's echo of those bytes
  the stdio sockets are shut down; the relay keeps reaping until no descendant is left.

The child side resolves the user from the distribution's ``/etc/passwd`` and ``/etc/group``,
builds the environment, takes the terminal as its controlling terminal, drops privileges and
executes the program with ``execvpe`` semantics; no descriptor but 0, 1 and 2 survives into it.
Everything here is imported before the guest enters the distribution: nothing is imported later.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gc
import os
import select
import signal
import socket
import struct
import termios
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from pywsl.guest import devices, forking, gui, syscalls
from pywsl.guest.environment import (
    DEFAULT_PATH,
    HOST_DIRECTORY_PREFIX,
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
from pywsl.wire import schema
from pywsl.wire.channel import MessageChannel
from pywsl.wire.constants import LX_INIT_TTY_LIMIT, LX_INIT_USER_NOT_FOUND
from pywsl.wire.enums import CREATE_PROCESS_SHELL_OPTIONS, LX_INIT_CREATE_PROCESS_FLAGS, LX_MESSAGE_TYPE
from pywsl.wire.errors import ChannelClosed, ProtocolError

__all__ = [
    "BUFFER_SIZE",
    "LaunchRequest",
    "RelayContext",
    "RelayDescriptors",
    "open_pty",
    "run_relay",
]

# Every copy moves up to this many bytes at a time; a pending buffer holds at most 4 of them.
BUFFER_SIZE = 64 * 1024
_PENDING_LIMIT = 4 * BUFFER_SIZE
# When the child exits, at most this much terminal output still waiting in the PTY is forwarded.
_FINAL_DRAIN_LIMIT = 16 * 1024 * 1024

# <asm-generic/ioctls.h> numbers (x86, arm, riscv and the other generic architectures).
_TIOCSPTLCK = 0x40045431
_TIOCGPTN = 0x80045430
_TIOCGPTPEER = 0x5441
_IUTF8 = 0o040000
_WINSIZE = struct.Struct("HHHH")

_EXIT_STATUS = schema("LX_INIT_PROCESS_EXIT_STATUS")
_WINDOW_SIZE_CHANGED = schema("LX_INIT_WINDOW_SIZE_CHANGED")
_SIGNAL_PROCESS = schema("PYWSL_SIGNAL_PROCESS")
_WINDOW_SIZE_TYPE = int(LX_MESSAGE_TYPE.LxInitMessageWindowSizeChanged)
_SIGNAL_PROCESS_TYPE = int(_SIGNAL_PROCESS.message_type or 0)

_CONSOLE_FLAGS = (
    LX_INIT_CREATE_PROCESS_FLAGS.LxInitCreateProcessFlagsStdInConsole,
    LX_INIT_CREATE_PROCESS_FLAGS.LxInitCreateProcessFlagsStdOutConsole,
    LX_INIT_CREATE_PROCESS_FLAGS.LxInitCreateProcessFlagsStdErrConsole,
)
# The exit code of a child that could not run its program or could not be set up (WSL's
# FATAL_ERROR after a failed execvpe): a shell's 127 only comes from a shell.
_EXIT_SETUP_FAILED = 1
# A control character set to this is disabled (_POSIX_VDISABLE).
_DISABLED_CHARACTER = b"\0"


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
            login=bool(int(common.ShellOptions) & CREATE_PROCESS_SHELL_OPTIONS.ShellOptionsLogin),
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


@dataclass(frozen=True)
class RelayDescriptors:
    """The five descriptors of a CreateProcessUtilityVm, in message order."""

    stdio: tuple[int, int, int]
    control: int
    exit: int

    @classmethod
    def from_list(cls, fds: Sequence[int]) -> RelayDescriptors:
        if len(fds) != 5:
            raise ValueError(
                f"expected 5 file descriptors (stdin, stdout, stderr, control, exit), got {len(fds)}"
            )
        return cls((fds[0], fds[1], fds[2]), fds[3], fds[4])

    def all(self) -> tuple[int, ...]:
        return (*self.stdio, self.control, self.exit)


def open_pty() -> tuple[int, int]:
    """A new PTY from ``/dev/ptmx`` (the caller's devpts): ``(master, slave)``, close-on-exec."""
    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(master, _TIOCSPTLCK, struct.pack("i", 0))
        try:
            slave = fcntl.ioctl(master, _TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
        except OSError as error:
            if error.errno not in (errno.EINVAL, errno.ENOTTY):
                raise
            (number,) = struct.unpack("I", fcntl.ioctl(master, _TIOCGPTN, bytes(4)))
            slave = os.open(f"/dev/pts/{number}", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except BaseException:
        os.close(master)
        raise
    return master, slave


def _set_window_size(fd: int, rows: int, columns: int) -> None:
    if rows > 0 and columns > 0:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, _WINSIZE.pack(rows, columns, 0, 0))


def _log(message: str) -> None:
    with contextlib.suppress(OSError):
        os.write(2, f"pywsl relay[{os.getpid()}]: {message}\n".encode(errors="replace"))


def _close(fd: int | None) -> None:
    if fd is not None and fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)


def _shutdown(fd: int, how: int) -> None:
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return  # not a socket: closing it is all there is
    try:
        with contextlib.suppress(OSError):
            sock.shutdown(how)
    finally:
        sock.detach()


# -- the child: from fork to exec ---------------------------------------------------------------------


def _reset_signals() -> None:
    """Default dispositions and an empty mask, as a freshly exec'd program expects."""
    signal.set_wakeup_fd(-1)
    for number in signal.valid_signals():
        if number in (signal.SIGKILL, signal.SIGSTOP):
            continue
        with contextlib.suppress(OSError, ValueError):
            signal.signal(number, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def _write_error(message: str) -> None:
    with contextlib.suppress(OSError):
        os.write(2, f"pywsl: {message}\n".encode(errors="replace"))


def _write_warning(message: str) -> None:
    """A warning of the process's set-up, as WSL's relay prints the warnings it collected."""
    with contextlib.suppress(OSError):
        os.write(2, f"wsl: {message}\n".encode(errors="replace"))


def _install_stdio(sources: Sequence[int]) -> None:
    """Make ``sources`` the process's fds 0, 1 and 2 and close everything else."""
    lifted = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3) for fd in sources]
    for target, fd in enumerate(lifted):
        os.dup2(fd, target, inheritable=True)
    os.closerange(3, 0x7FFFFFFF)


def _drop_privileges(database: UserDatabase, user: PasswdEntry) -> None:
    """initgroups + setgid + setuid."""
    groups = database.group_list(user)
    try:
        os.setgroups(groups)
    except PermissionError:
        # A user namespace with setgroups denied: fine as long as nothing changes identity.
        if user.uid != os.geteuid() or user.gid != os.getegid():
            raise
    os.setgid(user.gid)
    os.setuid(user.uid)


def _execvpe(file: str, argv: list[str], environment: dict[str, str]) -> int:
    """``execvpe``: search PATH (the child's own) unless ``file`` has a slash; returns the exit code."""
    if "/" in file:
        candidates = [file]
    else:
        search = environment.get("PATH", DEFAULT_PATH)
        candidates = [os.path.join(directory or ".", file) for directory in search.split(":")]
    failure: OSError | None = None
    for candidate in candidates:
        try:
            os.execve(candidate, argv, environment)
        except OSError as error:
            if error.errno == errno.ENOEXEC:
                # A script without a #! line: run it with the shell, like execvp does.
                try:
                    os.execve("/bin/sh", ["/bin/sh", candidate, *argv[1:]], environment)
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
    _write_error(f"execvpe({file}) failed: {os.strerror(failure.errno or 0)}")
    return _EXIT_SETUP_FAILED


def _enter_working_directory(cwd: str, home: str, host_mount_point: str | None) -> None:
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
            _write_warning(f"Failed to translate '{cwd[len(HOST_DIRECTORY_PREFIX) :]}'")
        cwd = ""
    try:
        os.chdir(resolve_working_directory(cwd, home))
    except (OSError, ValueError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        _write_error(f"cannot change to directory {cwd or home!r}: {reason}; starting in /")
        with contextlib.suppress(OSError):
            os.chdir("/")


def _start_child(
    request: LaunchRequest, context: RelayContext, stdio: Sequence[int], terminal: int | None
) -> int:
    """Everything between fork and exec; returns the exit code when exec did not happen."""
    _reset_signals()
    os.setsid()
    database = UserDatabase(context.etc_root)
    try:
        user = resolve_user(
            database,
            request.username,
            default_user=context.default_user,
            default_uid=request.default_uid,
            fallback_uid=context.fallback_uid,
        )
    except UserNotFound:
        return LX_INIT_USER_NOT_FOUND
    if terminal is not None:
        fcntl.ioctl(terminal, termios.TIOCSCTTY, 0)
        tty_group = database.group_by_name("tty")
        with contextlib.suppress(OSError):
            os.fchown(terminal, user.uid, tty_group.gid if tty_group is not None else -1)
            os.fchmod(terminal, 0o620)
    _install_stdio(stdio)
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
        _write_warning(f"GUI: {problem}")
    program = resolve_program(request.filename, request.command_line, user, login=request.login)
    _drop_privileges(database, user)
    _enter_working_directory(request.cwd, user.home, context.host_mount_point)
    return _execvpe(program.file, program.argv, environment)


def _child_main(
    request: LaunchRequest, context: RelayContext, stdio: Sequence[int], terminal: int | None
) -> NoReturn:
    code = _EXIT_SETUP_FAILED
    try:
        code = _start_child(request, context, stdio, terminal)
    except BaseException as error:
        _write_error(f"cannot start the process: {error}")
    os._exit(code)


# -- the relay ----------------------------------------------------------------------------------------


class _Relay:
    """The relay's event loop (one per launched process)."""

    def __init__(self, request: LaunchRequest, fds: RelayDescriptors) -> None:
        self.request = request
        self.console = request.console
        self.stdio = fds.stdio
        self.master: int | None = None
        self.master_eof = False  # every slave descriptor is closed (the master reads EIO)
        self.child_pid = 0
        # console stdin socket → master
        self.input_fd: int | None = fds.stdio[0] if self.console[0] else None
        self.input_pending = bytearray()
        self.input_eof = False
        self.end_of_file_sent = False
        self.last_input = b"\n"
        # master → the socket of the first console output (or back on stdin's socket)
        self.output_fd: int | None = None
        self.output_pending = bytearray()
        self.final_drain_done = False
        self.console_sockets = [fd for fd, console in zip(fds.stdio, self.console, strict=True) if console]
        self.passed_stdio = [fd for fd, console in zip(fds.stdio, self.console, strict=True) if not console]
        control = MessageChannel(socket.socket(fileno=fds.control), name="control")
        self.control: MessageChannel | None = control
        control.ignore_sequence_numbers()
        self.exit: MessageChannel | None = MessageChannel(socket.socket(fileno=fds.exit), name="exit")
        self.exit_code: int | None = None
        self.status_sent = False
        self.finished = False  # the exit handshake is over: stdio is shut down
        self.no_children = False
        self.wake_read, self.wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        if any(self.console):
            if self.console[1]:
                self.output_fd = fds.stdio[1]
            elif self.console[2]:
                self.output_fd = fds.stdio[2]
            else:
                self.output_fd = fds.stdio[0]

    # -- setup -----------------------------------------------------------------------------------

    def start(self, context: RelayContext) -> None:
        syscalls.set_child_subreaper(True)
        signal.signal(signal.SIGCHLD, _ignore_signal)
        signal.set_wakeup_fd(self.wake_write)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
        terminal: int | None = None
        if any(self.console):
            try:
                self.master, terminal = open_pty()
            except OSError as error:
                # No terminal for the process (devpts full or missing): it does not start, and
                # the exit status says why, as WSL's LX_INIT_TTY_LIMIT.
                with contextlib.suppress(OSError):
                    os.write(self.stdio[2], f"pywsl: cannot open a terminal: {error}\r\n".encode())
                self.exit_code = LX_INIT_TTY_LIMIT
                return
            attributes = termios.tcgetattr(self.master)
            attributes[0] |= _IUTF8
            termios.tcsetattr(self.master, termios.TCSANOW, attributes)
            _set_window_size(self.master, self.request.rows, self.request.columns)
        stdio = [
            terminal if console and terminal is not None else fd
            for fd, console in zip(self.stdio, self.console, strict=True)
        ]
        pid = os.fork()
        if pid == 0:
            _child_main(self.request, context, stdio, terminal)
        self.child_pid = pid
        _close(terminal)
        for fd in self.passed_stdio:
            _close(fd)
        self.passed_stdio = []
        for fd in {*self.console_sockets, *([self.master] if self.master is not None else [])}:
            os.set_blocking(fd, False)

    # -- the loop --------------------------------------------------------------------------------

    def run(self) -> None:
        while not (self.finished and self.no_children):
            self._after_events()
            if self.finished and self.no_children:
                break
            interest = self._interest()
            poller = select.poll()
            for fd, events in interest.items():
                poller.register(fd, events)
            for fd, events in poller.poll():
                self._dispatch(fd, events)
        self._close_everything()

    def _interest(self) -> dict[int, int]:
        interest: dict[int, int] = {}

        def want(fd: int | None, events: int) -> None:
            if fd is not None:
                interest[fd] = interest.get(fd, 0) | events

        want(self.wake_read, select.POLLIN)
        if self.master is not None and not self.master_eof:
            drained = self.exit_code is not None and self.final_drain_done
            if self.finished or (len(self.output_pending) < _PENDING_LIMIT and not drained):
                want(self.master, select.POLLIN)
            if self.input_pending and not self.finished:
                want(self.master, select.POLLOUT)
        if self.input_fd is not None and not self.input_eof and len(self.input_pending) < _PENDING_LIMIT:
            want(self.input_fd, select.POLLIN)
        if self.output_fd is not None and self.output_pending:
            want(self.output_fd, select.POLLOUT)
        if self.control is not None and not self.finished:
            want(self.control.fileno(), select.POLLIN)
        if self.exit is not None and self.status_sent and not self.finished:
            want(self.exit.fileno(), select.POLLIN)
        return interest

    def _dispatch(self, fd: int, events: int) -> None:
        readable = bool(events & (select.POLLIN | select.POLLHUP | select.POLLERR))
        writable = bool(events & (select.POLLOUT | select.POLLHUP | select.POLLERR))
        if fd == self.wake_read:
            with contextlib.suppress(OSError):
                while os.read(self.wake_read, 256):
                    pass
            self._reap()
            return
        if fd == self.master:
            if readable:
                self._read_master()
                self._write_output()  # most of the time the socket takes it right away
            if writable and self.master is not None:
                self._write_master()
        if self.control is not None and fd == self.control.fileno() and readable:
            self._read_control()
        if self.exit is not None and fd == self.exit.fileno() and readable and self.status_sent:
            self._read_echo()
        room = len(self.input_pending) < _PENDING_LIMIT
        if fd == self.input_fd and readable and not self.input_eof and room:
            self._read_input()
        if fd == self.output_fd and writable and self.output_pending:
            self._write_output()

    def _after_events(self) -> None:
        """Move the exit handshake on (each step needs the previous one and empty buffers)."""
        if self.input_eof and not self.input_pending and not self.end_of_file_sent:
            self._queue_end_of_file()
        if self.exit_code is None:
            return
        if not self.finished:
            if self.master is not None and not self.final_drain_done:
                self._final_drain()
            if self.output_pending and self.output_fd is not None:
                return
            if not self.status_sent:
                self._send_exit_status()
        if self.finished:
            self._reap()

    # -- terminal input --------------------------------------------------------------------------

    def _read_input(self) -> None:
        assert self.input_fd is not None
        try:
            data = os.read(self.input_fd, BUFFER_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.input_eof = True
            return
        if self.master is None or self.master_eof or self.finished:
            return  # nobody reads the terminal any more
        self.input_pending += data

    def _queue_end_of_file(self) -> None:
        """EOF on the stdin socket: end-of-file for the terminal's reader.

        In canonical mode VEOF at the start of a line makes read() return 0; after a partial
        line the first VEOF only completes it, so a second one follows. Only then: a VEOF nobody
        consumes stays in the terminal as a NUL byte that the next reader gets (a shell prints
        it as ``^@``). A client in raw mode sends Enter as ``\\r``, a line end once ICRNL maps it.
        A terminal in raw mode (a line editor) has no end-of-file: it is hung up, as WSL's relay
        closes the terminal when its stdin socket ends.
        """
        self.end_of_file_sent = True
        if self.master is None:
            return
        try:
            attributes = termios.tcgetattr(self.master)
        except termios.error:
            return
        if not attributes[3] & termios.ICANON:
            self._hang_up()
            return
        characters = attributes[6]
        eof = characters[termios.VEOF]
        eof = eof if isinstance(eof, bytes) else bytes([eof])
        line_ends = {b"\n", eof} | {
            character
            for character in (characters[termios.VEOL], characters[termios.VEOL2])
            if character != _DISABLED_CHARACTER
        }
        if attributes[0] & termios.ICRNL and not attributes[0] & termios.IGNCR:
            line_ends.add(b"\r")
        self.input_pending += eof if self.last_input in line_ends else eof * 2

    def _hang_up(self) -> None:
        """What the kernel does when a terminal hangs up: SIGHUP and SIGCONT to its foreground
        group and to the session leader (the child). The master stays open for the last output."""
        if self.exit_code is not None or self.child_pid <= 0 or self.master is None:
            return
        with contextlib.suppress(OSError):
            group = os.tcgetpgrp(self.master)
            if group > 0:
                for number in (signal.SIGHUP, signal.SIGCONT):
                    os.killpg(group, number)
        for number in (signal.SIGHUP, signal.SIGCONT):
            with contextlib.suppress(OSError):
                os.kill(self.child_pid, number)

    def _write_master(self) -> None:
        assert self.master is not None
        try:
            written = os.write(self.master, self.input_pending[:BUFFER_SIZE])
        except BlockingIOError:
            return
        except OSError:
            self.input_pending.clear()  # the terminal has no reader any more
            return
        if written:
            self.last_input = bytes(self.input_pending[written - 1 : written])
            del self.input_pending[:written]

    # -- terminal output -------------------------------------------------------------------------

    def _read_master(self) -> None:
        """Read what the terminal has (a PTY gives at most 4 KiB a read) up to the pending limit."""
        while self.master is not None and len(self.output_pending) < _PENDING_LIMIT:
            try:
                data = os.read(self.master, BUFFER_SIZE)
            except BlockingIOError:
                return
            except OSError:
                data = b""  # EIO: no process has the terminal open any more
            if not data:
                if self.exit_code is None:
                    # Closing the master now would hang up the child while it is still exiting
                    # (SIGHUP): keep it, just stop reading it, until the child has been reaped.
                    self.master_eof = True
                    self.input_pending.clear()
                else:
                    self._close_master()
                return
            if self.finished or self.output_fd is None:
                continue  # nobody gets this output any more: read and drop it
            self.output_pending += data

    def _final_drain(self) -> None:
        """After the child exited: take what the terminal still holds, then stop reading it."""
        self.final_drain_done = True
        drained = 0
        while self.master is not None and drained < _FINAL_DRAIN_LIMIT:
            try:
                data = os.read(self.master, BUFFER_SIZE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._close_master()
                return
            drained += len(data)
            if self.output_fd is not None:
                self.output_pending += data

    def _write_output(self) -> None:
        while self.output_fd is not None and self.output_pending:
            try:
                written = os.write(self.output_fd, self.output_pending[:BUFFER_SIZE])
            except BlockingIOError:
                return
            except OSError:
                # The client stopped reading: its output is dropped from now on.
                self.output_pending.clear()
                self.output_fd = None
                return
            del self.output_pending[:written]

    def _close_master(self) -> None:
        _close(self.master)
        self.master = None
        self.input_pending.clear()

    # -- control and exit channels -------------------------------------------------------------

    def _read_control(self) -> None:
        assert self.control is not None
        try:
            data, fds = self.control.receive()
        except ChannelClosed:
            self._client_gone()
            return
        except (ProtocolError, OSError) as error:
            _log(f"control channel: {error}")
            self._client_gone()
            return
        for fd in fds:
            _close(fd)
        message_type = struct.unpack_from("<I", data)[0]
        try:
            if message_type == _WINDOW_SIZE_TYPE:
                size = _WINDOW_SIZE_CHANGED.parse(data)
                if self.master is not None:
                    _set_window_size(self.master, int(size.Rows), int(size.Columns))
            elif message_type == _SIGNAL_PROCESS_TYPE:
                self._signal(int(_SIGNAL_PROCESS.parse(data).Signal))
            else:
                _log(f"control channel: ignoring a message of type {message_type}")
        except (ProtocolError, OSError) as error:
            _log(f"control channel: {error}")

    def _signal(self, number: int) -> None:
        if not 0 < number < signal.NSIG:
            _log(f"control channel: {number} is not a signal number")
            return
        if self.exit_code is not None or self.child_pid <= 0:
            return
        group = self.child_pid
        if self.master is not None:
            with contextlib.suppress(OSError):
                # 0 = no foreground group: never let that become killpg(0), the relay's own group
                group = os.tcgetpgrp(self.master) or self.child_pid
        try:
            os.killpg(group, number)
        except ProcessLookupError:
            # The child has not called setsid() yet: it is still in the relay's group.
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.child_pid, number)

    def _client_gone(self) -> None:
        """The control channel closed: the client went away; hang the terminal up."""
        if self.control is not None:
            self.control.close()
            self.control = None
        if self.exit_code is None:
            self._close_master()
            self.output_pending.clear()
            self.output_fd = None

    def _send_exit_status(self) -> None:
        assert self.exit_code is not None
        self.status_sent = True
        if self.exit is None:
            self._finish()
            return
        try:
            self.exit.send(_EXIT_STATUS, ExitCode=self.exit_code)
        except (OSError, ProtocolError):
            self._finish()

    def _read_echo(self) -> None:
        assert self.exit is not None
        with contextlib.suppress(ChannelClosed, ProtocolError, OSError):
            _, fds = self.exit.receive()
            for fd in fds:
                _close(fd)
        self._finish()

    def _finish(self) -> None:
        """The exit handshake is over: shut down stdio (stdin for reading, outputs for writing)."""
        self.finished = True
        self.output_pending.clear()
        self.input_pending.clear()
        for fd in self.console_sockets:
            _shutdown(fd, socket.SHUT_RDWR)
            _close(fd)
        self.console_sockets = []
        self.input_fd = None
        self.output_fd = None
        for channel in (self.control, self.exit):
            if channel is not None:
                channel.close()
        self.control = None
        self.exit = None

    # -- children --------------------------------------------------------------------------------

    def _reap(self) -> None:
        reaped, running = forking.reap_children()
        self.no_children = not running
        for pid, status in reaped:
            if pid == self.child_pid:
                self.exit_code = forking.exit_code(status)

    def _close_everything(self) -> None:
        self._close_master()
        if not self.finished:
            self._finish()
        signal.set_wakeup_fd(-1)
        _close(self.wake_read)
        _close(self.wake_write)


def _ignore_signal(number: int, frame: object) -> None:
    """SIGCHLD handler: its only job is to wake the loop through the wakeup descriptor."""


def run_relay(request: LaunchRequest, fds: RelayDescriptors, context: RelayContext) -> NoReturn:
    """The relay process (forked by the session leader): launch the process, relay, then exit."""
    code = 0
    try:
        signal.set_wakeup_fd(-1)
        # Collect garbage inherited from the parent now: a socket object collected later would
        # close whatever descriptor had reused its number by then.
        gc.collect()
        forking.close_other_fds(fds.all())
        relay = _Relay(request, fds)
        relay.start(context)
        if relay.child_pid:
            syscalls.set_process_title(f"Relay({relay.child_pid})")
        relay.run()
    except BaseException as error:
        _log(f"failed: {error!r}")
        code = 1
    os._exit(code)
