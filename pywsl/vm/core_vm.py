"""CoreVm: the host's handle on a user's utility VM (WSL's ``WslCoreVm``).

WSL's service owns its VM and the mini_init channel for the VM's lifetime. pywsl's host side keeps
no state: the VM runs on its own, and ``CoreVm.attach`` / ``CoreVm.boot`` open a new mini_init
channel to it (``GuestCapabilities`` first). Over that channel the host sends WSL's messages
(``EarlyConfig``/``InitialConfig`` once after boot, ``LaunchInit``, ``Import``, ``Export``) with the
file descriptors described in ``docs/design.md``, and pywsl's extensions (``QueryInstances``,
``AttachNotify``, ``ShutdownVm``).

A directory for ``LaunchInit``, ``Import`` or ``Export`` is either a path, opened here, or a
descriptor the caller opened itself (the api opens a user's folder with the user's rights and
without following symlinks). ``distributionStartTimeout`` bounds the wait for a distribution's
``CreateInstanceResult`` and ``InitializeResponse``.

An import or an export may take as long as its archive needs, so its wait for the worker's
result has no time limit; it ends when the worker ends (tar reached the end of the archive, failed
or filled the disk), or when the caller's ``cancel`` fires: the host then shuts its end of the
worker's channel, which makes the worker stop tar and exit, and waits at most
``CANCEL_WAIT_TIMEOUT`` for it to go.
"""

from __future__ import annotations

import errno
import os
import select
import stat
import struct
from _thread import allocate_lock  # `threading.Lock` (`threading` itself is not loaded for it)
from collections.abc import Callable
from pathlib import Path

from pywsl.lean_context import suppress
from pywsl.vm.backends.base import VmBackend, backend
from pywsl.vm.core_instance import CoreInstance
from pywsl.vm.disk_image import DiskImage
from pywsl.vm.errors import VmError, describe_result
from pywsl.vm.launch_types import DEFAULT_DISTRIBUTION_START_TIMEOUT_MS, ImportOutcome
from pywsl.vm.quick_launch import (
    GREETING_TIMEOUT,
    REQUEST_TIMEOUT,
    describe_directory,
    initialize_values,
    mini_init_values,
)
from pywsl.vm.timezone import host_timezone, valid_timezone
from pywsl.wire import unix_sockets as socket  # `socket` without its enums
from pywsl.wire.channel import MessageChannel
from pywsl.wire.constants import BOOT_ENTROPY_SIZE, EPHEMERAL_PORT_RANGE, LX_INIT_UTILITY_VM_INVALID_PORT
from pywsl.wire.errors import ChannelClosed, ProtocolError
from pywsl.wire.framing import parse_header
from pywsl.wire.launch_codec import (
    CREATE_INSTANCE_RESULT,
    EARLY_CONFIG,
    GUEST_CAPABILITIES,
    INITIAL_CONFIG,
    INITIALIZE,
    INITIALIZE_RESPONSE,
    MINI_INIT_MESSAGE,
    FastMessage,
)
from pywsl.wire.message_types import LxMessageType as LX_MESSAGE_TYPE  # numbers: no enums loaded
from pywsl.wire.message_types import MiniInitMessageFlags as LX_MINI_INIT_MESSAGE_FLAGS
from pywsl.wire.message_types import NetworkingMode as LX_MINI_INIT_NETWORKING_MODE

TYPE_CHECKING = False  # `typing` would cost a cold launch's boot its load
if TYPE_CHECKING:
    import _socket
    from contextlib import AbstractContextManager
    from types import TracebackType
    from typing import Any, Protocol

    from pywsl.vm.config import VmConfig
    from pywsl.wire.codec import MessageSchema

SHUTDOWN_TIMEOUT = 30.0
CANCEL_WAIT_TIMEOUT = 30.0  # for a cancelled import/export worker to stop
DISK_REQUEST_TIMEOUT = 120.0  # a disk is attached, found, checked and mounted in the VM
RESIZE_TIMEOUT = 3600.0  # e2fsck and resize2fs of a large, full file system under emulation

Directory = Path | int  # a path, or an open directory descriptor (O_PATH or O_DIRECTORY)


