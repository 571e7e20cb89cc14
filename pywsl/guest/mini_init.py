"""mini_init: pid 1 of the utility VM (``python -m pywsl.guest.mini_init <boot arguments>``).

WSL's mini_init is the VM's first process: it greets the service with ``GuestCapabilities``,
applies ``EarlyConfig``/``InitialConfig``, starts a distribution's init for each ``LaunchInit``,
runs bsdtar for ``Import``/``Export``, and reports exits with ``ChildExit``. pywsl's does the same
on AF_UNIX connections to ``mini_init.sock`` (any number at once), with file descriptors in place
of hvsocket ports (see ``docs/design.md``), plus pywsl's extension messages: ``QueryInstances``,
``AttachNotify`` and ``ShutdownVm``.

Everything any guest role needs is imported here, before the VM's namespaces are entered: the
interpreter's files are not readable by the VM's root, and a distribution's init has no Python.
The VM exits after ``vmIdleTimeout`` ms with no instance and no import/export worker, and at once
when its monitor (the process that clones mount trees for it) is gone.
"""

from __future__ import annotations

import errno
import gc
import os
import selectors
import stat
import struct
import sys
import time

from pywsl.guest import (
    disks,
    forking,
    guest_log,
    init,
    interop_init,
    launch,
    mounts,
    network_files,
    processors,
    syscalls,
    tar_worker,
    user_disks,
    vm_monitor,
    vm_path_folders,
)
from pywsl.guest import lean_signal as signal
from pywsl.guest.boot import BootArguments, parse_boot_arguments
from pywsl.guest.requests import receive_request
from pywsl.guest.vm_monitor import VmContext
from pywsl.lean_context import suppress
from pywsl.wire import unix_sockets as socket
from pywsl.wire.channel import MessageChannel, Transaction
from pywsl.wire.errors import ChannelClosed, ProtocolError
from pywsl.wire.launch_codec import (
    CHILD_EXIT,
    EARLY_CONFIG,
    GUEST_CAPABILITIES,
    INITIAL_CONFIG,
    INSTANCE_LIST,
    MINI_INIT_MESSAGE,
    MOUNT_MESSAGE,
    MOUNT_RESULT,
    RESIZE_MESSAGE,
    RESIZE_RESPONSE,
    SHUTDOWN_VM,
    UNMOUNT_MESSAGE,
    instance_entries,
)
from pywsl.wire.message_types import CreateInstanceStep, LxMessageType, MountStep, PywslMessageType

TYPE_CHECKING = False  # `typing`, `dataclasses` would cost the VM's start (`records`: the same classes)
if TYPE_CHECKING:
    from dataclasses import dataclass, field
    from typing import Any
else:
    from pywsl.records import dataclass, field

log = guest_log.getLogger("pywsl.mini_init")

RECEIVE_TIMEOUT = 10.0
SEND_TIMEOUT = 5.0
SHUTDOWN_GRACE = 10.0
MAX_DISTRIBUTION_NAME = 256


# The enums' values as plain numbers (`pywsl.wire.enums` would cost the VM's start).
T = LxMessageType
P = PywslMessageType
STEP = CreateInstanceStep
MOUNT_STEP = MountStep
DISK_MESSAGES = (
    T.LxMiniInitMessageMount,
    T.LxMiniInitMessageDetach,
    T.LxMiniInitMessageUnmount,
    T.LxMiniInitMessageResizeDistribution,
)
TAR_MESSAGES = (T.LxMiniInitMessageImport, T.LxMiniInitMessageImportInplace, T.LxMiniInitMessageExport)
DISK_RELEASE_INTERVAL = 0.02  # how often an ended disk use is checked while its file system unmounts
# The builder of the host PATH folders is forked once the first distribution is on its way, or
# after this long without one (s): a fork of this interpreter, off the booting launch's path.
BUILDER_DELAY = 0.05


@dataclass
class Instance:
    """A running distribution: its init (pid in the VM), the shim that waits for it, its control socket."""

    name: str
    init_pid: int
    shim_pid: int
    control: socket.socket


@dataclass
class Connection:
    channel: MessageChannel
    notify: bool = False


