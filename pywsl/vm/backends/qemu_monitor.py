"""The host side of a ``qemu`` VM while it runs: ``python -S -m pywsl.vm.backends.qemu_monitor``.

Started by ``QemuBackend.start`` with the QEMU command line after ``--``. It forks; the child
(in a session of its own, so the VM outlives whoever booted it) starts the file servers, then
QEMU as the VM's owner (``--owner``) with its descriptors (``qemu_process``: the kernel, the
initramfs, the log, one end of the channel port's socket pair and of QMP's, the file servers'
sockets), waits up to ``--boot-timeout`` ms for the guest's ``READY`` frame, then
listens on ``mini_init.sock``, writes ``mini_init.pid`` (QEMU's pid, then its own) and tells the
parent, which exits 0. Every connection to ``mini_init.sock`` becomes a channel over the port
(``pywsl.wire.port_mux``). When QEMU exits (the guest powered off, or it was killed) the monitor
removes the socket files and the pid file and exits; QEMU gets SIGKILL if the monitor dies first.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from pywsl import coverage_startup
from pywsl.vm.backends.base import BACKEND_FILE_NAME as BACKEND_FILE_NAME  # named here for qemu.py
from pywsl.vm.backends.base import LOG_NAME, SOCKET_NAME
from pywsl.vm.backends.qemu_bridge import Bridge, MessageCursor, translate
from pywsl.vm.backends.qemu_command import QEMU_FDS
from pywsl.vm.backends.qemu_disks import DiskAttacher
from pywsl.vm.backends.qemu_forwarding import QMP_SOCKET_NAME, PortForwarder
from pywsl.vm.backends.qemu_interop import InteropHost
from pywsl.vm.backends.qemu_process import (
    QemuIdentity,
    copy_to_memory,
    inherited_fd,
    open_as_owner,
    open_as_root,
    owner_identity,
    remove_swap_file,
    spawn_qemu,
    swap_file,
)
from pywsl.vm.backends.qemu_qmp import QmpLink
from pywsl.vm.backends.qemu_shares import (
    HOST_FILES_SOCKET_NAME,
    VIRTIOFSD_SOCKET_NAME,
    DistributionShare,
    start_virtiofsd,
)
from pywsl.vm.errors import VmError
from pywsl.vm.runtime_names import PID_FILE_NAME
from pywsl.wire.errors import ProtocolError
from pywsl.wire.port_engine import READ_SIZE as ENGINE_READ_SIZE
from pywsl.wire.port_engine import Endpoint, PortEngine
from pywsl.wire.port_mux import (
    GUEST_CHANNELS,
    AttachKind,
    Frame,
    FrameKind,
    FrameReader,
    decode_attach,
    decode_names,
    decode_ports,
)

PORT_SOCKET_NAME = "port.sock"
MONITOR_NAME = "pywsl-qemu-vm"
# What the monitor removes when the VM is gone (mini_init.sock first, mini_init.log stays).
# (port.sock and qmp.sock: names of earlier versions, whose leftovers go too)
RUNTIME_FILES = (
    PORT_SOCKET_NAME,
    PID_FILE_NAME,
    BACKEND_FILE_NAME,
    QMP_SOCKET_NAME,
    VIRTIOFSD_SOCKET_NAME,
    HOST_FILES_SOCKET_NAME,
)
QEMU_EXIT_TIMEOUT = 10.0
READ_SIZE = 64 * 1024
PORT_BUFFER = 1024 * 1024
PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
INTEROP_STREAMS = 3  # stdin, stdout, stderr of a host program call
MAX_INTEROP_CALLS = 64  # host program calls at once (each has a worker process on the host)


def _id_map_line(text: str) -> tuple[int, int, int]:
    inside, outside, count = (int(part) for part in text.split(":"))
    return inside, outside, count


def _owner(text: str) -> tuple[int, int]:
    uid, gid = (int(part) for part in text.split(":"))
    return uid, gid


def _prctl(option: int, value: int | bytes) -> None:
    ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)


class BootFailed(Exception):
    pass


class HostPort(PortEngine):
    """The monitor's copying loop: connections to ``mini_init.sock`` are channels; descriptors in
    their messages are translated (``qemu_bridge``); the guest's ``RELEASED`` and ``PORTS`` are
    served here."""

    def __init__(self, port_fd: int, listener: socket.socket, monitor: Monitor) -> None:
        super().__init__(port_fd)
        self.listener = listener
        self.monitor = monitor
        self.bridge = Bridge(self, monitor.share, monitor.disks)
        self.next_channel = 1
        self.extra[listener.fileno()] = self._accept

    def _accept(self) -> None:
        while True:
            try:
                client, _address = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            channel = self.next_channel
            self.next_channel = self.next_channel % 0x7FFFFFFF + 1
            fd = client.detach()
            self.add(Endpoint(channel, fd, fd, is_socket=True, data=MessageCursor()))
            self.send_frame(channel, FrameKind.OPEN)

    def on_local_data(self, endpoint: Endpoint, data: bytes, fds: list[int]) -> None:
        translate(self.bridge, endpoint, data, fds)

    def read_limit(self, endpoint: Endpoint) -> int:
        if isinstance(endpoint.data, MessageCursor):
            return min(ENGINE_READ_SIZE, endpoint.data.until_boundary())
        return ENGINE_READ_SIZE

    def on_frame(self, frame: Frame) -> None:
        if frame.kind is FrameKind.RELEASED and self.monitor.share is not None:
            for name in decode_names(frame.payload):
                self.monitor.share.release(name)
        elif frame.kind is FrameKind.DETACH and self.monitor.disks is not None:
            for name in decode_names(frame.payload):
                if name.isdigit():
                    self.monitor.disks.release(int(name))
        elif frame.kind is FrameKind.PORTS and self.monitor.forwarder is not None:
            self.monitor.forwarder.update(decode_ports(frame.payload))
        elif frame.kind is FrameKind.INTEROP:
            self._interop(frame.channel)
        elif frame.kind is FrameKind.ATTACH:
            self._interop_streams(frame)

    def _interop(self, channel: int) -> None:
        """A channel the guest opened for a host program call: its host end goes to the interop
        server (``qemu_interop``), through a socket pair."""
        calls = sum(isinstance(endpoint.data, InteropChannel) for endpoint in self.endpoints.values())
        if channel < GUEST_CHANNELS or channel in self.endpoints or self.monitor.interop is None:
            self.send_frame(channel, FrameKind.CLOSE)
            return
        if calls >= MAX_INTEROP_CALLS:
            print(f"pywsl: interop: {calls} host programs run already; a call was refused", file=sys.stderr)
            self.send_frame(channel, FrameKind.CLOSE)
            return
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            self.monitor.interop.hand_over(theirs.fileno())
        except OSError as error:
            print(f"pywsl: interop: cannot reach the interop server: {error}", file=sys.stderr)
            ours.close()
            self.send_frame(channel, FrameKind.CLOSE)
            return
        finally:
            theirs.close()
        ours.setblocking(False)
        fd = ours.detach()
        self.add(Endpoint(channel, fd, fd, is_socket=True, data=InteropChannel()))

    def _interop_streams(self, frame: Frame) -> None:
        """The guest's ``ATTACH`` of an interop request: pipes for its stdin, stdout and stderr, passed
        on with the request's first bytes. Nothing else may come from the guest."""
        endpoint = self.endpoints.get(frame.channel)
        call = endpoint.data if endpoint is not None else None
        made: list[int] = []
        try:
            if endpoint is None or not isinstance(call, InteropChannel) or call.attached:
                raise OSError("descriptors for a channel that takes none")
            call.attached = True
            entries = decode_attach(frame.payload)
            if len(entries) != INTEROP_STREAMS:
                raise OSError(f"{len(entries)} descriptors for an interop request")
            for entry in entries:
                if entry.kind not in (AttachKind.PIPE_IN, AttachKind.PIPE_OUT, AttachKind.SAME):
                    raise OSError(f"a {entry.kind.name} descriptor from the guest")
                if entry.kind is not AttachKind.SAME and entry.channel < GUEST_CHANNELS:
                    raise OSError(f"channel {entry.channel} is the host's to open")
                made.append(self.attached_descriptor(entry, made))
        except (OSError, ProtocolError, UnicodeDecodeError) as error:
            print(f"pywsl: interop channel {frame.channel}: {error}", file=sys.stderr)
            for fd in made:
                os.close(fd)
            if endpoint is not None:
                self.close(endpoint, tell_peer=True)
            return
        endpoint.next_fds.extend(made)