_IMPORT_IN_PLACE = LX_MESSAGE_TYPE.LxMiniInitMessageImportInplace


def _schema(name: str) -> MessageSchema:
    """A message off the launch path (boot, import, export, queries): its construct declaration,
    loaded on first use. The launch's messages come from ``pywsl.wire.launch_codec``."""
    from pywsl.wire import schema

    return schema(name)


FLAGS = LX_MINI_INIT_MESSAGE_FLAGS
COMPRESSION_FLAGS = {
    "": 0,
    "none": 0,
    "gzip": FLAGS.LxMiniInitMessageFlagExportCompressGzip,
    "xz": FLAGS.LxMiniInitMessageFlagExportCompressXzip,
}
_NETWORKING_MODES = {
    "mirrored": LX_MINI_INIT_NETWORKING_MODE.LxMiniInitNetworkingModeMirrored,
    "none": LX_MINI_INIT_NETWORKING_MODE.LxMiniInitNetworkingModeNone,
}


def _greet(sock: _socket.socket) -> tuple[MessageChannel, str] | None:
    """Open the mini_init channel on a connection: read GuestCapabilities. None if the VM is going away."""
    channel = MessageChannel(sock, name="mini_init channel")
    try:
        capabilities, _fds = channel.receive(GUEST_CAPABILITIES, timeout=GREETING_TIMEOUT, expect_fds=0)
    except (ChannelClosed, ConnectionError):
        channel.close()
        return None
    except BaseException:
        channel.close()
        raise
    return channel, capabilities.Buffer or ""


class _StoppedWhileStarting(Exception):
    """The guest closed a new channel before its first result."""


def _describe(where: Directory | DiskImage) -> str:
    """The host path of a folder for ``InstallPath`` (``wslpath -w`` inside): a descriptor's as the
    host sees it (a qemu guest sees the folder elsewhere), "" when unknown (a disk)."""
    if isinstance(where, DiskImage):
        return ""
    if isinstance(where, Path):
        return str(where)
    return describe_directory(where)


if TYPE_CHECKING:

    class Cancellation(Protocol):
        """What can cancel an import or export (``pywsl.api.cancellation.CancelToken`` is one)."""

        def on_cancel(self, callback: Callable[[], None]) -> AbstractContextManager[None]: ...


class _DirectoryFor:
    """``with``: a descriptor of ``where`` for a message, the caller's own or one opened (and closed
    on the way out) here. A disk (``DiskImage``) needs a real VM: its file system is mounted by the
    VM's kernel. (A class rather than `contextlib.contextmanager`: a cold launch's boot loads no
    `contextlib`.)"""

    __slots__ = ("_backend", "_opened", "_where")

    def __init__(self, vm_backend: VmBackend, where: Directory | DiskImage) -> None:
        self._backend = vm_backend
        self._where = where
        self._opened = -1

    def __enter__(self) -> int:
        where = self._where
        if isinstance(where, DiskImage):
            if self._backend.name != "qemu":
                raise VmError(
                    "a distribution on a disk image needs the qemu backend ([pywsl] backend = qemu)"
                )
            return where.fd
        if isinstance(where, bool) or not isinstance(where, Path | int):
            raise TypeError(f"a directory is a Path or an open descriptor, not {type(where).__name__}")
        if isinstance(where, int):
            if not stat.S_ISDIR(os.fstat(where).st_mode):
                raise NotADirectoryError(f"descriptor {where} is not a directory")
            return where
        self._opened = self._backend.directory_handle(where)
        return self._opened

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        opened, self._opened = self._opened, -1
        if opened >= 0:
            os.close(opened)


class _Wakeup:
    """A pipe that a cancellation callback writes to, safe to fire after it was closed."""

    def __init__(self) -> None:
        self.read_fd, self._write_fd = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._lock = allocate_lock()

    def fire(self) -> None:
        with self._lock:
            if self._write_fd >= 0:
                with suppress(OSError):
                    os.write(self._write_fd, b"\0")

    def close(self) -> None:
        with self._lock:
            for fd in (self.read_fd, self._write_fd):
                if fd >= 0:
                    os.close(fd)
            self.read_fd = self._write_fd = -1