@dataclass
class Workers:
    """Children of mini_init: instance shims (pid -> instance key) and import/export workers."""

    shims: dict[int, str] = field(default_factory=dict)
    tar: set[int] = field(default_factory=set)
    other: set[int] = field(default_factory=set)


def _seccomp_available() -> bool:
    with suppress(OSError), open("/proc/self/status") as handle:
        return any(line.startswith("Seccomp:") for line in handle)
    return False


def _is_socket(fd: int) -> bool:
    """A connected stream socket: what a message channel runs on."""
    if not stat.S_ISSOCK(os.fstat(fd).st_mode):
        return False
    sock = socket.socket(fileno=fd)
    try:
        return sock.type == socket.SOCK_STREAM
    finally:
        sock.detach()


def _path_of(fd: int) -> str:
    """The host path of a directory the host passed (for ``wslpath -w``), "" when unknown."""
    try:
        path = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""
    return path if path.startswith("/") and not path.endswith(" (deleted)") else ""


def _path_folders(context: VmContext) -> tuple[int, int]:
    """Where the host PATH folders the VM's instances share are: (the tree every instance attaches,
    the folder the builder writes). Those kept on the host (``path_folder_store``: its locked
    read-only mount, and the folder), else a tmpfs of this VM (``mounts.folders_tmpfs``: both
    its root); (-1, -1) when refused (each instance then makes its own)."""
    if context.path_folder_store >= 0 and context.path_folder_tree >= 0:
        return context.path_folder_tree, context.path_folder_store
    try:
        tmpfs = mounts.folders_tmpfs()
    except OSError as error:
        log.warning("the host PATH folders are made by each distribution: %s", error)
        return -1, -1
    return tmpfs, tmpfs


def _make_shared_tmpfs() -> int:
    """The VM's ``/mnt/wsl`` tmpfs (``mounts.shared_tmpfs``); -1, and no ``/mnt/wsl``, when refused."""
    try:
        return mounts.shared_tmpfs()
    except OSError as error:
        log.warning("no %s for the distributions: %s", mounts.SHARED_MOUNT_POINT, error)
        return -1


def _close(fds: list[int]) -> None:
    for fd in fds:
        with suppress(OSError):
            os.close(fd)


def _disk_tree(disk_fd: int, message: Any, new_disk: bool, result_fd: int) -> int:
    """In a tar worker: the disk's file system as a tree, formatted first when ``new_disk``. On
    failure the host is told (``CreateInstanceResult``: FormatDisk or MountDisk) and the worker ends."""
    step = STEP.LxInitCreateInstanceStepFormatDisk
    try:
        if new_disk:
            disks.format_ext4(disk_fd)
        step = STEP.LxInitCreateInstanceStepMountDisk
        return disks.mount_tree(disk_fd, message.FsType or "ext4", message.MountOptions or "")
    except OSError as error:
        log.error("the disk cannot be used: %s", error)
        init.send_failure(result_fd, error.errno or errno.EIO, step)
        forking.exit_now(1)
        raise AssertionError("unreachable") from None