class InteropChannel:
    """What the monitor keeps with a channel the guest opened for a host program call."""

    def __init__(self) -> None:
        self.attached = False  # the request's descriptors came (only once)


class Monitor:
    def __init__(self, runtime_dir: Path, qemu_argv: list[str], options: argparse.Namespace) -> None:
        self.runtime_dir = runtime_dir
        self.qemu_argv = qemu_argv
        self.boot_timeout = options.boot_timeout / 1000
        self.options = options
        self.qemu: subprocess.Popen[bytes] | None = None
        self.port: socket.socket | None = None
        self.listener: socket.socket | None = None
        self.reader = FrameReader()
        self.early_frames: list[Frame] = []
        self.share: DistributionShare | None = None
        self.file_servers: list[int] = []
        self.forwarder: PortForwarder | None = None
        self.qmp: QmpLink | None = None
        self.disks: DiskAttacher | None = None
        self.engine: HostPort | None = None
        self.interop: InteropHost | None = None

    # -- boot --------------------------------------------------------------------------------------

    def boot(self, log_fd: int) -> None:
        (self.runtime_dir / BACKEND_FILE_NAME).write_text("qemu\n")
        identity = owner_identity(*self.options.owner)
        fds = self._images(identity)
        self._start_file_servers(identity, log_fd, fds)
        fds[QEMU_FDS["console"]] = log_fd
        if self.options.console_fd is not None:  # debugConsole: QEMU's standard output (qemu_console)
            fds[1] = self.options.console_fd
        if self.options.swap_bytes:
            swap = swap_file(
                self.options.swap_folder, self.options.swap_bytes, self.options.swap_file, identity
            )
            fds[QEMU_FDS["swap"]] = swap
            fds[QEMU_FDS["swap_read"]] = os.open(f"/proc/self/fd/{swap}", os.O_RDONLY | os.O_CLOEXEC)
        self.port, fds[QEMU_FDS["port"]] = self._socket_pair()
        qmp, fds[QEMU_FDS["qmp"]] = self._socket_pair()
        try:
            self.qemu = spawn_qemu(self.qemu_argv, fds, identity, log_fd)
        finally:
            for target, fd in fds.items():
                if target != QEMU_FDS["console"]:
                    os.close(fd)
        self.qmp = QmpLink(qmp)
        self.disks = DiskAttacher(self.qmp)
        if self.options.localhost_forwarding:
            self.forwarder = PortForwarder(self.qmp)
        self.interop = InteropHost(identity.uid, log_fd)
        deadline = time.monotonic() + self.boot_timeout
        self.port.settimeout(max(0.0, deadline - time.monotonic()))
        try:
            self._wait_ready()
        except TimeoutError:
            raise BootFailed(
                f"the guest did not answer within kernelBootTimeout ({self.boot_timeout:.0f} s)"
            ) from None
        self.port.setblocking(False)
        for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            self.port.setsockopt(socket.SOL_SOCKET, option, PORT_BUFFER)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        listener.bind(str(self.runtime_dir / SOCKET_NAME))
        os.chmod(self.runtime_dir / SOCKET_NAME, 0o600)
        listener.listen(64)
        listener.setblocking(False)
        self.listener = listener
        (self.runtime_dir / PID_FILE_NAME).write_text(f"{self.qemu.pid}\n{os.getpid()}\n")

    def _images(self, identity: QemuIdentity) -> dict[int, int]:
        """The kernel (opened as the owner unless it is the host's own) and the initramfs (the
        cache is root's), as sealed memory files."""
        options = self.options
        if options.host_kernel:
            kernel = open_as_root(options.kernel)
        else:
            kernel = open_as_owner(options.kernel, identity)
        fds = {QEMU_FDS["kernel"]: copy_to_memory(kernel, "kernel")}
        try:
            fds[QEMU_FDS["initramfs"]] = copy_to_memory(open_as_root(options.initramfs), "initramfs")
        except BaseException:
            os.close(fds[QEMU_FDS["kernel"]])
            raise
        return fds

    def _start_file_servers(self, identity: QemuIdentity, log_fd: int, fds: dict[int, int]) -> None:
        """virtiofsd for the distributions folder and the host's files; QEMU gets an ``O_PATH``
        descriptor of each socket (which belongs to QEMU's ids)."""
        servers: list[tuple[str, Path | None, str]] = []
        if self.options.distributions:
            self.share = DistributionShare(self.runtime_dir)
            self.share.setup()
            servers.append(("distributions", self.share.folder, VIRTIOFSD_SOCKET_NAME))
        if self.options.host_files:
            servers.append(("host", None, HOST_FILES_SOCKET_NAME))
        for name, folder, socket_name in servers:
            self.file_servers.append(
                start_virtiofsd(
                    self.runtime_dir,
                    folder,
                    self.options.uid_map,
                    self.options.gid_map,
                    log_fd,
                    socket_name,
                    (identity.uid, identity.gid),
                )
            )
            path = self.runtime_dir / socket_name
            fds[QEMU_FDS[name]] = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)

    @staticmethod
    def _socket_pair() -> tuple[socket.socket, int]:
        """The monitor's end, and QEMU's end as a descriptor."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        return ours, theirs.detach()

    def _wait_ready(self) -> None:
        assert self.port is not None
        while True:
            data = self.port.recv(READ_SIZE)
            if not data:
                assert self.qemu is not None
                self.qemu.poll()
                status = "" if self.qemu.returncode is None else f" (status {self.qemu.returncode})"
                raise BootFailed(f"QEMU closed the channel port during the boot{status}")
            frames = self.reader.feed(data)
            if frames and frames[0].kind is FrameKind.READY:
                self.early_frames = frames[1:]
                return
            if frames:
                raise BootFailed("the guest spoke before it was ready")

    # -- serving -----------------------------------------------------------------------------------

    def serve(self) -> None:
        assert self.port is not None and self.listener is not None
        self.engine = HostPort(self.port.fileno(), self.listener, self)
        self.engine.reader = self.reader
        for frame in self.early_frames:
            self.engine.on_frame(frame)
        self.engine.run()

    # -- the end -----------------------------------------------------------------------------------

    def finish(self) -> None:
        """Stop QEMU if it still runs, then the file server, then remove every file of this VM."""
        self._close_connections()
        if self.qemu is not None:
            try:
                self.qemu.wait(QEMU_EXIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.qemu.kill()
                self.qemu.wait()
        for server in self.file_servers:
            _end_process(server)
        if self.share is not None:
            self.share.teardown()
        if self.options.swap_bytes and self.options.swap_file:  # as WSL deletes its swap disk
            remove_swap_file(
                self.options.swap_file, self.options.swap_bytes, owner_identity(*self.options.owner)
            )
        for name in RUNTIME_FILES:
            with contextlib.suppress(FileNotFoundError):
                (self.runtime_dir / name).unlink()

    def _close_connections(self) -> None:
        if self.listener is not None:
            self.listener.close()
        with contextlib.suppress(FileNotFoundError):
            (self.runtime_dir / SOCKET_NAME).unlink()
        if self.engine is not None:
            for endpoint in list(self.engine.endpoints.values()):
                endpoint.close_fds()
        if self.forwarder is not None:
            self.forwarder.close()
        if self.interop is not None:
            self.interop.close()
        if self.port is not None:
            self.port.close()


def _end_process(pid: int) -> None:
    """SIGTERM, then SIGKILL after a bound; reaped."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + QEMU_EXIT_TIMEOUT
    while time.monotonic() < deadline:
        done, _status = os.waitpid(pid, os.WNOHANG)
        if done:
            return
        time.sleep(0.01)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def _stop(monitor: Monitor) -> None:
    if monitor.qemu is not None and monitor.qemu.poll() is None:
        monitor.qemu.kill()
    if monitor.engine is not None:
        monitor.engine.stopping = True


