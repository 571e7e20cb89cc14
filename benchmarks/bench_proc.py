"""Process drivers for the benchmark: timed runs, pipe and terminal throughput, memory (PSS).

Both sides of every comparison go through the same driver: the command is started with
``posix_spawn`` (stdio on /dev/null, stderr captured in a memory file for the error message)
and timed from just before the spawn to the reaped exit. The pipe driver feeds a stream from a
writer thread and drains the output in the main thread; the terminal driver runs the command on
the slave side of a new PTY as its controlling terminal and reads the master, as a terminal
emulator does.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import shutil
import signal
import struct
import termios
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BenchError",
    "StreamRun",
    "descendants",
    "pipe_stream",
    "pipeline_bytes",
    "pipeline_seconds",
    "pss_bytes",
    "pty_stream",
    "run_checked",
    "shorten",
    "timed_run",
]

READ_SIZE = 1 << 20
TAIL_SIZE = 4000  # of a failed command's output, in its error message
DEFAULT_TIMEOUT = 300.0
SETUP_TIMEOUT = 600.0
_DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)


class BenchError(RuntimeError):
    """A measurement could not be taken (the command failed, the output was wrong, ...)."""


def shorten(text: str, count: int = 3) -> str:
    """A long message (a traceback) cut to its first line and its last ``count`` lines."""
    lines = text.splitlines()
    if len(lines) <= count + 1:
        return text
    return "\n    ".join([lines[0], "...", *lines[-count:]])


def _describe(argv: Sequence[str]) -> str:
    return " ".join(argv)


def _read_memfd(fd: int, limit: int = 4000) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    data = os.read(fd, 1 << 16)
    text = data.decode(errors="replace").strip()
    return text if len(text) <= limit else "..." + text[-limit:]


def _exit_code(status: int) -> int:
    return os.waitstatus_to_exitcode(status)


def resolve_program(name: str, env: Mapping[str, str]) -> str:
    """``name`` as a path, searched in the command's own PATH when it has no slash."""
    if "/" in name:
        return name
    found = shutil.which(name, path=env.get("PATH", os.defpath))
    if found is None:
        raise BenchError(f"`{name}` is not on PATH")
    return found


def _spawn(argv: Sequence[str], env: Mapping[str, str], stdin: int, stdout: int, stderr: int) -> int:
    actions = [
        (os.POSIX_SPAWN_DUP2, stdin, 0),
        (os.POSIX_SPAWN_DUP2, stdout, 1),
        (os.POSIX_SPAWN_DUP2, stderr, 2),
    ]
    return os.posix_spawn(
        resolve_program(argv[0], env), list(argv), dict(env), file_actions=actions, setsigdef=_DEFAULT_SIGNALS
    )


def _wait(pid: int, timeout: float | None) -> int | None:
    """Reap ``pid``; None (after killing it) when it outlives ``timeout`` seconds."""
    if timeout is None:
        return os.waitpid(pid, 0)[1]
    handle = os.pidfd_open(pid)
    try:
        ready, _, _ = select.select([handle], [], [], timeout)
        if not ready:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None
    finally:
        os.close(handle)
    return os.waitpid(pid, 0)[1]


def timed_run(
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    check: bool = True,
    timeout: float | None = DEFAULT_TIMEOUT,
) -> tuple[float, int, str]:
    """(seconds, exit code, stderr) of one run with stdin and stdout on /dev/null.

    A run that outlives ``timeout`` is killed and reported with exit code -1.
    """
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    errors = os.memfd_create("stderr", os.MFD_CLOEXEC)
    try:
        start = time.perf_counter()
        pid = _spawn(argv, env, null, null, errors)
        status = _wait(pid, timeout)
        elapsed = time.perf_counter() - start
        if status is None:
            code, message = -1, f"killed after {timeout:g} s"
        else:
            code = _exit_code(status)
            message = _read_memfd(errors) if code != 0 else ""
    finally:
        os.close(null)
        os.close(errors)
    if check and code != 0:
        raise BenchError(f"`{_describe(argv)}` exited with {code}: {message or '(no message)'}")
    return elapsed, code, message