class MiniInit:
    """The server loop of pid 1."""

    def __init__(self, context: VmContext) -> None:
        self.boot: BootArguments = context.boot
        self.cloner = context.cloner
        self.ready = context.ready
        self.host_tree = context.host_tree
        # (At the shared tmpfs's mount point, which covers them next.)
        self.folders_tree, self.folders_store = _path_folders(context)
        self.shared_tmpfs = _make_shared_tmpfs()
        self.listener = socket.socket(fileno=self.boot.listen_fd)
        self.listener.setblocking(False)
        self.selector = selectors.DefaultSelector()
        self.connections: dict[int, Connection] = {}
        self.instances: dict[str, Instance] = {}
        self.workers = Workers()
        self.disk_uses = disks.DiskUses(self.cloner.release_disk)
        self.user_disks = user_disks.UserDisks(self.disk_uses)
        self.idle_since: float | None = time.monotonic()
        self.exit_code: int | None = None
        self.held_builder: vm_path_folders.HeldBuilder | None = None  # its lock taken, not forked yet
        self.builder_due = 0.0
        self.capabilities = GUEST_CAPABILITIES.build(
            SeccompAvailable=_seccomp_available(),
            HvPciSwiotlbBase=0,
            HvPciSwiotlbSize=0,
            Buffer=os.uname().release,
        )

    # -- loop ------------------------------------------------------------------------------------

    def serve(self) -> int:
        wakeup_read, wakeup_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wakeup_write)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, lambda *_: self._request_exit(0))
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        self.selector.register(self.listener, selectors.EVENT_READ, "listener")
        self.selector.register(wakeup_read, selectors.EVENT_READ, "signal")
        # The monitor never speaks unasked: its socket turning readable means it is gone.
        self.selector.register(self.cloner.fileno(), selectors.EVENT_READ, "monitor")
        # The first distribution's launches most likely have the booting caller's host PATH: the
        # lock of the builder of those folders is taken before the VM serves (no instance can look
        # before), the builder forked once the first distribution is on its way (`_start_builder`).
        self.held_builder = vm_path_folders.hold(self.boot.host_path, self.host_tree, self.folders_store)
        self.builder_due = time.monotonic() + BUILDER_DELAY
        self.ready.send(b"R")
        self.ready.close()
        log.info(
            "utility VM ready (networking %s, host name %s)", self.boot.networking_mode, self.boot.hostname
        )
        while self.exit_code is None:
            for key, _events in self.selector.select(self._select_timeout()):
                if key.data == "listener":
                    self._accept()
                elif key.data == "signal":
                    with suppress(BlockingIOError):
                        os.read(wakeup_read, 512)
                elif key.data == "monitor":
                    log.error("the VM monitor is gone: stopping the VM")
                    self._request_exit(1)
                elif isinstance(key.data, Connection):
                    self._on_connection(key.data)
                elif isinstance(key.data, Instance):
                    self._on_instance_control(key.data)
                if self.exit_code is not None:
                    break
            self._start_builder()
            self._reap()
            self.disk_uses.flush()
            self._check_idle()
        if self.held_builder is not None:
            self.held_builder.abandon()
        return self.exit_code

    def _start_builder(self) -> None:
        """Fork the builder of the host PATH folders once a distribution has started (its first
        launch needs them some milliseconds later) or `BUILDER_DELAY` has passed."""
        if self.held_builder is None or self.exit_code is not None:
            return
        if not self.instances and time.monotonic() < self.builder_due:
            return
        builder = self.held_builder.start()
        self.held_builder = None
        if builder is not None:
            self.workers.other.add(builder)

    def _request_exit(self, code: int) -> None:
        if self.exit_code is None:
            self.exit_code = code

    def _select_timeout(self) -> float | None:
        if self.disk_uses.pending:  # a disk to hand back once its file system is gone
            return DISK_RELEASE_INTERVAL
        if self.held_builder is not None:
            return max(0.0, self.builder_due - time.monotonic())
        timeout = self.boot.vm_idle_timeout_ms
        if timeout < 0 or self.idle_since is None:
            return None
        return max(0.0, self.idle_since + timeout / 1000 - time.monotonic())

    def _busy(self) -> bool:
        return bool(self.instances or self.workers.tar or self.workers.shims)

    def _activity(self) -> None:
        """A host spoke: an idle VM gives it a full vmIdleTimeout to follow up."""
        if self.idle_since is not None:
            self.idle_since = time.monotonic()

    def _check_idle(self) -> None:
        if self._busy():
            self.idle_since = None
            return
        now = time.monotonic()
        if self.idle_since is None:
            self.idle_since = now
        timeout = self.boot.vm_idle_timeout_ms
        if timeout >= 0 and now - self.idle_since >= timeout / 1000:
            log.info("utility VM idle for %d ms, exiting", timeout)
            self._request_exit(0)

    # -- connections -----------------------------------------------------------------------------

    def _accept(self) -> None:
        while True:
            try:
                sock, _address = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                log.error("accept failed: %s", error)
                return
            connection = Connection(MessageChannel(sock, name="mini_init channel"))
            try:
                connection.channel.send(self.capabilities, timeout=SEND_TIMEOUT)
            except (OSError, TimeoutError) as error:
                log.warning("cannot greet a new connection: %s", error)
                connection.channel.close()
                continue
            self.connections[connection.channel.fileno()] = connection
            self.selector.register(connection.channel, selectors.EVENT_READ, connection)
            self._activity()

    def _drop(self, connection: Connection) -> None:
        fd = connection.channel.fileno()
        if fd >= 0:
            with suppress(KeyError, ValueError):
                self.selector.unregister(connection.channel)
            self.connections.pop(fd, None)
        connection.channel.close()

    def _on_connection(self, connection: Connection) -> None:
        if connection.notify:
            # Nothing is ever sent on a notify channel: readable means closed (or a protocol error).
            self._drop(connection)
            return
        try:
            transaction, data, fds = receive_request(connection.channel, RECEIVE_TIMEOUT)
        except ChannelClosed:
            self._drop(connection)
            return
        except (ProtocolError, TimeoutError, OSError) as error:
            log.error("closing a mini_init channel: %s", error)
            self._drop(connection)
            return
        self._activity()
        try:
            self._dispatch(connection, transaction, data, fds)
        except ProtocolError as error:
            log.error("closing a mini_init channel: %s", error)
            _close(fds)
            self._drop(connection)
        except (OSError, TimeoutError) as error:
            log.error("mini_init channel failed: %s", error)
            _close(fds)
            self._drop(connection)
        except Exception:
            log.exception("closing a mini_init channel after an unexpected error")
            _close(fds)
            self._drop(connection)

    def _dispatch(
        self, connection: Connection, transaction: Transaction, data: bytes, fds: list[int]
    ) -> None:
        message_type = struct.unpack_from("<I", data)[0]
        if message_type == T.LxMiniInitMessageEarlyConfig:
            self._expect_fds(fds, 0, "LX_MINI_INIT_EARLY_CONFIG_MESSAGE")
            early = EARLY_CONFIG.parse(data)
            if early.Hostname:
                syscalls.sethostname(network_files.clean_hostname(early.Hostname))
        elif message_type == T.LxMiniInitMessageInitialConfig:
            self._expect_fds(fds, 0, "LX_MINI_INIT_CONFIG_MESSAGE")
            INITIAL_CONFIG.parse(data)
        elif message_type == T.LxMiniInitMessageLaunchInit:
            self._expect_fds(fds, 2, "LX_MINI_INIT_MESSAGE")
            self._launch_init(data, fds)
        elif message_type in TAR_MESSAGES:
            self._expect_fds(fds, 4, "LX_MINI_INIT_MESSAGE")
            self._start_tar(message_type, data, fds)
        elif message_type in DISK_MESSAGES:
            self._dispatch_disk(message_type, transaction, data, fds)
        elif message_type == P.PywslQueryInstances:
            self._expect_fds(fds, 0, "PYWSL_QUERY_INSTANCES")
            entries = instance_entries({item.name: item.init_pid for item in self.instances.values()})
            transaction.send(INSTANCE_LIST, Entries=entries)
        elif message_type == P.PywslAttachNotify:
            self._expect_fds(fds, 0, "PYWSL_ATTACH_NOTIFY")
            connection.notify = True
        elif message_type == P.PywslShutdownVm:
            self._expect_fds(fds, 0, "PYWSL_SHUTDOWN_VM")
            self._shutdown(bool(SHUTDOWN_VM.parse(data).Force))
        else:
            raise ProtocolError(
                f"unexpected message type {message_type} on the mini_init channel",
                struct="MESSAGE_HEADER",
                field="MessageType",
            )

    def _dispatch_disk(
        self, message_type: int, transaction: Transaction, data: bytes, fds: list[int]
    ) -> None:
        """Mount, Detach, Unmount (the user's disks) and ResizeDistribution."""
        if message_type == T.LxMiniInitMessageResizeDistribution:
            self._expect_fds(fds, 3, "LX_MINI_INIT_RESIZE_DISTRIBUTION_MESSAGE")
            self._start_resize(data, fds)
        elif message_type == T.LxMiniInitMessageUnmount:
            self._expect_fds(fds, 0, "LX_MINI_INIT_UNMOUNT_MESSAGE")
            name = UNMOUNT_MESSAGE.parse(data).Buffer or ""
            result, step = self.user_disks.unmount(name) if name else self.user_disks.detach(None)
            transaction.send(MOUNT_RESULT, Result=result, FailureStep=step)
        else:
            self._expect_fds(fds, 2, "LX_MINI_INIT_MOUNT_MESSAGE")
            self._user_disk(message_type, data, fds)

    @staticmethod
    def _expect_fds(fds: list[int], count: int, name: str) -> None:
        if len(fds) != count:
            raise ProtocolError(f"{len(fds)} file descriptor(s) arrived, expected {count}", struct=name)

    # -- LaunchInit ------------------------------------------------------------------------------

    def _launch_init(self, data: bytes, fds: list[int]) -> None:
        """LaunchInit: hand the channel to the running init, or start one. Takes ``fds`` over.

        The root filesystem is a directory, or (a real VM) a disk whose file system is mounted here."""
        message = MINI_INIT_MESSAGE.parse(data)
        rootfs_fd, channel_fd = fds
        if not _is_socket(channel_fd):
            raise ProtocolError("the init channel is not a stream socket", struct="LX_MINI_INIT_MESSAGE")
        fds.clear()  # from here on this method owns (and closes) both descriptors
        lun = disks.lun_of(rootfs_fd)
        os_error = errno.EIO
        step = STEP.LxInitCreateInstanceStepLaunchInit
        try:
            name = message.DistributionName or ""
            if not name or len(name) > MAX_DISTRIBUTION_NAME or "/" in name:
                raise OSError(errno.EINVAL, f"invalid distribution name {name!r}")
            if self._attach(name.casefold(), channel_fd):
                channel_fd = -1
                return
            step = STEP.LxInitCreateInstanceStepMountDisk
            trees = self._instance_trees(rootfs_fd, lun, message)
            step = STEP.LxInitCreateInstanceStepLaunchInit
            install_path = message.InstallPath or ("" if lun is not None else _path_of(rootfs_fd))
            try:
                shim = self._start_instance(name, trees, channel_fd, install_path)
                channel_fd = -1
            finally:
                _close([fd for fd in trees if fd >= 0])
            if lun is not None:
                self.disk_uses.hold(shim, lun)
                lun = None
        except OSError as error:
            log.error("cannot start distribution %r: %s", message.DistributionName, error)
            os_error = error.errno or errno.EIO
        finally:
            os.close(rootfs_fd)
            if lun is not None:
                self.disk_uses.end_now(lun)
        if channel_fd >= 0:
            init.send_failure(channel_fd, os_error, step)

    def _instance_trees(self, rootfs_fd: int, lun: int | None, message: Any) -> list[int]:
        """The root filesystem (a clone of the directory, or the disk's file system), the host
        tree for /mnt/host (a copy of the masked tree host_view prepared, whose mounts stay locked
        in the distribution), another one for the interop runtime, and /mnt/wsl (a clone of the
        VM's shared tmpfs: the files are the same for every instance; -1 for none), and the host
        PATH folders made for the VM (``vm_path_folders``; -1 for none)."""
        if lun is not None:
            tree = disks.mount_tree(rootfs_fd, message.FsType or "ext4", message.MountOptions or "")
        else:
            tree = self.cloner.clone(rootfs_fd)
        trees = [tree]
        try:
            trees.append(mounts.clone_tree(self.host_tree))
            trees.append(mounts.clone_tree(self.host_tree))
            trees.append(mounts.clone_tree(self.shared_tmpfs) if self.shared_tmpfs >= 0 else -1)
            folders = self.folders_tree
            trees.append(mounts.clone_tree(folders, recursive=False) if folders >= 0 else -1)
        except OSError:
            _close([fd for fd in trees if fd >= 0])
            raise
        return trees

    def _attach(self, key: str, channel_fd: int) -> bool:
        """Pass a new init channel to the running instance ``key``; False if there is none."""
        running = self.instances.get(key)
        if running is None:
            return False
        try:
            socket.send_fds(running.control, [b"A"], [channel_fd], socket.MSG_DONTWAIT)
        except OSError:
            # Its init is exiting: forget it (its shim still reports the exit) and start anew.
            self._forget(key)
            return False
        os.close(channel_fd)
        return True

    def _start_instance(self, name: str, trees: list[int], channel_fd: int, install_path: str) -> int:
        """Fork the shim that starts init (``launch.run_shim``); takes ``channel_fd`` over on success.
        Returns the shim's pid.

        ``trees``: the root filesystem, the host tree for /mnt/host, the host tree for interop, the
        shared tmpfs for /mnt/wsl, the VM's host PATH folders (-1: none)."""
        tree, host_tree, interop_tree, shared_tree, folders_tree = trees
        control, control_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            pid_read, pid_write = os.pipe()
        except OSError:
            control.close()
            control_child.close()
            raise
        parameters = init.InitParameters(
            name=name,
            tree_fd=tree,
            host_tree_fd=host_tree,
            channel_fd=channel_fd,
            control_fd=control_child.fileno(),
            networking_mode=self.boot.networking_mode,
            idle_timeout_ms=self.boot.instance_idle_timeout_ms,
            interop_tree_fd=interop_tree,
            install_path=install_path if install_path.startswith("/") else "",
            device_settings=self.boot.devices,
            shared_tree_fd=shared_tree,
            folders_tree_fd=folders_tree,
            host_path=self.boot.host_path,
        )
        try:
            shim = os.fork()
        except OSError:
            _close([pid_read, pid_write])
            control.close()
            control_child.close()
            raise
        if shim == 0:
            forking.become_child(
                [
                    0,
                    1,
                    2,
                    tree,
                    host_tree,
                    interop_tree,
                    shared_tree,
                    folders_tree,
                    channel_fd,
                    control_child.fileno(),
                    pid_write,
                ]
            )
            launch.run_shim(parameters, pid_write)
        os.close(pid_write)
        os.close(channel_fd)
        control_child.close()
        init_pid = forking.read_u32(pid_read)
        os.close(pid_read)
        if init_pid is None:  # the shim reported the failure on the channel itself
            control.close()
            self.workers.other.add(shim)
            return shim
        key = name.casefold()
        instance = Instance(name, init_pid, shim, control)
        self.instances[key] = instance
        self.workers.shims[shim] = key
        self.selector.register(control, selectors.EVENT_READ, instance)
        self.idle_since = None
        log.info("distribution %s started, init pid %d", name, init_pid)
        return shim

    def _forget(self, key: str) -> None:
        instance = self.instances.pop(key, None)
        if instance is not None:
            with suppress(KeyError, ValueError):
                self.selector.unregister(instance.control)
            instance.control.close()

    def _on_instance_control(self, instance: Instance) -> None:
        """A message from an instance's init: an interop connection to pass to the monitor."""
        try:
            data, fds, _flags, _address = socket.recv_fds(instance.control, 16, 1)
        except OSError:
            data, fds = b"", []
        try:
            if not data:
                # init is exiting; its shim's exit will report it.
                with suppress(KeyError, ValueError):
                    self.selector.unregister(instance.control)
            elif data == interop_init.FORWARD_REQUEST and len(fds) == 1:
                self.cloner.forward_interop(fds[0])
        except OSError as error:
            log.warning("cannot pass an interop connection of %s on: %s", instance.name, error)
        finally:
            _close(fds)

    # -- Import / Export ---------------------------------------------------------------------------

    def _start_tar(self, message_type: int, data: bytes, fds: list[int]) -> None:
        """Import / ImportInplace / Export: fork the tar worker. Takes ``fds`` over.

        The target is a directory, or (a real VM) a disk: the worker formats a new one (Import),
        then mounts it; ImportInplace only mounts and validates it."""
        message = MINI_INIT_MESSAGE.parse(data)
        if not _is_socket(fds[1]):
            raise ProtocolError("the result channel is not a stream socket", struct="LX_MINI_INIT_MESSAGE")
        target_fd, result_fd, data_fd, stderr_fd = fds
        fds.clear()
        lun = disks.lun_of(target_fd)
        tree = -1
        try:
            if lun is None:
                if message_type == T.LxMiniInitMessageImportInplace:
                    raise OSError(errno.EINVAL, "an import in place needs a disk")
                tree = self.cloner.clone(target_fd)
            pid = os.fork()
        except OSError as error:
            log.error("cannot start an import/export worker: %s", error)
            _close([tree] if tree >= 0 else [])
            _close([target_fd, data_fd, stderr_fd])
            if lun is not None:
                self.disk_uses.end_now(lun)
            init.send_failure(result_fd, error.errno or errno.EIO, STEP.LxInitCreateInstanceStepMountDisk)
            return
        if pid == 0:
            forking.become_child([0, 1, 2, tree, target_fd, result_fd, data_fd, stderr_fd])
            if lun is not None:
                tree = _disk_tree(target_fd, message, message_type == T.LxMiniInitMessageImport, result_fd)
            job = tar_worker.TarJob(
                tree_fd=tree,
                result_fd=result_fd,
                data_fd=data_fd,
                stderr_fd=stderr_fd,
                flags=int(message.Flags),
                extract=message_type == T.LxMiniInitMessageImport,
            )
            tar_worker.run_export(
                job
            ) if message_type == T.LxMiniInitMessageExport else tar_worker.run_import(job)
        _close([fd for fd in (tree, target_fd, result_fd, data_fd, stderr_fd) if fd >= 0])
        self.workers.tar.add(pid)
        if lun is not None:
            self.disk_uses.hold(pid, lun)
        self.idle_since = None

    def _user_disk(self, message_type: int, data: bytes, fds: list[int]) -> None:
        """Mount (``--mount``; a name "" only attaches) or Detach (``--unmount``) a disk of the user's;
        the outcome (``MountStatus``) goes on the result channel. Takes ``fds`` over."""
        disk_fd, result_fd = fds
        fds.clear()
        lun = disks.lun_of(disk_fd)
        try:
            if lun is None:
                result, step = -errno.ENODEV, int(MOUNT_STEP.LxMiniInitMountStepFindDevice)
            elif message_type == T.LxMiniInitMessageMount:
                message = MOUNT_MESSAGE.parse(data)
                result, step = self.user_disks.mount(
                    disk_fd,
                    lun,
                    int(message.PartitionIndex),
                    message.Type or "",
                    message.TargetName or "",
                    message.Options or "",
                )
            else:
                result, step = self.user_disks.detach(lun)
                self.disk_uses.end_now(lun)  # this message's own use
        finally:
            os.close(disk_fd)
        with suppress(OSError, TimeoutError):
            channel = MessageChannel(socket.socket(fileno=result_fd), name="mount result channel")
            channel.send(MOUNT_RESULT, Result=result, FailureStep=step, timeout=SEND_TIMEOUT)
            channel.close()

    def _start_resize(self, data: bytes, fds: list[int]) -> None:
        """ResizeDistribution: fork a worker that checks and resizes the disk's file system (the
        tools' output on the output descriptor) and answers on the result channel. Takes ``fds``."""
        message = RESIZE_MESSAGE.parse(data)
        disk_fd, result_fd, output_fd = fds
        fds.clear()
        lun = disks.lun_of(disk_fd)
        pid = -1
        try:
            if lun is None or not _is_socket(result_fd):
                raise OSError(errno.EINVAL, "a resize needs a disk and a result channel")
            pid = os.fork()
        except OSError as error:
            log.error("cannot start a resize worker: %s", error)
        if pid == 0:
            forking.become_child([0, 1, 2, disk_fd, result_fd, output_fd])
            code = disks.check_and_resize(disk_fd, int(message.NewSize), output_fd)
            with suppress(OSError, TimeoutError):
                channel = MessageChannel(socket.socket(fileno=result_fd), name="resize channel")
                channel.send(RESIZE_RESPONSE, ResponseCode=code & 0xFFFFFFFF, timeout=SEND_TIMEOUT)
            forking.exit_now(0)
        _close([disk_fd, result_fd, output_fd])
        if pid > 0 and lun is not None:
            self.workers.tar.add(pid)
            self.disk_uses.hold(pid, lun)
        elif lun is not None:
            self.disk_uses.end_now(lun)

    # -- children ----------------------------------------------------------------------------------

    def _reap(self) -> None:
        for pid, _status in forking.reap_children()[0]:
            self.disk_uses.child_ended(pid)
            key = self.workers.shims.pop(pid, None)
            if key is not None:
                self._instance_exited(key, pid)
            self.workers.tar.discard(pid)
            self.workers.other.discard(pid)

    def _instance_exited(self, key: str, shim: int) -> None:
        instance = self.instances.get(key)
        if instance is None or instance.shim_pid != shim:
            return
        self._forget(key)
        log.info("distribution %s stopped", instance.name)
        for connection in list(self.connections.values()):
            if connection.notify:
                try:
                    connection.channel.send(CHILD_EXIT, ChildPid=instance.init_pid, timeout=SEND_TIMEOUT)
                except (OSError, TimeoutError):
                    self._drop(connection)

    # -- shutdown ----------------------------------------------------------------------------------

    def _shutdown(self, force: bool) -> None:
        """Stop every instance (a stop request, or SIGKILL when forced) and exit; the channel closing
        is success. An init that cannot take the request is killed."""
        log.info("shutting down the utility VM%s", " (forced)" if force else "")
        for instance in self.instances.values():
            if not force:
                try:
                    instance.control.send(init.STOP_REQUEST, socket.MSG_DONTWAIT)
                    continue
                except OSError:
                    pass
            with suppress(ProcessLookupError):
                os.kill(instance.init_pid, signal.SIGKILL)
        for pid in self.workers.tar:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if not force:
            deadline = time.monotonic() + SHUTDOWN_GRACE
            while self.workers.shims and time.monotonic() < deadline:
                self._reap()
                time.sleep(0.01)
        self._request_exit(0)


