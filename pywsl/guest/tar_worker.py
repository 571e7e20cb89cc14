"""The import/export worker: ``tar`` inside the target's own namespaces (WSL's bsdtar in the VM).

WSL runs ``bsdtar -x`` / ``bsdtar -c`` in the utility VM against the distribution's disk. pywsl's
mini_init forks this worker for ``Import`` and ``Export``. The worker enters a new mount namespace
whose root is a private tmpfs holding only the VM's programs (read-only) and the target at
``/target``, ``pivot_root``s into it and runs GNU tar there, so an archive can never write outside
the distribution's root filesystem, whatever its member names or links say.

Import: the compression is detected from the archive's first bytes (gzip, xz, bzip2, zstd); a
non-seekable source is read ahead and the rest relayed (``splice``) into tar's stdin. Then the
result: ``ImportResult`` with ValidDistribution (``/etc`` or ``/bin/sh`` exists), Flavor and
Version (os-release) and DefaultName (``/etc/wsl-distribution.conf``), all looked up inside the
tree. Export: ``--one-file-system --xattrs --numeric-owner``, ``-z`` or ``-J``, then tar's exit
status as a raw int32 on the result channel, as WSL does. tar's diagnostics go to the stderr fd.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import struct
from dataclasses import dataclass

from pywsl.guest import forking, mounts, rootfs, syscalls
from pywsl.guest.os_release import default_name, flavor_and_version
from pywsl.wire import schema
from pywsl.wire.channel import MessageChannel
from pywsl.wire.enums import LX_MINI_CREATE_INSTANCE_STEP, LX_MINI_INIT_MESSAGE_FLAGS

log = logging.getLogger("pywsl.tar")

CREATE_INSTANCE_RESULT = schema("LX_MINI_INIT_CREATE_INSTANCE_RESULT")
IMPORT_RESULT = schema("LX_MINI_INIT_IMPORT_RESULT")
STEP_RUN_TAR = int(LX_MINI_CREATE_INSTANCE_STEP.LxInitCreateInstanceStepRunTar)
FLAGS = LX_MINI_INIT_MESSAGE_FLAGS
SEND_TIMEOUT = 30.0
TAR_PATHS = ("/usr/bin/tar", "/bin/tar")
TAR_ENVIRONMENT = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
MAGIC_LENGTH = 6
# (leading bytes, tar option): what GNU tar calls to decompress.
COMPRESSION_MAGIC = (
    (b"\x1f\x8b", "--gzip"),
    (b"\xfd7zXZ\x00", "--xz"),
    (b"BZh", "--bzip2"),
    (b"\x28\xb5\x2f\xfd", "--zstd"),
)
EXTRACT_OPTIONS = ("-x", "--preserve-permissions", "--same-owner", "--numeric-owner", "--xattrs",
                   "--xattrs-include=*", "--no-overwrite-dir")
CREATE_OPTIONS = ("-c", "--one-file-system", "--xattrs", "--xattrs-include=*", "--numeric-owner")


@dataclass(frozen=True)
class TarJob:
    """The descriptors mini_init hands a worker: ``Import``/``Export`` fds, in that order."""

    tree_fd: int  # the target directory, a detached mount tree
    result_fd: int  # the result channel end
    data_fd: int  # archive to read (import) or output to write (export)
    stderr_fd: int
    flags: int


def compression_option(head: bytes) -> str | None:
    """The tar option that decompresses an archive starting with ``head`` (None: plain tar)."""
    for magic, option in COMPRESSION_MAGIC:
        if head.startswith(magic):
            return option
    return None


def _read_head(fd: int) -> tuple[bytes, bool]:
    """The archive's first bytes and whether they were consumed (a pipe) or peeked (seekable)."""
    try:
        position = os.lseek(fd, 0, os.SEEK_CUR)
    except OSError:
        position = -1
    if position >= 0:
        return os.pread(fd, MAGIC_LENGTH, position), False
    head = b""
    while len(head) < MAGIC_LENGTH:
        chunk = os.read(fd, MAGIC_LENGTH - len(head))
        if not chunk:
            break
        head += chunk
    return head, True


