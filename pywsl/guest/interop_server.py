"""The interop server: runs a host program for a process of a distribution (WSL's wsl.exe/wslhost role).

The VM monitor (host root, the host's namespaces) hands each interop connection that a
distribution's init forwarded to it (``interop_init``) to a worker of its own. The worker became
the VM's owner (``setgroups`` with the owner's groups from the host's password database,
``setgid``, ``setuid``) before it reads a byte, so nothing a distribution sends is ever handled
with root's rights. Then, on the connection (``interop_messages``):

1. ``LX_INIT_CREATE_NT_PROCESS_UTILITY_VM`` with three descriptors (the caller's stdin, stdout,
   stderr), received within ``REQUEST_TIMEOUT``; the working folder and the environment, sent as
   they are inside, are translated here (``interop_paths.translate_request``: the one place for
   both clients); ``Filename`` must be an absolute host path,
   argv and environment are bounded (``MAX_ARGUMENTS``, ``MAX_ENVIRONMENT``, ``MAX_STRINGS_BYTES``:
   ``E2BIG`` beyond them, ``EINVAL`` for anything malformed);
2. the program is spawned (``posix_spawn``: no copy of the worker) into a new session, in
   ``CurrentWorkingDirectory`` (the owner's home when that fails), with the caller's descriptors
   as 0, 1 and 2, default signal dispositions and the environment of the request plus ``HOME``,
   ``USER``, ``LOGNAME`` and ``SHELL`` of the owner. With ``CreatePseudoconsole`` and a caller's
   terminal among them, the program gets a terminal of its own instead (``interop_terminal``);
3. ``LX_INIT_CREATE_PROCESS_RESPONSE`` with ``Result`` = 0 or the errno of the failed execve;
4. ``PYWSL_SIGNAL_PROCESS`` from the caller is sent to the program's process group,
   ``LX_INIT_WINDOW_SIZE_CHANGED`` sets the pseudoconsole's size;
5. ``LX_INIT_PROCESS_EXIT_STATUS`` (exit status, or 128 + signal) when the program exits.

When the caller's connection closes before the program has exited (the caller was killed, its
distribution terminated), the program's process group is killed: nothing started through interop
outlives its caller unless it left its process group on purpose (a daemon), as WSL leaves
Windows processes running. Every received descriptor is closed on every path.
"""

from __future__ import annotations

import errno
import fcntl
import os
import pwd
import select
import struct
import time
from collections.abc import Sequence

from pywsl.guest import forking, guest_log, interop_paths
from pywsl.guest import interop_messages as messages
from pywsl.guest import lean_signal as signal
from pywsl.guest.interop_terminal import Pseudoconsole
from pywsl.lean_context import suppress
from pywsl.wire import unix_sockets as socket

log = guest_log.getLogger("pywsl.interop")

REQUEST_TIMEOUT = 10.0
SEND_TIMEOUT = 5.0
MAX_ARGUMENTS = messages.MAX_ARGUMENTS
MAX_ENVIRONMENT = messages.MAX_ENVIRONMENT
MAX_STRINGS_BYTES = messages.MAX_STRINGS_BYTES
MAX_REQUEST_BYTES = messages.MAX_REQUEST_BYTES
MAX_CONTROL_FRAME = 4096  # signals and window sizes after the request
KILL_SIGNAL = signal.SIGKILL
_STDIO_COUNT = 3
_ANCILLARY = socket.CMSG_SPACE(_STDIO_COUNT * 4)
_DEFAULT_SIGNALS = frozenset(signal.valid_signals()) - {signal.SIGKILL, signal.SIGSTOP}


class BadRequest(ValueError):
    """A request the server refuses, with the errno the client gets."""

    def __init__(self, message: str, code: int = errno.EINVAL) -> None:
        super().__init__(message)
        self.code = code


class Owner:
    """The host account programs run as."""

    def __init__(self, uid: int) -> None:
        entry = pwd.getpwuid(uid)
        self.uid = uid
        self.gid = entry.pw_gid
        self.name = entry.pw_name
        self.home = entry.pw_dir or "/"
        self.shell = entry.pw_shell or "/bin/sh"
        self.groups = os.getgrouplist(entry.pw_name, entry.pw_gid)

    def become(self) -> None:
        os.setgroups(self.groups)
        os.setresgid(self.gid, self.gid, self.gid)
        os.setresuid(self.uid, self.uid, self.uid)


def _close(fds: Sequence[int]) -> None:
    for fd in fds:
        with suppress(OSError):
            os.close(fd)


