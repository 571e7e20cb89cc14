"""``[automount] mountFsTab``: the distribution's ``/etc/fstab``, mounted at start with ``mount -a``.

WSL's init runs ``mount -a`` in the distribution once its own filesystems are mounted and before
``[boot] command``; a failure is a warning, never a failed start. pywsl's init does the same, in
the distribution's mount namespace after ``pivot_root``, with the distribution's own ``mount``,
and bounds the wait (a mount that hangs is killed and named in the warning). A file without any
entry (only comments and empty lines) gives ``mount -a`` nothing to do: it is not run then.
"""

from __future__ import annotations

import os
import select
import stat
import time

from pywsl.guest import forking
from pywsl.guest import lean_signal as signal
from pywsl.lean_context import suppress

FSTAB_PATH = "/etc/fstab"
MOUNT_PROGRAMS = ("/bin/mount", "/usr/bin/mount", "/sbin/mount")
MOUNT_TIMEOUT = 10.0
MAX_OUTPUT = 4096
MAX_UNCONFIGURED_SIZE = 64 * 1024  # a larger file is left to mount to read
ENVIRONMENT = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root"}


def _mount_program() -> str | None:
    for path in MOUNT_PROGRAMS:
        if os.access(path, os.X_OK):
            return path
    return None


def _without_entries() -> bool:
    """Is ``/etc/fstab`` sure to hold no entry, so that ``mount -a`` would do nothing? Only a
    regular file (not a link: mount would follow it inside the distribution), readable, of at
    most :data:`MAX_UNCONFIGURED_SIZE` bytes, whose every line is empty or a comment (``#`` after
    spaces and tabs), as Debian's ``# UNCONFIGURED FSTAB FOR BASE SYSTEM``; anything else is
    left to ``mount -a``."""
    try:
        fd = os.open(FSTAB_PATH, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_UNCONFIGURED_SIZE:
            return False
        data = os.read(fd, MAX_UNCONFIGURED_SIZE + 1)
    except OSError:
        return False
    finally:
        os.close(fd)
    if len(data) != info.st_size:  # read short, or changed meanwhile
        return False
    return all(line.lstrip(b" \t")[:1] in (b"", b"#") for line in data.split(b"\n"))


def _collect(read_fd: int, pid: int, timeout: float) -> tuple[bytes, int | None]:
    """The child's output (bounded) and its exit code; None when it was killed after ``timeout``."""
    output = bytearray()
    deadline = time.monotonic() + timeout
    open_pipe = True
    while open_pipe:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            forking.wait_for(pid)
            return bytes(output), None
        ready, _, _ = select.select([read_fd], [], [], remaining)
        if ready:
            chunk = os.read(read_fd, 4096)
            if not chunk:
                open_pipe = False
            elif len(output) < MAX_OUTPUT:
                output += chunk[: MAX_OUTPUT - len(output)]
    return bytes(output), forking.wait_for(pid)


def mount_all(timeout: float = MOUNT_TIMEOUT) -> list[str]:
    """Run ``mount -a`` in the distribution (the caller's root); the warnings it gave, if any."""
    if not os.path.lexists(FSTAB_PATH):
        return []
    program = _mount_program()
    if program is None:
        return [f"{FSTAB_PATH} is not mounted: the distribution has no mount program"]
    if _without_entries():
        return []  # mount -a would do nothing: the fork, exec and wait are saved
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.fork()
    except OSError as error:
        os.close(read_fd)
        os.close(write_fd)
        return [f"Processing {FSTAB_PATH} with mount -a failed: {error.strerror or error}"]
    if pid == 0:
        try:
            forking.become_child([write_fd])
            null = os.open("/dev/null", os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(write_fd, 1)
            os.dup2(write_fd, 2)
            os.chdir("/")
            os.execve(program, ["mount", "-a"], ENVIRONMENT)
        except OSError:
            pass
        forking.exit_now(127)
    os.close(write_fd)
    try:
        output, code = _collect(read_fd, pid, timeout)
    finally:
        os.close(read_fd)
    if code == 0:
        return []
    text = output.decode("utf-8", "replace").strip()
    reason = f"did not finish within {timeout:g} s" if code is None else f"exit status {code}"
    detail = f": {text}" if text else ""
    return [f"Processing {FSTAB_PATH} with mount -a failed ({reason}){detail}"]