def _relay(head: bytes, source: int) -> int:
    """A pipe that yields ``head`` and then everything left in ``source`` (a forked relay)."""
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
    return read_end


def _run_tar(arguments: list[str], stdin: int, stdout: int, stderr: int) -> int:
    program = next((path for path in TAR_PATHS if os.path.exists(path)), TAR_PATHS[0])
    pid = os.fork()
    if pid == 0:
        try:
            for source, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
                os.dup2(source, target)
            forking.close_other_fds([])
            os.chdir(mounts.WORKER_TARGET)
            os.execve(program, ["tar", *arguments], TAR_ENVIRONMENT)
        except OSError as error:
            with contextlib.suppress(OSError):
                os.write(2, f"pywsl: cannot run {program}: {error.strerror}\n".encode())
        forking.exit_now(127)
    return forking.wait_for(pid)


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
        with contextlib.suppress(OSError, TimeoutError):
            channel.send(CREATE_INSTANCE_RESULT, Result=error.errno or errno.EIO, FailureStep=STEP_RUN_TAR,
                         Pid=0, ConnectPort=0, Warnings=None, timeout=SEND_TIMEOUT)
        forking.exit_now(1)
    channel.send(CREATE_INSTANCE_RESULT, Result=0, FailureStep=0, Pid=os.getpid(), ConnectPort=0,
                 Warnings=None, timeout=SEND_TIMEOUT)
    return channel


def _verbose(job: TarJob) -> list[str]:
    return ["-v"] if job.flags & FLAGS.LxMiniInitMessageFlagVerbose else []


def run_import(job: TarJob) -> None:
    """Extract the archive into the target and send ``ImportResult``. Never returns."""
    syscalls.set_process_name("import")
    code = 1
    try:
        channel = _enter(job, read_only=False)
        head, consumed = _read_head(job.data_fd)
        option = compression_option(head)
        source = _relay(head, job.data_fd) if consumed else job.data_fd
        arguments = [*EXTRACT_OPTIONS, *_verbose(job), *([option] if option else []), "-f", "-"]
        status = _run_tar(arguments, source, job.stderr_fd, job.stderr_fd)
        if source != job.data_fd:
            os.close(source)
        root = os.open(mounts.WORKER_TARGET, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        valid = rootfs.exists_in_root(root, "/etc") or rootfs.exists_in_root(root, "/bin/sh")
        flavor, version = flavor_and_version(root)
        name = default_name(root)
        os.close(root)
        channel.send(IMPORT_RESULT, Result=status, ValidDistribution=valid, Flavor=flavor, Version=version,
                     DefaultName=name, ShortcutIcon=None, TerminalProfile=None, GenerateTerminalProfile=False,
                     GenerateShortcut=False, timeout=SEND_TIMEOUT)
        code = 0 if status == 0 else 1
    except Exception:
        log.exception("import failed")
    forking.exit_now(code)


def run_export(job: TarJob) -> None:
    """Write the target as a tar stream to the output, then tar's status as a raw int32. Never returns."""
    syscalls.set_process_name("export")
    code = 1
    try:
        channel = _enter(job, read_only=True)
        compression: list[str] = []
        if job.flags & FLAGS.LxMiniInitMessageFlagExportCompressGzip:
            compression = ["--gzip"]
        elif job.flags & FLAGS.LxMiniInitMessageFlagExportCompressXzip:
            compression = ["--xz"]
        null = os.open("/dev/null", os.O_RDONLY)
        arguments = [*CREATE_OPTIONS, *_verbose(job), *compression, "-f", "-", "."]
        status = _run_tar(arguments, null, job.data_fd, job.stderr_fd)
        os.close(null)
        os.close(job.data_fd)
        channel.send_raw(struct.pack("<i", status), timeout=SEND_TIMEOUT)
        code = 0 if status == 0 else 1
    except Exception:
        log.exception("export failed")
    forking.exit_now(code)
