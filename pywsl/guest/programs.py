"""A program run to its end from the VM's processes: what ``subprocess.run`` does for the few
tools the guest calls (``mkfs.ext4``, ``blkid``, ``systemctl``), without loading ``subprocess``
(with ``locale`` and ``threading``) into every VM's start, where the guest's modules must be
loaded before the VM's namespaces exist.

The program starts with ``posix_spawn`` (an exec failure is this process's ``OSError``), its
stdin on ``/dev/null``; its output is captured, or goes to a descriptor or ``/dev/null``; it
inherits only the descriptors named. A timeout kills it and raises ``TimeoutError``.
"""

from __future__ import annotations

import os
import select
import time

from pywsl.guest import lean_signal as signal

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["CAPTURE", "DEVNULL", "STDOUT", "Finished", "run"]

CAPTURE = -1  # into `Finished.output` (stdout) or `Finished.errors` (stderr)
DEVNULL = -2
STDOUT = -3  # stderr only: where stdout goes
_READ_SIZE = 65536


class Finished:
    """A program's exit status (as ``subprocess``'s ``returncode``: -N for signal N) and output."""

    __slots__ = ("errors", "output", "returncode")

    def __init__(self, returncode: int, output: bytes, errors: bytes) -> None:
        self.returncode = returncode
        self.output = output
        self.errors = errors


def run(
    argv: Sequence[str],
    env: dict[str, str],
    *,
    stdout: int = CAPTURE,
    stderr: int = CAPTURE,
    pass_fds: Sequence[int] = (),
    timeout: float | None = None,
) -> Finished:
    """Run ``argv`` (``argv[0]`` a path) to its end; ``stdout``: CAPTURE, DEVNULL or a
    descriptor; ``stderr``: CAPTURE, DEVNULL, STDOUT or a descriptor."""
    captured: dict[int, int] = {}  # 1 or 2 -> the read end of its pipe
    readers: dict[int, list[bytes]] = {}
    actions: list[tuple[int, ...] | tuple[int, int, str, int, int]] = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)
    ]
    ends: list[int] = []
    try:
        for target, where in ((1, stdout), (2, stderr)):
            if where == STDOUT:
                actions.append((os.POSIX_SPAWN_DUP2, 1, 2))
            elif where == DEVNULL:
                actions.append((os.POSIX_SPAWN_OPEN, target, os.devnull, os.O_WRONLY, 0))
            elif where == CAPTURE:
                read_end, write_end = os.pipe()
                ends.append(write_end)
                captured[target] = read_end
                readers[read_end] = []
                actions.append((os.POSIX_SPAWN_DUP2, write_end, target))
            else:
                actions.append((os.POSIX_SPAWN_DUP2, where, target))
        pid = _spawn(argv, env, actions, pass_fds)
    except BaseException:
        for fd in [*ends, *readers]:
            os.close(fd)
        raise
    for fd in ends:
        os.close(fd)
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        _read_all(readers, deadline)
    except BaseException:  # the timeout, or a failed read: the program is not left behind
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    finally:
        for fd in readers:
            os.close(fd)
    status = _wait(pid, deadline)
    output, errors = (b"".join(readers[captured[target]]) if target in captured else b"" for target in (1, 2))
    return Finished(os.waitstatus_to_exitcode(status), output, errors)


def _spawn(
    argv: Sequence[str],
    env: dict[str, str],
    actions: list[tuple[int, ...] | tuple[int, int, str, int, int]],
    pass_fds: Sequence[int],
) -> int:
    """posix_spawn with `pass_fds` inheritable for the moment (the guest's descriptors are not)."""
    previous = [os.get_inheritable(fd) for fd in pass_fds]
    try:
        for fd in pass_fds:
            os.set_inheritable(fd, True)
        return os.posix_spawn(argv[0], list(argv), env, file_actions=actions)
    finally:
        for fd, inheritable in zip(pass_fds, previous, strict=True):
            os.set_inheritable(fd, inheritable)


def _read_all(readers: dict[int, list[bytes]], deadline: float | None) -> None:
    """Read every pipe in `readers` to its end (TimeoutError past `deadline`)."""
    open_ends = list(readers)
    while open_ends:
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise TimeoutError("the program did not finish in time")
        ready, _, _ = select.select(open_ends, [], [], remaining)
        for fd in ready:
            chunk = os.read(fd, _READ_SIZE)
            if chunk:
                readers[fd].append(chunk)
            else:
                open_ends.remove(fd)


def _wait(pid: int, deadline: float | None) -> int:
    """The wait status of `pid` (killed, then waited for, past `deadline`: TimeoutError)."""
    while True:
        done, status = os.waitpid(pid, 0 if deadline is None else os.WNOHANG)
        if done:
            return status
        if deadline is not None and time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise TimeoutError("the program did not finish in time")
        time.sleep(0.002)