def run_checked(
    argv: Sequence[str], env: Mapping[str, str], *, stdin: int | None = None, timeout: float = SETUP_TIMEOUT
) -> str:
    """Run a setup command; its stdout, or BenchError with its stderr when it fails."""
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    output = os.memfd_create("stdout", os.MFD_CLOEXEC)
    errors = os.memfd_create("stderr", os.MFD_CLOEXEC)
    try:
        pid = _spawn(argv, env, null if stdin is None else stdin, output, errors)
        status = _wait(pid, timeout)
        if status is None:
            raise BenchError(f"`{_describe(argv)}` did not finish within {timeout:g} s")
        code = _exit_code(status)
        text = _read_memfd(output, 1 << 16)
        if code != 0:
            raise BenchError(f"`{_describe(argv)}` exited with {code}: {_read_memfd(errors) or text}")
        return text
    finally:
        for fd in (null, output, errors):
            os.close(fd)


# `head -c N /dev/zero | MIDDLE... | cat >/dev/null` as a user types it in bash (pipefail: a
# failing stage fails the run), and the same with `wc -c` at the end to count what passed.
_PIPELINE = 'set -o pipefail; head -c "$1" /dev/zero | "${@:2}" | cat >/dev/null'
_COUNTED_PIPELINE = 'set -o pipefail; head -c "$1" /dev/zero | "${@:2}" | wc -c'


def pipeline_seconds(middle: Sequence[str], env: Mapping[str, str], total: int) -> float:
    """Seconds of `head -c TOTAL /dev/zero | MIDDLE | cat >/dev/null`, from start to the last exit."""
    return timed_run(["bash", "-c", _PIPELINE, "bash", str(total), *middle], env)[0]


def pipeline_bytes(middle: Sequence[str], env: Mapping[str, str], total: int) -> int:
    """How many bytes `head -c TOTAL /dev/zero | MIDDLE` passes."""
    return int(run_checked(["bash", "-c", _COUNTED_PIPELINE, "bash", str(total), *middle], env))


@dataclass(frozen=True)
class StreamRun:
    """One pass of a stream through a command."""

    total_seconds: float  # spawn to reaped exit
    stream_seconds: float  # first output byte to the end of the output
    bytes_out: int

    def steady_rate(self, payload: int) -> float:
        """``payload`` bytes per second over the streaming part."""
        return payload / self.stream_seconds if self.stream_seconds > 0 else float("inf")


def _writer(fd: int, total: int, chunk: bytes, failure: list[BaseException]) -> None:
    view = memoryview(chunk)
    remaining = total
    try:
        while remaining:
            remaining -= os.write(fd, view[: min(len(view), remaining)])
    except BaseException as error:  # reported by the reading side
        failure.append(error)
    finally:
        os.close(fd)


def _drain(fd: int, buffer: bytearray) -> tuple[float | None, float, int]:
    """Read ``fd`` to its end: (time of the first byte, time of the end, byte count).

    On return ``buffer`` holds the output's last ``TAIL_SIZE`` bytes at most (for an error
    message: a terminal writes a line's end apart from its text, so the last read alone may be
    just ``\\r\\n``).
    """
    first: float | None = None
    count = 0
    tail = b""
    views = [buffer]
    while True:
        try:
            size = os.readv(fd, views)
        except OSError as error:
            if error.errno == errno.EIO:  # a PTY master whose slave side closed
                break
            raise
        if size == 0:
            break
        if first is None:
            first = time.perf_counter()
        count += size
        if size >= TAIL_SIZE:
            tail = bytes(buffer[size - TAIL_SIZE : size])
        else:
            tail = (tail + buffer[:size])[-TAIL_SIZE:]
    buffer[:] = tail
    return first, time.perf_counter(), count