def validate(request: messages.CreateProcessRequest) -> tuple[str, list[str], list[str], str]:
    """(program, argv, environment, cwd) of a decoded request; BadRequest when it is not acceptable."""
    filename = request.filename
    cwd, environment = interop_paths.translate_request(request.cwd, request.environment)
    if not filename.startswith("/"):
        raise BadRequest(f"the program {filename!r} is not an absolute host path")
    arguments = request.arguments
    if len(arguments) > MAX_ARGUMENTS or len(environment) > MAX_ENVIRONMENT:
        raise BadRequest("too many arguments or environment variables", errno.E2BIG)
    total = sum(len(item) + 1 for item in (filename, *arguments, *environment))
    if total > MAX_STRINGS_BYTES:
        raise BadRequest(
            f"arguments and environment are {total} bytes, more than {MAX_STRINGS_BYTES}", errno.E2BIG
        )
    for entry in environment:
        name, separator, _value = entry.partition("=")
        if not separator or not name:
            raise BadRequest(f"environment entry {entry[:40]!r} is not NAME=VALUE")
    return filename, [filename, *arguments], environment, cwd


def _environment(owner: Owner, requested: Sequence[str]) -> dict[str, str]:
    environment = {
        "HOME": owner.home,
        "USER": owner.name,
        "LOGNAME": owner.name,
        "SHELL": owner.shell,
        "PATH": "/usr/local/bin:/usr/bin:/bin",
    }
    for entry in requested:
        name, _, value = entry.partition("=")
        environment[name] = value
    return environment


class Connection:
    """The interop connection: framing over a stream socket, bounded in size and time."""

    def __init__(self, fd: int) -> None:
        os.set_inheritable(fd, False)
        self.sock = socket.socket(fileno=fd)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def receive_request(self) -> tuple[bytes, list[int]]:
        """The first frame and the descriptors that came with it (all close-on-exec)."""
        deadline = time.monotonic() + REQUEST_TIMEOUT
        fds: list[int] = []
        try:
            header = self._receive(messages.HEADER.size, deadline, fds)
            message_type, size, _sequence, _reserved = messages.HEADER.unpack(header)
            if message_type != messages.CREATE_PROCESS_UTILITY_VM or size < len(header):
                raise BadRequest("the first message is not LX_INIT_CREATE_NT_PROCESS_UTILITY_VM")
            if size > MAX_REQUEST_BYTES:
                raise BadRequest(f"a request of {size} bytes (at most {MAX_REQUEST_BYTES})", errno.E2BIG)
            rest = self._receive(size - len(header), deadline, fds)
        except BaseException:
            _close(fds)
            raise
        if len(fds) != _STDIO_COUNT:
            _close(fds)
            raise BadRequest(f"{len(fds)} descriptors came with the request, not {_STDIO_COUNT}")
        return header + rest, [_above_stdio(fd) for fd in fds]

    def _receive(self, size: int, deadline: float, fds: list[int]) -> bytes:
        data = b""
        while len(data) < size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no whole request in time")
            self.sock.settimeout(remaining)
            chunk, ancillary, _flags, _address = self.sock.recvmsg(
                min(size - len(data), 1 << 16), _ANCILLARY, socket.MSG_CMSG_CLOEXEC
            )
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    count = len(payload) // 4
                    fds.extend(struct.unpack(f"{count}i", payload[: count * 4]))
            if not chunk:
                raise EOFError("the caller closed the connection")
            data += chunk
        return data

    def receive_control(self) -> bytes:
        """One frame after the request (within ``REQUEST_TIMEOUT`` once started); b"" at the end."""
        deadline = time.monotonic() + REQUEST_TIMEOUT
        fds: list[int] = []
        try:
            header = self._receive(messages.HEADER.size, deadline, fds)
            _type, size = messages.frame_size(header, MAX_CONTROL_FRAME)
            return header + self._receive(size - len(header), deadline, fds)
        except (OSError, EOFError, messages.MalformedMessage):
            return b""
        finally:
            _close(fds)

    def send(self, data: bytes) -> None:
        self.sock.settimeout(SEND_TIMEOUT)
        self.sock.sendall(data)


def _above_stdio(fd: int) -> int:
    """``fd`` moved above 2 (a worker whose own 0-2 were closed receives descriptors there), so
    that placing the caller's descriptors on 0, 1 and 2 never overwrites one not yet placed."""
    if fd > 2:
        return fd
    try:
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    finally:
        os.close(fd)


def _enter_folder(cwd: str, owner: Owner) -> None:
    for folder in (cwd, owner.home, "/"):
        if folder:
            try:
                os.chdir(folder)
                return
            except OSError:
                continue


def _spawn(
    program: str,
    argv: list[str],
    environment: dict[str, str],
    stdio: Sequence[int],
    terminal: Pseudoconsole | None,
) -> tuple[int, int]:
    """Start the program in a session of its own; (pid, 0) or (-1, errno)."""
    if terminal is not None:
        actions = terminal.file_actions(stdio)
    else:
        actions = [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(stdio)]
    try:
        pid = os.posix_spawn(
            program,
            argv,
            environment,
            file_actions=actions,
            setsid=True,
            setsigmask=(),
            setsigdef=_DEFAULT_SIGNALS,
        )
    except OSError as error:
        return -1, error.errno or errno.EIO
    return pid, 0


