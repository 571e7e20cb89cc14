"""The import/export worker: ``tar`` inside the target's own namespaces (WSL's bsdtar in the VM).

WSL runs ``bsdtar -x`` / ``bsdtar -c`` in the utility VM against the distribution's disk. pywsl's
mini_init forks this worker for ``Import`` and ``Export``. The worker enters a new mount namespace
whose root is a private tmpfs holding only the VM's programs (read-only) and the target at
``/target``, ``pivot_root``s into it and runs GNU tar there, so an archive can never write outside
the distribution's root filesystem, whatever its member names or links say.

Import: the compression is detected from the archive's first bytes (gzip, xz, bzip2, zstd) and the
decompressor runs in front of tar; a non-seekable source is read ahead and the rest relayed
(``splice``). Device nodes are left out of the stream before tar (``tar_device_filter``: they
cannot be made in the VM's user namespace, and ``/dev`` is a fresh tmpfs when a distribution
runs). tar's end of archive ends the import (``worker_processes``: what follows is not
waited for), a full disk stops tar at once and is reported as ``-ENOSPC`` (or ``-EDQUOT``) in
``ImportResult.Result`` (tar's exit status otherwise), and the host closing the result channel
stops everything. Then the result: ``PYWSL_IMPORT_WARNINGS`` when device nodes were left out (how
many), and ``ImportResult`` with ValidDistribution (``/etc`` or ``/bin/sh`` exists), Flavor and
Version (os-release) and DefaultName (``/etc/wsl-distribution.conf``), all looked up inside the
tree. Export: ``--one-file-system --sparse --xattrs --numeric-owner``
(sparse files stay sparse; tar restores them so on import), ``-z`` or ``xz -T0`` (every core),
then tar's exit status as a raw int32 on the result channel, as WSL does (``-ENOSPC`` when the
output's disk filled). tar's diagnostics go to the stderr fd.
"""

from __future__ import annotations

import errno
import os
import select
import struct

from pywsl.guest import forking, guest_log, mounts, rootfs, syscalls, worker_processes
from pywsl.guest import lean_signal as signal
from pywsl.guest.os_release import default_name, flavor_and_version
from pywsl.guest.tar_device_filter import skipped_devices_warning
from pywsl.lean_context import suppress
from pywsl.wire import unix_sockets as socket
from pywsl.wire.channel import MessageChannel
from pywsl.wire.launch_codec import CREATE_INSTANCE_RESULT, IMPORT_RESULT, IMPORT_WARNINGS
from pywsl.wire.message_types import CreateInstanceStep, MiniInitMessageFlags

TYPE_CHECKING = False  # the type checker sees dataclasses; `records` gives the same classes cheaply
if TYPE_CHECKING:
    from dataclasses import dataclass
else:
    from pywsl.records import dataclass

log = guest_log.getLogger("pywsl.tar")

STEP_RUN_TAR = CreateInstanceStep.LxInitCreateInstanceStepRunTar
FLAGS = MiniInitMessageFlags  # the enum's values as plain numbers
SEND_TIMEOUT = 30.0
# xz compresses with one thread per core (tar splits the words and runs it without a shell).
XZ_EVERY_CORE = "--use-compress-program=xz -T0"
MAGIC_LENGTH = 6
# (leading bytes, decompressor in worker_processes.DECOMPRESSORS)
COMPRESSION_MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"BZh", "bzip2"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)
EXTRACT_OPTIONS = (
    "-x",
    "--preserve-permissions",
    "--same-owner",
    "--numeric-owner",
    "--xattrs",
    "--xattrs-include=*",
    "--no-overwrite-dir",
)
CREATE_OPTIONS = ("-c", "--one-file-system", "--sparse", "--xattrs", "--xattrs-include=*", "--numeric-owner")


class HostGone(Exception):
    """The host closed the result channel: stop, send nothing."""


@dataclass(frozen=True)
class TarJob:
    """The descriptors mini_init hands a worker: ``Import``/``Export`` fds, in that order."""

    tree_fd: int  # the target directory, a detached mount tree
    result_fd: int  # the result channel end
    data_fd: int  # archive to read (import) or output to write (export)
    stderr_fd: int
    flags: int
    extract: bool = True  # False: validate a root filesystem already there (ImportInplace)


def compression_of(head: bytes) -> str | None:
    """The compression of an archive starting with ``head`` (None: plain tar)."""
    for magic, name in COMPRESSION_MAGIC:
        if head.startswith(magic):
            return name
    return None


def compression_option(head: bytes) -> str | None:
    """GNU tar's option for that compression (``--gzip``, ...), None for plain tar."""
    name = compression_of(head)
    return None if name is None else f"--{name}"


