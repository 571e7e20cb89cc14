"""The host side of a ``qemu`` VM while it runs: ``python -S -m pywsl.vm.backends.qemu_monitor``.

Started by ``QemuBackend.start`` with the QEMU command line after ``--``. It forks; the child
(in a session of its own, so the VM outlives whoever booted it) starts QEMU, connects to the
channel port's socket, waits up to ``--boot-timeout`` ms for the guest's ``READY`` frame, then
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

from pywsl.vm.backends.base import BACKEND_FILE_NAME as BACKEND_FILE_NAME  # named here for qemu.py
from pywsl.vm.backends.base import LOG_NAME, SOCKET_NAME
from pywsl.vm.backends.qemu_bridge import Bridge, MessageCursor, translate
from pywsl.vm.backends.qemu_forwarding import QMP_SOCKET_NAME, PortForwarder
from pywsl.vm.backends.qemu_shares import (
    HOST_FILES_SOCKET_NAME,
    VIRTIOFSD_SOCKET_NAME,
    DistributionShare,
    start_virtiofsd,
)
from pywsl.wire.port_engine import READ_SIZE as ENGINE_READ_SIZE
from pywsl.wire.port_engine import Endpoint, PortEngine
from pywsl.wire.port_mux import Frame, FrameKind, FrameReader, decode_names, decode_ports

PID_FILE_NAME = "mini_init.pid"
PORT_SOCKET_NAME = "port.sock"
MONITOR_NAME = "pywsl-qemu-vm"
# What the monitor removes when the VM is gone (mini_init.sock first, mini_init.log stays).
RUNTIME_FILES = (
    PORT_SOCKET_NAME,
    PID_FILE_NAME,
    BACKEND_FILE_NAME,
    QMP_SOCKET_NAME,
    VIRTIOFSD_SOCKET_NAME,
    HOST_FILES_SOCKET_NAME,
)
# What the monitor removes when the VM is gone (mini_init.sock first, mini_init.log stays).
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


def _id_map_line(text: str) -> tuple[int, int, int]:
    inside, outside, count = (int(part) for part in text.split(":"))
    return inside, outside, count


def _prctl(option: int, value: int | bytes) -> None:
    ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)


def _die_with_parent() -> None:
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


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
        self.bridge = Bridge(self, monitor.share)
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
        elif frame.kind is FrameKind.PORTS and self.monitor.forwarder is not None:
            self.monitor.forwarder.update(decode_ports(frame.payload))


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
        self.engine: HostPort | None = None

    # -- boot --------------------------------------------------------------------------------------

    def boot(self, log_fd: int) -> None:
        (self.runtime_dir / BACKEND_FILE_NAME).write_text("qemu\n")
        if self.options.distributions:
            self.share = DistributionShare(self.runtime_dir)
            self.share.setup()
            self.file_servers.append(
                start_virtiofsd(
                    self.runtime_dir, self.share.folder, self.options.uid_map, self.options.gid_map, log_fd
                )
            )
        if self.options.host_files:
            self.file_servers.append(
                start_virtiofsd(
                    self.runtime_dir,
                    None,
                    self.options.uid_map,
                    self.options.gid_map,
                    log_fd,
                    HOST_FILES_SOCKET_NAME,
                )
            )
        self.qemu = subprocess.Popen(
            self.qemu_argv,
            stdin=subprocess.DEVNULL,
            stdout=log_fd,
            stderr=log_fd,
            preexec_fn=_die_with_parent,
            cwd="/",
        )
        deadline = time.monotonic() + self.boot_timeout
        self.port = self._connect_port(deadline)
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
        if self.options.localhost_forwarding:
            self.forwarder = PortForwarder(self.runtime_dir / QMP_SOCKET_NAME)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        listener.bind(str(self.runtime_dir / SOCKET_NAME))
        os.chmod(self.runtime_dir / SOCKET_NAME, 0o600)
        listener.listen(64)
        listener.setblocking(False)
        self.listener = listener
        (self.runtime_dir / PID_FILE_NAME).write_text(f"{self.qemu.pid}\n{os.getpid()}\n")

    def _wait_ready(self) -> None:
        assert self.port is not None
        while True:
            data = self.port.recv(READ_SIZE)
            if not data:
                raise BootFailed("QEMU closed the channel port during the boot")
            frames = self.reader.feed(data)
            if frames and frames[0].kind is FrameKind.READY:
                self.early_frames = frames[1:]
                return
            if frames:
                raise BootFailed("the guest spoke before it was ready")

    def _connect_port(self, deadline: float) -> socket.socket:
        assert self.qemu is not None
        path = str(self.runtime_dir / PORT_SOCKET_NAME)
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            try:
                sock.connect(path)
                return sock
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
            if self.qemu.poll() is not None:
                raise BootFailed(f"QEMU exited during the boot (status {self.qemu.returncode})")
            if time.monotonic() >= deadline:
                raise BootFailed("QEMU did not open the channel port")
            time.sleep(0.01)

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
    parser = argparse.ArgumentParser(prog="python -m pywsl.vm.backends.qemu_monitor")
    parser.add_argument("--runtime-dir", required=True, type=Path)
    parser.add_argument("--boot-timeout", type=int, default=30000)
    parser.add_argument("--distributions", action="store_true", help="serve the distributions folder")
    parser.add_argument("--uid-map", type=_id_map_line, action="append", default=[])
    parser.add_argument("--gid-map", type=_id_map_line, action="append", default=[])
    parser.add_argument("--localhost-forwarding", action="store_true")
    parser.add_argument("--host-files", action="store_true", help="serve the host's tree for /mnt/host")
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
    except BootFailed as error:
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