def _kill_group(pid: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, KILL_SIGNAL)


def _follow(connection: Connection, pid: int, terminal: Pseudoconsole | None) -> int | None:
    """Forward signals (and relay the pseudoconsole) until the program exits; its exit code, or
    None when the caller went away (the program's process group is killed then)."""
    pidfd = os.pidfd_open(pid)
    try:
        while True:
            readers = [connection.fileno(), pidfd, *(terminal.readers() if terminal else ())]
            writers = terminal.writers() if terminal else []
            try:
                readable, writable, _ = select.select(readers, writers, [])
            except InterruptedError:
                continue
            if pidfd in readable:
                if terminal is not None:
                    terminal.drain()
                return forking.wait_for(pid)
            # The caller's messages first: a window size sent before a key press applies first.
            if connection.fileno() in readable and not _control(connection, pid, terminal):
                _kill_group(pid)
                forking.wait_for(pid)
                return None
            if terminal is not None:
                terminal.relay(readable, writable)
    finally:
        os.close(pidfd)


def _control(connection: Connection, pid: int, terminal: Pseudoconsole | None) -> bool:
    """One message from the caller; False when the connection is gone."""
    data = connection.receive_control()
    if not data:
        return False
    message_type = messages.HEADER.unpack_from(data)[0]
    if message_type == messages.SIGNAL_PROCESS and len(data) >= 20:
        number = messages.int32_at_16(data)
        if 0 < number < signal.NSIG:
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, number)
    elif message_type == messages.WINDOW_SIZE_CHANGED and len(data) >= 20 and terminal is not None:
        terminal.resize(*messages.window_size_of(data))
    return True


def _refuse(connection: Connection, error: BadRequest) -> int:
    log.warning("interop: refused a request: %s", error)
    with suppress(OSError):
        connection.send(messages.encode_response(error.code))
    return 1


def _pseudoconsole(request: messages.CreateProcessRequest, stdio: Sequence[int]) -> Pseudoconsole | None:
    if not request.pseudoconsole or not any(os.isatty(fd) for fd in stdio):
        return None
    try:
        return Pseudoconsole(stdio, request.rows, request.columns)
    except OSError as error:
        log.warning("interop: no pseudoconsole, the caller's terminal is passed as it is: %s", error)
        return None


def _run(connection: Connection, owner: Owner, data: bytes, stdio: list[int]) -> int:
    """Decode, start, answer, follow: the worker's exit code."""
    try:
        request = messages.decode_create_process(data, MAX_ARGUMENTS, MAX_ENVIRONMENT)
        program, argv, environment, cwd = validate(request)
    except messages.MalformedMessage as error:
        refusal = errno.E2BIG if isinstance(error, messages.TooLarge) else errno.EINVAL
        return _refuse(connection, BadRequest(str(error), refusal))
    except BadRequest as error:
        return _refuse(connection, error)
    terminal = _pseudoconsole(request, stdio)
    try:
        _enter_folder(cwd, owner)
        pid, result = _spawn(program, argv, _environment(owner, environment), stdio, terminal)
        _close(stdio)
        stdio.clear()
        if terminal is not None:
            terminal.started()
        try:
            connection.send(messages.encode_response(result))
        except OSError:
            if pid > 0:
                _kill_group(pid)
                forking.wait_for(pid)
            return 1
        if result:
            return 1
        code = _follow(connection, pid, terminal)
    finally:
        if terminal is not None:
            terminal.close()
    if code is None:
        return 1
    with suppress(OSError):
        connection.send(messages.encode_exit_status(code))
    return 0


def become_owner(owner_uid: int) -> Owner | None:
    """Drop root's rights for the VM's owner's (None, logged, when that fails)."""
    try:
        owner = Owner(owner_uid)
        owner.become()
    except (KeyError, OSError) as error:
        log.error("interop: cannot become the VM's owner (uid %d): %s", owner_uid, error)
        return None
    return owner


def serve(fd: int, owner_uid: int) -> int:
    """One interop connection, in a worker forked by the monitor. Returns the worker's exit code."""
    owner = become_owner(owner_uid)
    if owner is None:
        os.close(fd)
        return 1
    return serve_as(fd, owner)


def serve_as(fd: int, owner: Owner) -> int:
    """One interop connection, in a worker that is already ``owner``."""
    connection = Connection(fd)
    stdio: list[int] = []
    try:
        try:
            data, stdio = connection.receive_request()
        except BadRequest as error:
            return _refuse(connection, error)
        except (OSError, EOFError) as error:
            log.warning("interop: no request: %s", error)
            return 1
        return _run(connection, owner, data, stdio)
    finally:
        _close(stdio)
        connection.close()