def _wait_readable(fd: int, channel_fd: int) -> None:
    """Block until ``fd`` has data (or its end); HostGone when the host closes the channel first."""
    ready = select.poll()
    ready.register(fd, select.POLLIN)
    ready.register(channel_fd, select.POLLIN | select.POLLHUP | select.POLLRDHUP)
    while True:
        events = dict(ready.poll())
        if channel_fd in events:
            raise HostGone()
        if fd in events:
            return


def _read_head(fd: int, channel_fd: int) -> tuple[bytes, bool]:
    """The archive's first bytes and whether they were consumed (a pipe) or peeked (seekable)."""
    try:
        position = os.lseek(fd, 0, os.SEEK_CUR)
    except OSError:
        position = -1
    if position >= 0:
        return os.pread(fd, MAGIC_LENGTH, position), False
    head = b""
    while len(head) < MAGIC_LENGTH:
        _wait_readable(fd, channel_fd)
        chunk = os.read(fd, MAGIC_LENGTH - len(head))
        if not chunk:
            break
        head += chunk
    return head, True


def _relay(head: bytes, source: int) -> tuple[int, int]:
    """A pipe that yields ``head`` and then everything left in ``source`` (a forked relay): the
    read end and the relay's pid."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        forking.become_child([2, source, write_end])
        code = 0
        try:
            forking.write_all(write_end, head)
            while True:
                try:
                    moved = os.splice(source, write_end, 1 << 20)
                except OSError as error:
                    if error.errno not in (errno.EINVAL, errno.ENOSYS):
                        raise
                    chunk = os.read(source, 1 << 16)
                    if chunk:
                        forking.write_all(write_end, chunk)
                    moved = len(chunk)
                if moved == 0:
                    break
        except OSError as error:
            if error.errno != errno.EPIPE:
                code = 1
        forking.exit_now(code)
    os.close(write_end)
    return read_end, pid


def _enter(job: TarJob, read_only: bool) -> MessageChannel:
    """Build the worker's root, pivot into it and greet the host; on failure report and exit."""
    channel = MessageChannel(socket.socket(fileno=job.result_fd), name="import/export channel")
    try:
        syscalls.unshare(syscalls.CLONE_NEWNS)
        mounts.make_private()
        root = mounts.mount_tmpfs_root()
        mounts.apply_plan(root, mounts.worker_plan(read_only), {"target": job.tree_fd})
        mounts.pivot_into(root)
        os.close(root)
        os.close(job.tree_fd)
    except OSError as error:
        log.error("cannot prepare the import/export worker: %s", error)
        with suppress(OSError, TimeoutError):
            channel.send(
                CREATE_INSTANCE_RESULT,
                Result=error.errno or errno.EIO,
                FailureStep=STEP_RUN_TAR,
                Pid=0,
                ConnectPort=0,
                Warnings=None,
                timeout=SEND_TIMEOUT,
            )
        forking.exit_now(1)
    channel.send(
        CREATE_INSTANCE_RESULT,
        Result=0,
        FailureStep=0,
        Pid=os.getpid(),
        ConnectPort=0,
        Warnings=None,
        timeout=SEND_TIMEOUT,
    )
    return channel


def _verbose(job: TarJob) -> list[str]:
    return ["-v"] if job.flags & FLAGS.LxMiniInitMessageFlagVerbose else []


def _run_tar(
    job: TarJob, arguments: list[str], stdin: int, stdout: int | None
) -> worker_processes.TarOutcome:
    """tar with ``arguments``; its diagnostics (and stdout when ``stdout`` is None) watched on the
    way to the host's stderr."""
    diagnostics, diagnostics_write = os.pipe()
    try:
        pid = worker_processes.spawn(
            ["tar", *arguments], stdin, diagnostics_write if stdout is None else stdout, diagnostics_write
        )
    except BaseException:
        os.close(diagnostics)
        raise
    finally:
        os.close(diagnostics_write)
    return worker_processes.watch_tar(
        pid, diagnostics, job.stderr_fd, job.result_fd, writes_target=stdout is None
    )


def _result(outcome: worker_processes.TarOutcome, other_failure: int = 0) -> int:
    """What the host gets: -errno for a full disk, else tar's status (or the decompressor's)."""
    if outcome.full_disk:
        return -outcome.full_disk
    return outcome.status or other_failure


