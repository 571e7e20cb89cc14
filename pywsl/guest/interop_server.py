"""The interop server: runs a host program for a process of a distribution (WSL's wsl.exe/wslhost role).

The VM monitor (host root, the host's namespaces) forks one worker per interop connection that
a distribution's init forwarded to it (``interop_init``). The worker becomes the VM's owner at
once (``setgroups`` with the owner's groups from the host's password database, ``setgid``,
``setuid``), before it reads a byte, so nothing a distribution sends is ever handled with
root's rights. Then, on the connection:

1. ``LX_INIT_CREATE_NT_PROCESS_UTILITY_VM`` with three descriptors (the caller's stdin, stdout,
   stderr), received within ``REQUEST_TIMEOUT``; ``Filename`` must be an absolute host path,
   argv and environment are bounded (``MAX_ARGUMENTS``, ``MAX_ENVIRONMENT``, ``MAX_STRINGS_BYTES``);
2. a child enters a new session, changes to ``CurrentWorkingDirectory`` (the owner's home when
   that fails) and executes the program with the caller's descriptors as 0, 1 and 2 and the
   environment of the request plus ``HOME``, ``USER``, ``LOGNAME`` and ``SHELL`` of the owner;
3. ``LX_INIT_CREATE_PROCESS_RESPONSE`` with ``Result`` = 0 or the errno of the failed execve;
4. ``PYWSL_SIGNAL_PROCESS`` from the caller is sent to the program's process group;
5. ``LX_INIT_PROCESS_EXIT_STATUS`` (exit status, or 128 + signal) when the program exits.

When the caller's connection closes before the program has exited (the caller was killed, its
distribution terminated), the program's process group is killed: nothing started through interop
outlives its caller unless it left its process group on purpose (a daemon), as WSL leaves
Windows processes running. Every received descriptor is closed on every path.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import pwd
import select
import signal
import socket
import struct
from collections.abc import Sequence
from typing import Any

from pywsl.guest import forking
from pywsl.wire import schema
from pywsl.wire.channel import MessageChannel
from pywsl.wire.enums import LX_MESSAGE_TYPE
from pywsl.wire.errors import ChannelClosed, ProtocolError

log = logging.getLogger("pywsl.interop")

REQUEST_TIMEOUT = 10.0
SEND_TIMEOUT = 5.0
MAX_ARGUMENTS = 65536
MAX_ENVIRONMENT = 4096
MAX_STRINGS_BYTES = 1024 * 1024
KILL_SIGNAL = signal.SIGKILL

CREATE_NT_PROCESS = schema("LX_INIT_CREATE_NT_PROCESS_UTILITY_VM")
CREATE_PROCESS_RESPONSE = schema("LX_INIT_CREATE_PROCESS_RESPONSE")
EXIT_STATUS = schema("LX_INIT_PROCESS_EXIT_STATUS")
SIGNAL_PROCESS = schema("PYWSL_SIGNAL_PROCESS")
_CREATE_TYPE = int(LX_MESSAGE_TYPE.LxInitMessageCreateProcessUtilityVm)
_SIGNAL_TYPE = int(SIGNAL_PROCESS.message_type or 0)


class BadRequest(ValueError):
    """A request the server refuses (answered with EINVAL)."""


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
        with contextlib.suppress(OSError):
            os.close(fd)


def validate(message: Any) -> tuple[str, list[str], list[str], str]:
    """(program, argv, environment, cwd) of a parsed request; BadRequest when it is not acceptable."""
    common = message.Common
    filename = common.Filename or ""
    if not filename.startswith("/"):
        raise BadRequest(f"the program {filename!r} is not an absolute host path")
    arguments = list(common.CommandLine or ())
    environment = [entry for entry in (common.Environment or ()) if entry]
    if len(arguments) > MAX_ARGUMENTS or len(environment) > MAX_ENVIRONMENT:
        raise BadRequest("too many arguments or environment variables")
    total = sum(len(item) + 1 for item in (filename, *arguments, *environment))
    if total > MAX_STRINGS_BYTES:
        raise BadRequest(f"arguments and environment are {total} bytes, more than {MAX_STRINGS_BYTES}")
    for entry in environment:
        name, separator, _value = entry.partition("=")
        if not separator or not name:
            raise BadRequest(f"environment entry {entry[:40]!r} is not NAME=VALUE")
    return filename, [filename, *arguments], environment, common.CurrentWorkingDirectory or ""


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


def _exec_child(
    program: str,
    argv: list[str],
    environment: dict[str, str],
    cwd: str,
    owner: Owner,
    stdio: Sequence[int],
    report: int,
) -> None:
    """The program's process: a session of its own, the caller's stdio, the host folder. Never returns."""
    try:
        os.setsid()
        for target, fd in enumerate(stdio):
            os.dup2(fd, target, inheritable=True)
        forking.close_other_fds([report])
        for folder in (cwd, owner.home, "/"):
            if folder:
                try:
                    os.chdir(folder)
                    break
                except OSError:
                    continue
        os.execve(program, argv, environment)
    except OSError as error:
        with contextlib.suppress(OSError):
            os.write(report, struct.pack("<i", error.errno or errno.EIO))
    forking.exit_now(127)


def _start(
    program: str, argv: list[str], environment: dict[str, str], cwd: str, owner: Owner, stdio: Sequence[int]
) -> tuple[int, int]:
    """Fork and execute; (pid, 0) or (pid or -1, errno)."""
    report_read, report_write = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.fork()
    except OSError as error:
        _close([report_read, report_write])
        return -1, error.errno or errno.EAGAIN
    if pid == 0:
        os.close(report_read)
        _exec_child(program, argv, environment, cwd, owner, stdio, report_write)
    os.close(report_write)
    try:
        data = os.read(report_read, 4)  # end of file: execve succeeded (close-on-exec)
    finally:
        os.close(report_read)
    if len(data) == 4:
        forking.wait_for(pid)
        return pid, int(struct.unpack("<i", data)[0]) or errno.EIO
    return pid, 0


def _follow(channel: MessageChannel, pid: int) -> int | None:
    """Forward signals until the program exits; its exit code, or None when the caller went away."""
    pidfd = os.pidfd_open(pid)
    try:
        while True:
            ready, _, _ = select.select([channel.fileno(), pidfd], [], [])
            if pidfd in ready:
                return forking.wait_for(pid)
            try:
                data, fds = channel.receive(timeout=REQUEST_TIMEOUT)
            except (ChannelClosed, ProtocolError, OSError, TimeoutError):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, KILL_SIGNAL)
                forking.wait_for(pid)
                return None
            _close(fds)
            if struct.unpack_from("<I", data)[0] == _SIGNAL_TYPE:
                number = int(SIGNAL_PROCESS.parse(data).Signal)
                if 0 < number < signal.NSIG:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(pid, number)
    finally:
        os.close(pidfd)


def serve(fd: int, owner_uid: int) -> int:
    """One interop connection, in a worker forked by the monitor. Returns the worker's exit code."""
    try:
        owner = Owner(owner_uid)
        owner.become()
    except (KeyError, OSError) as error:
        log.error("interop: cannot become the VM's owner (uid %d): %s", owner_uid, error)
        os.close(fd)
        return 1
    channel = MessageChannel(socket.socket(fileno=fd), name="interop connection")
    channel.ignore_sequence_numbers()
    stdio: list[int] = []
    try:
        try:
            data, stdio = channel.receive(timeout=REQUEST_TIMEOUT, expect_fds=3)
            if struct.unpack_from("<I", data)[0] != _CREATE_TYPE:
                raise BadRequest("the first message is not LX_INIT_CREATE_NT_PROCESS_UTILITY_VM")
            program, argv, environment, cwd = validate(CREATE_NT_PROCESS.parse(data))
        except (BadRequest, ProtocolError) as error:
            log.warning("interop: refused a request: %s", error)
            with contextlib.suppress(OSError, TimeoutError):
                channel.send(
                    CREATE_PROCESS_RESPONSE,
                    Result=errno.EINVAL,
                    SignalPipeId=0,
                    Flags=0,
                    timeout=SEND_TIMEOUT,
                )
            return 1
        except (ChannelClosed, OSError, TimeoutError) as error:
            log.warning("interop: no request: %s", error)
            return 1
        pid, result = _start(program, argv, _environment(owner, environment), cwd, owner, stdio)
        _close(stdio)
        stdio = []
        try:
            channel.send(
                CREATE_PROCESS_RESPONSE, Result=result, SignalPipeId=0, Flags=0, timeout=SEND_TIMEOUT
            )
        except (OSError, TimeoutError):
            result = result or errno.EPIPE
            if pid > 0 and result == errno.EPIPE:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, KILL_SIGNAL)
                forking.wait_for(pid)
            return 1
        if result:
            return 1
        code = _follow(channel, pid)
        if code is None:
            return 1
        with contextlib.suppress(OSError, TimeoutError):
            channel.send(EXIT_STATUS, ExitCode=code, timeout=SEND_TIMEOUT)
        return 0
    finally:
        _close(stdio)
        channel.close()