def pipe_stream(
    argv: Sequence[str], env: Mapping[str, str], total: int, *, chunk_size: int = READ_SIZE
) -> StreamRun:
    """Write ``total`` zero bytes into ``argv``'s stdin pipe and read its stdout pipe to the end."""
    in_read, in_write = os.pipe2(os.O_CLOEXEC)
    out_read, out_write = os.pipe2(os.O_CLOEXEC)
    errors = os.memfd_create("stderr", os.MFD_CLOEXEC)
    failure: list[BaseException] = []
    buffer = bytearray(READ_SIZE)
    chunk = bytes(chunk_size)
    try:
        start = time.perf_counter()
        pid = _spawn(argv, env, in_read, out_write, errors)
        os.close(in_read)
        os.close(out_write)
        in_read = out_write = -1
        writer = threading.Thread(target=_writer, args=(in_write, total, chunk, failure), daemon=True)
        in_write = -1  # the writer closes it
        writer.start()
        first, end, count = _drain(out_read, buffer)
        _, status = os.waitpid(pid, 0)
        finished = time.perf_counter()
        writer.join()
        code = _exit_code(status)
        if code != 0:
            message = _read_memfd(errors) or "(no message)"
            raise BenchError(f"`{_describe(argv)}` exited with {code}: {message}")
        if failure:
            raise BenchError(f"writing to `{_describe(argv)}` failed: {failure[0]}")
        if count != total:
            raise BenchError(f"`{_describe(argv)}` passed {count} of {total} bytes")
    finally:
        for fd in (in_read, in_write, out_read, out_write, errors):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
    return StreamRun(finished - start, end - (first if first is not None else end), count)


def _set_window(fd: int, rows: int, columns: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


def pty_stream(argv: Sequence[str], env: Mapping[str, str], expected: int) -> StreamRun:
    """Run ``argv`` in a new session on a PTY and read the master until the slave side closes.

    ``expected`` is the least the output must amount to (a terminal may add carriage returns).
    """
    master, slave = os.openpty()
    _set_window(slave, 50, 200)
    buffer = bytearray(READ_SIZE)
    environment = dict(env)
    program = resolve_program(argv[0], env)
    try:
        start = time.perf_counter()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child execs or exits
            try:
                os.close(master)
                os.login_tty(slave)
                for number in _DEFAULT_SIGNALS:
                    signal.signal(number, signal.SIG_DFL)
                os.execve(program, list(argv), environment)
            finally:
                os._exit(127)
        os.close(slave)
        slave = -1
        first, end, count = _drain(master, buffer)
        _, status = os.waitpid(pid, 0)
        finished = time.perf_counter()
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    code = _exit_code(status)
    if code != 0:
        output = buffer.decode(errors="replace").strip()
        raise BenchError(f"`{_describe(argv)}` in a terminal exited with {code}: {output or '(no output)'}")
    if count < expected:
        raise BenchError(f"`{_describe(argv)}` in a terminal printed {count} of {expected} bytes")
    return StreamRun(finished - start, end - (first if first is not None else end), count)


def _parents() -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                text = Path(f"/proc/{entry}/stat").read_text()
                parents[int(entry)] = int(text.rpartition(")")[2].split()[1])
    return parents


def descendants(roots: Iterable[int]) -> set[int]:
    """The live processes among ``roots`` and every process below them."""
    parents = _parents()
    found = {pid for pid in roots if pid in parents}
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    pending = list(found)
    while pending:
        for child in children.get(pending.pop(), []):
            if child not in found:
                found.add(child)
                pending.append(child)
    return found


def pss_bytes(pid: int) -> int | None:
    """The proportional set size of ``pid`` (None when it has gone)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return None


def process_name(pid: int) -> str:
    """A short name for a process: its ``comm`` (the name a pywsl process gives itself)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"