def main(argv: list[str] | None = None) -> int:
    coverage_startup.start()  # only when the test suite measures coverage (-S: no .pth start-up)
    parser = argparse.ArgumentParser(prog="python -m pywsl.vm.backends.qemu_monitor")
    parser.add_argument("--runtime-dir", required=True, type=Path)
    parser.add_argument("--boot-timeout", type=int, default=30000)
    parser.add_argument("--distributions", action="store_true", help="serve the distributions folder")
    parser.add_argument("--uid-map", type=_id_map_line, action="append", default=[])
    parser.add_argument("--gid-map", type=_id_map_line, action="append", default=[])
    parser.add_argument("--localhost-forwarding", action="store_true")
    parser.add_argument("--host-files", action="store_true", help="serve the host's tree for /mnt/host")
    parser.add_argument("--owner", type=_owner, default=(0, 0), help="uid:gid QEMU runs with")
    parser.add_argument("--kernel", required=True)
    parser.add_argument("--host-kernel", action="store_true", help="the kernel is the host's own (root's)")
    parser.add_argument("--initramfs", required=True)
    parser.add_argument("--swap-bytes", type=int, default=0, help="a swap disk of this size")
    parser.add_argument("--swap-folder", type=Path, help="where the swap disk's unnamed file is made")
    parser.add_argument("--swap-file", help="the swap disk's file ([wsl2] swapFile), the owner's")
    parser.add_argument("--console-fd", type=inherited_fd, help="QEMU's standard output (debugConsole)")
    parser.add_argument("qemu_argv", nargs="+")
    options = parser.parse_args(sys.argv[1:] if argv is None else argv)
    ready_read, ready_write = os.pipe()
    if os.fork() != 0:
        os.close(ready_write)
        answer = os.read(ready_read, 1)
        return 0 if answer == b"R" else 1
    os.close(ready_read)
    os.setsid()
    _prctl(PR_SET_NAME, MONITOR_NAME.encode())
    runtime_dir = options.runtime_dir
    monitor = Monitor(runtime_dir, options.qemu_argv, options)
    signal.signal(signal.SIGTERM, lambda *_: _stop(monitor))
    log_fd = os.open(runtime_dir / LOG_NAME, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    os.dup2(log_fd, 2)
    code = 0
    try:
        monitor.boot(log_fd)
        os.write(ready_write, b"R")
        os.close(ready_write)
        ready_write = -1
        monitor.serve()
    except (BootFailed, VmError) as error:
        print(f"pywsl: the utility VM did not start: {error}", file=sys.stderr)
        _stop(monitor)
        code = 1
    except Exception as error:
        print(f"pywsl: the VM monitor failed: {error!r}", file=sys.stderr)
        _stop(monitor)
        code = 1
    finally:
        monitor.finish()
        if ready_write >= 0:
            os.close(ready_write)
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