def _await_worker(channel: MessageChannel, cancel: Cancellation | None, what: str) -> None:
    """Return once the worker's channel has something to read; on ``cancel``, shut the channel
    (the worker stops tar and exits), wait up to CANCEL_WAIT_TIMEOUT for it and raise."""
    if cancel is None:
        return
    wakeup = _Wakeup()
    try:
        with cancel.on_cancel(wakeup.fire):
            ready = select.poll()
            ready.register(channel.fileno(), select.POLLIN)
            ready.register(wakeup.read_fd, select.POLLIN)
            events = dict(ready.poll())
        if channel.fileno() in events:
            return
    finally:
        wakeup.close()
    end = socket.socket(fileno=os.dup(channel.fileno()))
    try:
        with suppress(OSError):
            end.shutdown(socket.SHUT_WR)
    finally:
        end.close()
    gone = select.poll()
    gone.register(channel.fileno(), select.POLLIN)
    gone.poll(int(CANCEL_WAIT_TIMEOUT * 1000))
    raise VmError(f"{what} was cancelled: the client went away", code=errno.ECANCELED)


def _tar_failure(what: str, status: int) -> VmError:
    """The error for a worker's non-zero result: ``-errno`` (a full disk) or tar's exit status."""
    if status in (-errno.ENOSPC, -errno.EDQUOT):
        return VmError(
            f"{what} failed: the disk is full ({os.strerror(-status)}); nothing of it was kept", code=-status
        )
    if status < 0:
        return VmError(f"{what} failed: {describe_result(-status)}", code=-status)
    return VmError(f"{what} failed (tar exit status {status})", code=status)


def _import_result(channel: MessageChannel) -> tuple[tuple[str, ...], Any]:
    """The import worker's last words: its warnings for the user (``PYWSL_IMPORT_WARNINGS``, at
    most once, e.g. the device nodes it left out), then at once ``ImportResult``."""
    data, _fds = channel.receive(expect_fds=0)
    if parse_header(data).message_type != _schema("PYWSL_IMPORT_WARNINGS").message_type:
        return (), _schema("LX_MINI_INIT_IMPORT_RESULT").parse(data)
    text = _schema("PYWSL_IMPORT_WARNINGS").parse(data).Warnings or ""
    try:
        result, _fds = channel.receive(
            _schema("LX_MINI_INIT_IMPORT_RESULT"), timeout=REQUEST_TIMEOUT, expect_fds=0
        )
    except TimeoutError:
        raise VmError("import: the worker sent no result after its warnings") from None
    return tuple(line for line in text.split("\n") if line.strip()), result


class ExitWatch:
    """A notify channel (``AttachNotify``): the pids of instance inits as they exit (``ChildExit``)."""

    def __init__(self, channel: MessageChannel) -> None:
        self.channel = channel

    def receive(self, timeout: float | None = None) -> int:
        """The next exited init's pid; ChannelClosed when the VM has stopped, TimeoutError on timeout."""
        message, _fds = self.channel.receive(
            _schema("LX_MINI_INIT_CHILD_EXIT_MESSAGE"), timeout=timeout, expect_fds=0
        )
        return int(message.ChildPid)

    def fileno(self) -> int:
        return self.channel.fileno()

    def close(self) -> None:
        self.channel.close()


