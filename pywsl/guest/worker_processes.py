"""The programs an import/export worker runs, and the watch it keeps over them until tar is done.

The worker runs GNU tar, and for a compressed import the decompressor in front of it (what tar's
own ``--gzip`` would start, but as the worker's child, so that the worker decides when it ends).
While tar runs, `watch_tar`:

* forwards tar's diagnostics to the host's stderr pipe and looks for "No space left on device"
  or "Disk quota exceeded" in them, or for a failed or short write while the target's
  filesystem has (next to) no free blocks or inodes left (`target_full`): tar is then stopped at
  once (it would otherwise read the rest of the archive and fail on every member) and the
  outcome says the disk is full;
* watches the result channel: the host closing it (the client went away, the operation was
  cancelled, the VM's owner gave up) stops tar at once.

tar's end of archive ends an import: after tar, the decompressor gets `DECOMPRESSOR_GRACE`
seconds to finish, then it is stopped; data after the archive (a pipe that keeps sending) is
never waited for.

An import's stream reaches tar through `start_device_filter` (``tar_device_filter``: device nodes
cannot be made in the VM's user namespace and are left out), which tells how many it left out
on a report pipe before it hands on the end of the archive.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import struct

from pywsl.guest import forking, mounts
from pywsl.guest import lean_signal as signal
from pywsl.guest.tar_device_filter import DeviceNodeFilter, Piece
from pywsl.lean_context import suppress

TYPE_CHECKING = False  # the type checker sees dataclasses; `records` gives the same classes cheaply
if TYPE_CHECKING:
    from dataclasses import dataclass
else:
    from pywsl.records import dataclass

PROGRAM_FOLDERS = ("/usr/bin", "/bin", "/usr/sbin", "/sbin")
PROGRAM_ENVIRONMENT = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
# How long the decompressor may run on once tar has read the end of the archive.
DECOMPRESSOR_GRACE = 3.0
# (program, arguments, exit statuses that are not an error: gzip and xz warn with 2)
DECOMPRESSORS = {
    "gzip": (("gzip", "-d", "-c"), frozenset({0, 2})),
    "xz": (("xz", "-d", "-c"), frozenset({0, 2})),
    "bzip2": (("bzip2", "-d", "-c"), frozenset({0})),
    "zstd": (("zstd", "-d", "-c", "-q"), frozenset({0})),
}
# What tar prints (LC_ALL=C) when the target filesystem is full, and the errno it stands for.
FULL_DISK_MESSAGES = ((b"No space left on device", errno.ENOSPC), (b"Disk quota exceeded", errno.EDQUOT))
# tar's words for a write that failed or stopped short: the filesystem is then looked at.
WRITE_FAILURES = (b"Wrote only", b"Cannot write", b"Cannot open", b"Cannot mkdir", b"Cannot create")
# Less free space than this (bytes) on the target counts as a full disk.
FULL_DISK_MARGIN = 64 * 1024
_HOST_GONE = select.POLLIN | select.POLLHUP | select.POLLERR | select.POLLRDHUP
_CHUNK = 65536
_LINE_CARRY = 4096  # the most of an unfinished diagnostics line kept for the next look
# The device filter's reads, and the size it asks for the pipe to tar (bytes).
FILTER_CHUNK = 1 << 20
_SKIPPED_REPORT = struct.Struct("<Q")


def find_program(name: str) -> str:
    """The path of ``name`` in the worker's root (the first folder when it is nowhere)."""
    for folder in PROGRAM_FOLDERS:
        path = f"{folder}/{name}"
        if os.path.exists(path):
            return path
    return f"{PROGRAM_FOLDERS[0]}/{name}"