def serve(context: VmContext) -> int:
    """pid 1 of the VM: serve until idle or shut down."""
    return MiniInit(context).serve()


def _warm_up() -> None:
    """Load what is otherwise loaded lazily, while the interpreter's files are still readable.
    (Not the ``idna`` codec: it loads `re` and `enum`, a few milliseconds of every VM start, and
    only a host name that is not ASCII needs it; the guest resolves none.)"""
    for codec in ("utf-8", "ascii", "latin-1"):
        "x".encode(codec)
    time.strftime("%Y")
    time.localtime()


def prepare() -> None:
    """The VM's start up to where its boot arguments matter (`vm_prestart` does this part while
    it waits for them): the log's format, what loads lazily, the host runtime for interop."""
    guest_log.configure(guest_log.INFO, sys.stderr)
    _warm_up()
    interop_init.detect_runtime()
    # No collection first: it takes milliseconds of the VM's start, to free the few hundred
    # objects the imports left (kept frozen instead, a few kilobytes).
    gc.freeze()
    gc.enable()  # off while the modules loaded (`pywsl.guest`)


def boot(arguments: BootArguments, notify_fd: int = -1, *, in_place: bool = False) -> int:
    """Start the VM (after `prepare`); the exit status of this, its host process. `notify_fd`
    (a socket of the host's, taken over) is told b"1" as soon as the VM serves. `in_place`: this
    process becomes the VM's monitor (`vm_monitor.run_here`) and returns when the VM has stopped,
    rather than forking the monitor and returning once the VM serves (`vm_monitor.launch`)."""
    processors.restrict_processors(arguments.processors)
    if in_place:
        return vm_monitor.run_here(arguments, serve, notify_fd)
    return vm_monitor.launch(arguments, serve, notify_fd)


def main(argv: list[str] | None = None) -> int:
    arguments = parse_boot_arguments(sys.argv[1:] if argv is None else argv)
    prepare()
    return boot(arguments)


# Roles forked from this process; imported here so that they are loaded before any namespace change.
__all__ = ["MiniInit", "boot", "main", "mounts", "prepare", "run", "serve"]


def run() -> None:
    """The process's whole life (the host starts ``python -S -P -c`` with a call of this): the
    host waits for its exit, and it leaves without tearing the interpreter down."""
    forking.exit_now(main())


if __name__ == "__main__":
    run()