class CoreVm:
    """A connection to a running utility VM."""

    def __init__(
        self,
        vm_backend: VmBackend,
        runtime_dir: Path,
        channel: MessageChannel,
        kernel_release: str,
        *,
        start_timeout_ms: int = DEFAULT_DISTRIBUTION_START_TIMEOUT_MS,
    ) -> None:
        self.backend = vm_backend
        self.runtime_dir = Path(runtime_dir)
        self.kernel_release = kernel_release
        self.start_timeout_ms = start_timeout_ms  # distributionStartTimeout
        self.booted = False  # this connection started the VM (``boot``), rather than attached to it
        self._channel = channel
        self._lock = allocate_lock()

    @property
    def _start_timeout(self) -> float:
        return self.start_timeout_ms / 1000

    # -- reaching the VM -----------------------------------------------------------------------

    @classmethod
    def attach(cls, runtime_dir: Path, backend_name: str = "namespaces") -> CoreVm | None:
        """The running VM of this runtime folder, or None when no VM runs."""
        vm_backend = backend(backend_name)
        sock = vm_backend.connect(Path(runtime_dir))
        if sock is None:
            if vm_backend.has_leftovers(Path(runtime_dir)):
                vm_backend.remove_leftovers(Path(runtime_dir))
            return None
        greeted = _greet(sock)
        if greeted is None:
            return None
        return cls(vm_backend, Path(runtime_dir), *greeted)

    @classmethod
    def boot(cls, config: VmConfig) -> CoreVm:
        """``_CreateVm``: attach to the running VM, or boot one (then EarlyConfig and InitialConfig)."""
        vm_backend = backend(config.backend)
        for _attempt in range(3):
            sock = vm_backend.connect(config.runtime_dir)
            booted = sock is None
            if sock is None:
                sock = vm_backend.start(config)
            greeted = _greet(sock)
            if greeted is None:
                continue  # it stopped (idle) between connect and greeting: start over
            vm = cls(
                vm_backend,
                config.runtime_dir,
                *greeted,
                start_timeout_ms=config.distribution_start_timeout_ms,
            )
            if booted:
                vm._configure(config)
                vm.booted = True
            return vm
        raise VmError("the utility VM keeps stopping while it is being reached")

    def _configure(self, config: VmConfig) -> None:
        invalid = LX_INIT_UTILITY_VM_INVALID_PORT
        mode = _NETWORKING_MODES.get(config.networking_mode)
        if mode is None:
            raise VmError(f"unsupported networking mode {config.networking_mode!r}")
        with self._lock:
            with self._channel.start_transaction(REQUEST_TIMEOUT) as transaction:
                transaction.send(
                    EARLY_CONFIG,
                    SwapLun=invalid,
                    SystemDistroDeviceType=0,
                    SystemDistroDeviceId=invalid,
                    MemoryReclaimMode=0,
                    DnsTunnelingIpAddress=0,
                    EnableDebugShell=False,
                    EnableDnsTunneling=False,
                    EnableSafeMode=False,
                    DefaultKernel=True,
                    IsolateDistroCgroup=False,
                    KernelModulesDeviceId=invalid,
                    Hostname=config.hostname,
                    KernelModulesList="",
                )
            with self._channel.start_transaction(REQUEST_TIMEOUT) as transaction:
                transaction.send(
                    INITIAL_CONFIG,
                    Entropy=os.urandom(BOOT_ENTROPY_SIZE),
                    EnableGuiApps=False,
                    MountGpuShares=False,
                    EnableInboxGpuLibs=False,
                    NetworkingConfiguration={
                        "NetworkingMode": mode,
                        "PortTrackerType": 0,
                        "EphemeralPortRangeStart": EPHEMERAL_PORT_RANGE[0],
                        "EphemeralPortRangeEnd": EPHEMERAL_PORT_RANGE[1] - 1,
                        "EnableDhcpClient": False,
                        "DisableIpv6": False,
                        "DhcpTimeout": 0,
                    },
                )

    # -- requests ------------------------------------------------------------------------------

    def _send_mini_init(
        self,
        message_type: int,
        fds: list[int],
        *,
        name: str = "",
        install_path: str = "",
        flags: int = 0,
        disk: DiskImage | None = None,
    ) -> None:
        values = mini_init_values(
            message_type,
            name=name,
            install_path=install_path,
            flags=flags,
            disk=(disk.fs_type, disk.mount_options) if disk else None,
        )
        with self._lock, self._channel.start_transaction(REQUEST_TIMEOUT) as transaction:
            transaction.send(MINI_INIT_MESSAGE, fds=fds, **values)

    def _directory(self, where: Directory | DiskImage) -> _DirectoryFor:
        """A descriptor of ``where`` for the message (`_DirectoryFor`)."""
        return _DirectoryFor(self.backend, where)

    def running_instances(self) -> dict[str, int]:
        """Running distributions: casefolded name -> init pid (in the VM)."""
        from pywsl.wire.extensions import parse_instance_entries

        with self._lock:
            reply = self._channel.request(
                _schema("PYWSL_QUERY_INSTANCES"), _schema("PYWSL_INSTANCE_LIST"), timeout=REQUEST_TIMEOUT
            )
        return {name.casefold(): pid for name, pid in parse_instance_entries(reply.Entries or []).items()}

    def launch_instance(
        self,
        name: str,
        rootfs: Directory | DiskImage,
        *,
        default_uid: int,
        hostname: str,
        timezone: str | None = None,
    ) -> CoreInstance:
        """``CreateInstance``: LaunchInit (or attach to the running one), CreateInstanceResult, Initialize.

        ``rootfs`` is a path or an open directory descriptor (which stays the caller's), or a disk.
        ``timezone`` is the IANA id for ``Initialize.Timezone``: None sends the host's, "" none.
        An instance that stops just as this attaches to it (idle) closes the new channel without a
        result; the launch is then tried once more, which starts it anew.
        """
        if timezone is None:
            timezone = host_timezone() or ""
        elif timezone and not valid_timezone(timezone):
            raise ValueError(f"invalid time zone id {timezone!r}")
        for attempt in range(2):
            try:
                return self._launch_once(
                    name, rootfs, default_uid=default_uid, hostname=hostname, timezone=timezone
                )
            except _StoppedWhileStarting:
                if attempt:
                    break
        raise VmError(f"distribution {name} stopped while it was starting")

    def _launch_once(
        self, name: str, rootfs: Directory | DiskImage, *, default_uid: int, hostname: str, timezone: str
    ) -> CoreInstance:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        channel = MessageChannel(ours, name=f"init channel of {name}")
        what = f"distribution {name}"
        try:
            try:
                with self._directory(rootfs) as directory:
                    self._send_mini_init(
                        LX_MESSAGE_TYPE.LxMiniInitMessageLaunchInit,
                        [directory, theirs.fileno()],
                        name=name,
                        install_path=_describe(rootfs),
                        disk=rootfs if isinstance(rootfs, DiskImage) else None,
                    )
            finally:
                theirs.close()
            result = self._instance_result(channel, what)
            try:
                response = channel.request(
                    INITIALIZE,
                    INITIALIZE_RESPONSE,
                    timeout=self._start_timeout,
                    **initialize_values(name, hostname, timezone, default_uid),
                )
            except TimeoutError:
                raise self._start_timed_out(what) from None
        except (ChannelClosed, _StoppedWhileStarting):
            channel.close()
            raise _StoppedWhileStarting() from None
        except BaseException:
            channel.close()
            raise
        warnings = [line for line in (result.Warnings or "").split("\n") if line]
        return CoreInstance(
            name=name,
            pid=int(result.Pid),
            channel=channel,
            warnings=warnings,
            default_uid=int(response.DefaultUid),
            flavor=response.Flavor or None,
            version=response.Version or None,
            pid_namespace=int(response.PidNamespace),
            terminate_timeout=self._start_timeout,
        )

    def _start_timed_out(self, what: str) -> VmError:
        return VmError(f"{what} did not start within distributionStartTimeout ({self.start_timeout_ms} ms)")

    def _instance_result(self, channel: MessageChannel, what: str) -> FastMessage:
        try:
            result, _fds = channel.receive(CREATE_INSTANCE_RESULT, timeout=self._start_timeout, expect_fds=0)
        except ChannelClosed:
            raise _StoppedWhileStarting() from None
        except TimeoutError:
            raise self._start_timed_out(what) from None
        if result.Result != 0:
            code = int(result.Result)
            raise VmError(
                f"{what} failed: {describe_result(code)} (step {int(result.FailureStep)})",
                code=code,
                step=int(result.FailureStep),
            )
        return result

    def import_rootfs(
        self,
        target_dir: Directory | DiskImage,
        archive_fd: int,
        stderr_fd: int,
        *,
        cancel: Cancellation | None = None,
        in_place: bool = False,
    ) -> ImportOutcome:
        """``Import``: extract the archive (read from ``archive_fd``) into ``target_dir`` inside the VM.

        ``target_dir`` is a path or an open directory descriptor (which stays the caller's), or a new
        disk, which the VM formats first. ``in_place``: ImportInplace, the disk holds a root
        filesystem already, which is only checked (nothing is read from ``archive_fd``).
        tar's messages go to ``stderr_fd``. Raises VmError when tar fails (its exit status is
        the error's ``errno``; ENOSPC or EDQUOT when the target's disk filled up; ECANCELED when
        ``cancel`` fired).
        """
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        channel = MessageChannel(ours, name="import channel")
        try:
            try:
                with self._directory(target_dir) as directory:
                    self._send_mini_init(
                        _IMPORT_IN_PLACE if in_place else LX_MESSAGE_TYPE.LxMiniInitMessageImport,
                        [directory, theirs.fileno(), archive_fd, stderr_fd],
                        install_path=_describe(target_dir),
                        disk=target_dir if isinstance(target_dir, DiskImage) else None,
                    )
            finally:
                theirs.close()
            try:
                self._instance_result(channel, "import")
            except _StoppedWhileStarting:
                raise VmError("import: the VM closed the channel without a result") from None
            _await_worker(channel, cancel, "the import")
            try:
                warnings, result = _import_result(channel)
            except ChannelClosed:
                raise VmError("import: the worker stopped without a result") from None
        finally:
            channel.close()
        if result.Result != 0:
            raise _tar_failure("extracting the archive", int(result.Result))
        return ImportOutcome(
            valid=bool(result.ValidDistribution),
            flavor=result.Flavor or None,
            version=result.Version or None,
            default_name=result.DefaultName or None,
            warnings=warnings,
        )

    def export_rootfs(
        self,
        rootfs: Directory | DiskImage,
        output_fd: int,
        stderr_fd: int,
        compression: str,
        *,
        cancel: Cancellation | None = None,
    ) -> None:
        """``Export``: ``rootfs`` (a path or an open directory descriptor) as a tar stream
        (``compression`` "", "gzip" or "xz") on ``output_fd``; ``cancel`` as for `import_rootfs`."""
        if compression not in COMPRESSION_FLAGS:
            raise ValueError(f"unknown compression {compression!r} (use '', 'gzip' or 'xz')")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        channel = MessageChannel(ours, name="export channel")
        try:
            try:
                with self._directory(rootfs) as directory:
                    self._send_mini_init(
                        LX_MESSAGE_TYPE.LxMiniInitMessageExport,
                        [directory, theirs.fileno(), output_fd, stderr_fd],
                        install_path=_describe(rootfs),
                        flags=int(COMPRESSION_FLAGS[compression]),
                        disk=rootfs if isinstance(rootfs, DiskImage) else None,
                    )
            finally:
                theirs.close()
            try:
                self._instance_result(channel, "export")
            except _StoppedWhileStarting:
                raise VmError("export: the VM closed the channel without a result") from None
            _await_worker(channel, cancel, "the export")
            try:
                status = struct.unpack("<i", channel.receive_exact(4))[0]
            except ChannelClosed:
                raise VmError("export: the worker stopped without a result") from None
        finally:
            channel.close()
        if status != 0:
            raise _tar_failure("writing the archive", status)

    def _disk_request(self, schema_name: str, disk: DiskImage, **fields: Any) -> tuple[int, int]:
        """Send a user-disk message with the disk and a result channel; (Result, FailureStep) of
        the ``MountStatus`` that comes back."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        channel = MessageChannel(ours, name="mount result channel")
        try:
            try:
                with (
                    self._directory(disk) as fd,
                    self._lock,
                    self._channel.start_transaction(REQUEST_TIMEOUT) as transaction,
                ):
                    transaction.send(_schema(schema_name), fds=[fd, theirs.fileno()], **fields)
            finally:
                theirs.close()
            try:
                status, _fds = channel.receive(
                    _schema("LX_MINI_INIT_MOUNT_RESULT_MESSAGE"), timeout=DISK_REQUEST_TIMEOUT, expect_fds=0
                )
            except (ChannelClosed, TimeoutError):
                raise VmError("the VM did not report the disk's mount status") from None
        finally:
            channel.close()
        return int(status.Result), int(status.FailureStep)

    def mount_disk(
        self, disk: DiskImage, *, name: str, partition: int = 0, fs_type: str = "", options: str = ""
    ) -> tuple[int, int]:
        """``Mount``: the user's disk (attached for this and kept) mounted at ``/mnt/wsl/<name>``;
        ``name`` "" only attaches it (``--bare``). (0 or -errno, the failing step)."""
        return self._disk_request(
            "LX_MINI_INIT_MOUNT_MESSAGE",
            disk,
            PartitionIndex=partition,
            ScsiLun=0,
            Type=fs_type,
            TargetName=name,
            Options=options,
        )

    def detach_disk(self, disk: DiskImage | None) -> tuple[int, int]:
        """``Detach``: unmount the volumes of a user's disk and detach it (every user disk for None)."""
        if disk is not None:
            return self._disk_request("LX_MINI_INIT_DETACH_MESSAGE", disk, ScsiLun=0)
        with self._lock:
            reply = self._channel.request(
                _schema("LX_MINI_INIT_UNMOUNT_MESSAGE"),
                _schema("LX_MINI_INIT_MOUNT_RESULT_MESSAGE"),
                timeout=DISK_REQUEST_TIMEOUT,
                Buffer="",
            )
        return int(reply.Result), int(reply.FailureStep)

    def resize_disk(self, disk: DiskImage, new_size: int, output_fd: int) -> int:
        """``ResizeDistribution``: ``e2fsck -f -y`` and ``resize2fs`` on the disk, to ``new_size``
        bytes (0: the whole disk), their output on ``output_fd``; the tools' status (0: resized)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        channel = MessageChannel(ours, name="resize channel")
        try:
            try:
                with (
                    self._directory(disk) as fd,
                    self._lock,
                    self._channel.start_transaction(REQUEST_TIMEOUT) as transaction,
                ):
                    transaction.send(
                        _schema("LX_MINI_INIT_RESIZE_DISTRIBUTION_MESSAGE"),
                        fds=[fd, theirs.fileno(), output_fd],
                        ScsiLun=0,
                        NewSize=new_size,
                    )
            finally:
                theirs.close()
            try:
                response, _fds = channel.receive(
                    _schema("LX_MINI_INIT_RESIZE_DISTRIBUTION_RESPONSE"), timeout=RESIZE_TIMEOUT, expect_fds=0
                )
            except ChannelClosed:
                raise VmError("resize: the VM closed the channel without a result") from None
            except TimeoutError:
                raise VmError(
                    f"resize: the file system check and resize took over {RESIZE_TIMEOUT:.0f} s"
                ) from None
        finally:
            channel.close()
        return int(response.ResponseCode)

    def open_exit_watch(self) -> ExitWatch:
        """A new connection that reports every instance init that exits (``AttachNotify``)."""
        sock = self.backend.connect(self.runtime_dir)
        greeted = _greet(sock) if sock is not None else None
        if greeted is None:
            raise VmError("the utility VM is not running")
        channel = greeted[0]
        try:
            with channel.start_transaction(REQUEST_TIMEOUT) as transaction:
                transaction.send(_schema("PYWSL_ATTACH_NOTIFY"))
        except BaseException:
            channel.close()
            raise
        return ExitWatch(channel)

    def shutdown(self, force: bool = False) -> None:
        """``--shutdown``: stop every instance and the VM (``force``: kill). Returns when all is gone."""
        if force:
            self.backend.kill(self.runtime_dir)
        else:
            try:
                with self._lock:
                    with self._channel.start_transaction(REQUEST_TIMEOUT) as transaction:
                        transaction.send(_schema("PYWSL_SHUTDOWN_VM"), Force=False)
                    self._channel.receive(timeout=SHUTDOWN_TIMEOUT)
            except (ChannelClosed, ConnectionError):
                pass
            except (TimeoutError, ProtocolError):
                self.backend.kill(self.runtime_dir)
        if not self.backend.wait_stopped(self.runtime_dir, SHUTDOWN_TIMEOUT):
            self.backend.kill(self.runtime_dir)
            if not self.backend.wait_stopped(self.runtime_dir, SHUTDOWN_TIMEOUT):
                raise VmError("the utility VM did not stop")
        self.close()

    def close(self) -> None:
        """Close this connection; the VM keeps running."""
        with suppress(OSError):
            self._channel.close()