def spawn(argv: list[str], stdin: int, stdout: int, stderr: int) -> int:
    """Start ``argv`` (its program looked up with `find_program`) in the target folder with the
    given stdio; SIGPIPE has its default action in it, as in a shell pipeline."""
    program = find_program(argv[0])
    pid = os.fork()
    if pid == 0:
        try:
            copies = [os.dup(fd) for fd in (stdin, stdout, stderr)]
            for source, target in zip(copies, (0, 1, 2), strict=True):
                os.dup2(source, target)
            forking.close_other_fds([])
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)
            os.chdir(mounts.WORKER_TARGET)
            os.execve(program, argv, PROGRAM_ENVIRONMENT)
        except OSError as error:
            with suppress(OSError):
                os.write(2, f"pywsl: cannot run {program}: {error.strerror}\n".encode())
        forking.exit_now(127)
    return pid


def stop(pid: int) -> None:
    """SIGKILL ``pid`` (a child of this process) and reap it."""
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    forking.wait_for(pid)


def target_full() -> int:
    """ENOSPC when the worker's target filesystem has no room left (blocks or inodes), else 0."""
    try:
        info = os.statvfs(mounts.WORKER_TARGET)
    except OSError:
        return 0
    if info.f_bavail * info.f_frsize < FULL_DISK_MARGIN or (info.f_files and not info.f_favail):
        return errno.ENOSPC
    return 0


def host_gone(channel_fd: int) -> bool:
    """Whether the host closed the result channel (it sends nothing while the worker runs)."""
    ready = select.poll()
    ready.register(channel_fd, _HOST_GONE)
    return bool(ready.poll(0))


@dataclass(frozen=True)
class TarOutcome:
    status: int  # tar's exit code (128 + signal when it was stopped)
    full_disk: int  # 0, or ENOSPC / EDQUOT when tar said so
    host_gone: bool  # the host closed the result channel: nothing more is sent


class _Diagnostics:
    """tar's stderr: forwarded to the host, and looked through for a full disk."""

    def __init__(self, read_fd: int, forward_fd: int, check_target: bool) -> None:
        self.read_fd, self.forward_fd, self.check_target = read_fd, forward_fd, check_target
        self.full_disk = 0
        self._carry = b""
        os.set_blocking(read_fd, False)

    def pump(self) -> bool:
        """Move what is there; False at the end (every writer closed it)."""
        while True:
            try:
                chunk = os.read(self.read_fd, _CHUNK)
            except BlockingIOError:
                return True
            if not chunk:
                return False
            with suppress(OSError):
                forking.write_all(self.forward_fd, chunk)
            # Whole lines only: tar writes one message in pieces ("...: Cannot open", then
            # ": No space left on device\n"), and tar is stopped once the disk is found full.
            seen = self._carry + chunk
            lines_end = seen.rfind(b"\n") + 1
            lines = seen[:lines_end]
            for message, code in FULL_DISK_MESSAGES:
                if not self.full_disk and message in lines:
                    self.full_disk = code
            failed_write = any(failure in lines for failure in WRITE_FAILURES)
            if self.check_target and not self.full_disk and failed_write:
                self.full_disk = target_full()
            self._carry = seen[lines_end:][-_LINE_CARRY:]


def watch_tar(
    pid: int, diagnostics_fd: int, stderr_fd: int, channel_fd: int, *, writes_target: bool
) -> TarOutcome:
    """Wait for tar (``pid``) while forwarding its diagnostics (``diagnostics_fd``, the read end of
    its stderr, closed here) to ``stderr_fd`` and watching the host's end of ``channel_fd``.
    ``writes_target``: tar extracts into the target (its free space tells a full disk)."""
    diagnostics = _Diagnostics(diagnostics_fd, stderr_fd, writes_target)
    exited = os.pidfd_open(pid)
    gone = False
    try:
        ready = select.poll()
        ready.register(exited, select.POLLIN)
        ready.register(diagnostics_fd, select.POLLIN)
        ready.register(channel_fd, _HOST_GONE)
        open_diagnostics = True
        while True:
            events = dict(ready.poll())
            if diagnostics_fd in events and open_diagnostics and not diagnostics.pump():
                ready.unregister(diagnostics_fd)
                open_diagnostics = False
            if channel_fd in events:
                gone = True
                ready.unregister(channel_fd)
            if gone or diagnostics.full_disk:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if exited in events:
                break
        if open_diagnostics:
            diagnostics.pump()
    finally:
        os.close(exited)
        os.close(diagnostics_fd)
    return TarOutcome(status=forking.wait_for(pid), full_disk=diagnostics.full_disk, host_gone=gone)