def _extract(job: TarJob) -> tuple[int, int]:
    """The extraction itself: the status `_result` gives, and how many device nodes were left
    out. HostGone when the host went away."""
    head, consumed = _read_head(job.data_fd, job.result_fd)
    helpers: list[int] = []
    source = job.data_fd
    devices: worker_processes.DeviceFilter | None = None
    try:
        if consumed:
            source, relay = _relay(head, job.data_fd)
            helpers.append(relay)
        source, decompressor, accepted = _decompressed(job, head, source)
        devices = worker_processes.start_device_filter(source)
        if source != job.data_fd:
            os.close(source)
        source = devices.output_fd
        arguments = [*EXTRACT_OPTIONS, *_verbose(job), "-f", "-"]
        outcome = _run_tar(job, arguments, source, None)
        if source != job.data_fd:
            os.close(source)
            source = job.data_fd
        return _extract_status(job, outcome, decompressor, accepted, devices)
    finally:
        if source != job.data_fd:
            os.close(source)
        if devices is not None:
            devices.close()
        for pid in helpers:
            worker_processes.stop(pid)


def _decompressed(job: TarJob, head: bytes, source: int) -> tuple[int, int, frozenset[int]]:
    """Where the plain archive comes from: ``source`` itself, or the output of the decompressor
    ``head`` calls for (``source`` is then closed unless it is the job's own); with the
    decompressor's pid (-1 for none) and the exit statuses it may end with."""
    compression = compression_of(head)
    if compression is None:
        return source, -1, frozenset({0})
    argv, accepted = worker_processes.DECOMPRESSORS[compression]
    plain, plain_write = os.pipe()
    try:
        decompressor = worker_processes.spawn(list(argv), source, plain_write, job.stderr_fd)
    except BaseException:
        os.close(plain)
        raise
    finally:
        os.close(plain_write)
    if source != job.data_fd:
        os.close(source)
    return plain, decompressor, accepted


def _extract_status(
    job: TarJob,
    outcome: worker_processes.TarOutcome,
    decompressor: int,
    accepted: frozenset[int],
    devices: worker_processes.DeviceFilter,
) -> tuple[int, int]:
    """The extraction's status and skipped device count, once tar has ended: the decompressor
    (-1 for none) is waited for; HostGone when the host went away."""
    failure = 0
    if decompressor > 0:
        failure = worker_processes.finish_decompressor(decompressor, accepted, outcome.status, job.result_fd)
    if outcome.host_gone or worker_processes.host_gone(job.result_fd):
        raise HostGone()
    status, skipped = _result(outcome, failure), devices.skipped()
    if status == 0 and skipped is None:
        log.error("the device node filter stopped before the end of the archive")
        status = -errno.EIO
    return status, skipped or 0


def run_import(job: TarJob) -> None:
    """Extract the archive into the target and send ``ImportResult``. Never returns."""
    syscalls.set_process_name("import")
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    code = 1
    try:
        channel = _enter(job, read_only=False)
        status, skipped = _extract(job) if job.extract else (0, 0)
        os.close(job.data_fd)
        root = os.open(mounts.WORKER_TARGET, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        valid = rootfs.exists_in_root(root, "/etc") or rootfs.exists_in_root(root, "/bin/sh")
        flavor, version = flavor_and_version(root)
        name = default_name(root)
        os.close(root)
        if skipped:  # right before the result: the host waits for that one next
            channel.send(IMPORT_WARNINGS, Warnings=skipped_devices_warning(skipped), timeout=SEND_TIMEOUT)
        channel.send(
            IMPORT_RESULT,
            Result=status,
            ValidDistribution=valid,
            Flavor=flavor,
            Version=version,
            DefaultName=name,
            ShortcutIcon=None,
            TerminalProfile=None,
            GenerateTerminalProfile=False,
            GenerateShortcut=False,
            timeout=SEND_TIMEOUT,
        )
        code = 0 if status == 0 else 1
    except HostGone:
        log.info("import cancelled: the host closed the channel")
    except Exception:
        log.exception("import failed")
    forking.exit_now(code)


def run_export(job: TarJob) -> None:
    """Write the target as a tar stream to the output, then tar's status as a raw int32. Never returns."""
    syscalls.set_process_name("export")
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    code = 1
    try:
        channel = _enter(job, read_only=True)
        compression: list[str] = []
        if job.flags & FLAGS.LxMiniInitMessageFlagExportCompressGzip:
            compression = ["--gzip"]
        elif job.flags & FLAGS.LxMiniInitMessageFlagExportCompressXzip:
            compression = [XZ_EVERY_CORE]
        null = os.open("/dev/null", os.O_RDONLY)
        arguments = [*CREATE_OPTIONS, *_verbose(job), *compression, "-f", "-", "."]
        try:
            outcome = _run_tar(job, arguments, null, job.data_fd)
        finally:
            os.close(null)
        os.close(job.data_fd)
        if outcome.host_gone:
            raise HostGone()
        status = _result(outcome)
        channel.send_raw(struct.pack("<i", status), timeout=SEND_TIMEOUT)
        code = 0 if status == 0 else 1
    except HostGone:
        log.info("export cancelled: the host closed the channel")
    except Exception:
        log.exception("export failed")
    forking.exit_now(code)