def finish_decompressor(pid: int, accepted: frozenset[int], tar_status: int, channel_fd: int) -> int:
    """End the decompressor once tar is done; its exit code if that is an error, else 0.

    After a successful tar it gets `DECOMPRESSOR_GRACE` seconds to finish what follows the
    archive (a checksum); one still reading then (data after the archive) is stopped, and so is
    one behind a failed tar or after the host went away. SIGPIPE (tar closed its end) is fine.
    """
    if tar_status != 0 or host_gone(channel_fd):
        stop(pid)
        return 0
    exited = os.pidfd_open(pid)
    try:
        ready = select.poll()
        ready.register(exited, select.POLLIN)
        finished = bool(ready.poll(int(DECOMPRESSOR_GRACE * 1000)))
    finally:
        os.close(exited)
    if not finished:
        stop(pid)
        return 0
    code = forking.wait_for(pid)
    return 0 if code in accepted or code == 128 + signal.SIGPIPE else code


@dataclass(frozen=True)
class DeviceFilter:
    """A running `start_device_filter`: tar's stdin (``output_fd``), the process, its report."""

    output_fd: int
    pid: int
    report_fd: int

    def skipped(self) -> int | None:
        """How many device nodes it left out, once it handed on the end of the archive (or of the
        stream); None before (after a tar that succeeded: the filter failed, the import is cut)."""
        os.set_blocking(self.report_fd, False)
        try:
            report = os.read(self.report_fd, _SKIPPED_REPORT.size)
        except BlockingIOError:
            return None
        return int(_SKIPPED_REPORT.unpack(report)[0]) if len(report) == _SKIPPED_REPORT.size else None

    def close(self) -> None:
        """Stop the process; close the report (``output_fd`` is the caller's to close)."""
        stop(self.pid)
        os.close(self.report_fd)


def start_device_filter(source: int) -> DeviceFilter:
    """A child that hands the tar stream from ``source`` on without its device nodes."""
    output, output_write = os.pipe()
    report, report_write = os.pipe()
    with suppress(OSError):
        fcntl.fcntl(output_write, fcntl.F_SETPIPE_SZ, FILTER_CHUNK)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            forking.become_child([2, source, output_write, report_write])
            _filter_devices(source, output_write, report_write)
            code = 0
        except OSError as error:
            code = 0 if error.errno == errno.EPIPE else 1  # EPIPE: tar is done
        except BaseException:  # never back into the worker's code in this process
            code = 1
        forking.exit_now(code)
    os.close(output_write)
    os.close(report_write)
    return DeviceFilter(output_fd=output, pid=pid, report_fd=report)


def _write_pieces(fd: int, pieces: list[Piece]) -> None:
    for piece in pieces:
        view = memoryview(piece)
        while view:
            view = view[os.write(fd, view) :]


def _filter_devices(source: int, output: int, report: int) -> None:
    """The filter's loop: the count goes on the report before the end of the archive goes to tar
    (tar cannot have finished without it)."""
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    nodes = DeviceNodeFilter()
    reported = False
    while True:
        chunk = os.read(source, FILTER_CHUNK)
        pieces = nodes.feed(chunk) if chunk else nodes.finish()
        if not nodes.filtering and not reported:
            os.write(report, _SKIPPED_REPORT.pack(nodes.skipped))
            reported = True
        _write_pieces(output, pieces)
        if not chunk:
            return
