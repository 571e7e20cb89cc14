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
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from pywsl.vm.backends.base import LOG_NAME, SOCKET_NAME
from pywsl.wire.errors import ProtocolError
from pywsl.wire.port_mux import MAX_PAYLOAD, FrameKind, FrameReader, encode_frame

PID_FILE_NAME = "mini_init.pid"
PORT_SOCKET_NAME = "port.sock"
BACKEND_FILE_NAME = "qemu.vm"  # present while a qemu VM (or what it left) is in the runtime folder
MONITOR_NAME = "pywsl-qemu-vm"
QEMU_EXIT_TIMEOUT = 10.0
READ_SIZE = 64 * 1024
PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15


def _prctl(option: int, value: int | bytes) -> None:
    ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)


def _die_with_parent() -> None:
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class BootFailed(Exception):
    pass


class Monitor:
    def __init__(self, runtime_dir: Path, qemu_argv: list[str], boot_timeout: float) -> None:
        self.runtime_dir = runtime_dir
        self.qemu_argv = qemu_argv
        self.boot_timeout = boot_timeout
        self.qemu: subprocess.Popen[bytes] | None = None
        self.port: socket.socket | None = None
        self.listener: socket.socket | None = None
        self.reader = FrameReader()
        self.selector = selectors.DefaultSelector()
        self.clients: dict[int, socket.socket] = {}
        self.next_channel = 1
        self.stopping = False

    # -- boot --------------------------------------------------------------------------------------

    def boot(self, log_fd: int) -> None:
        (self.runtime_dir / BACKEND_FILE_NAME).write_text("qemu\n")
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
            while True:
                data = self.port.recv(READ_SIZE)
                if not data:
                    raise BootFailed("QEMU closed the channel port during the boot")
                frames = self.reader.feed(data)
                if frames and frames[0].kind is FrameKind.READY:
                    break
                if frames:
                    raise BootFailed("the guest spoke before it was ready")
        except TimeoutError:
            raise BootFailed(
                f"the guest did not answer within kernelBootTimeout ({self.boot_timeout:.0f} s)"
            ) from None
        self.port.settimeout(None)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        listener.bind(str(self.runtime_dir / SOCKET_NAME))
        os.chmod(self.runtime_dir / SOCKET_NAME, 0o600)
        listener.listen(64)
        self.listener = listener
        (self.runtime_dir / PID_FILE_NAME).write_text(f"{self.qemu.pid}\n{os.getpid()}\n")

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
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ, "listener")
        self.selector.register(self.port, selectors.EVENT_READ, "port")
        while not self.stopping:
            for key, _events in self.selector.select():
                if key.data == "listener":
                    self._accept()
                elif key.data == "port":
                    if not self._from_port():
                        return
                else:
                    self._from_client(key.data)

    def _send(self, channel: int, kind: FrameKind, payload: bytes = b"") -> None:
        assert self.port is not None
        self.port.sendall(encode_frame(channel, kind, payload))

    def _accept(self) -> None:
        assert self.listener is not None
        while True:
            try:
                client, _address = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            client.setblocking(True)
            channel = self.next_channel
            self.next_channel = self.next_channel % 0xFFFFFFFF + 1
            self.clients[channel] = client
            self.selector.register(client, selectors.EVENT_READ, channel)
            self._send(channel, FrameKind.OPEN)

    def _from_port(self) -> bool:
        assert self.port is not None
        try:
            data = self.port.recv(READ_SIZE)
            frames = self.reader.feed(data) if data else None
        except (OSError, ProtocolError) as error:
            print(f"channel port failed: {error}", file=sys.stderr)
            return False
        if frames is None:
            return False
        for frame in frames:
            client = self.clients.get(frame.channel)
            if client is None:
                continue
            if frame.kind is FrameKind.DATA:
                try:
                    client.sendall(frame.payload)
                except OSError:
                    self._close(frame.channel, tell_guest=True)
            elif frame.kind is FrameKind.CLOSE:
                self._close(frame.channel, tell_guest=False)
        return True

    def _from_client(self, channel: int) -> None:
        client = self.clients.get(channel)
        if client is None:
            return
        try:
            data = client.recv(min(READ_SIZE, MAX_PAYLOAD))
        except OSError:
            data = b""
        if data:
            self._send(channel, FrameKind.DATA, data)
        else:
            self._close(channel, tell_guest=True)

    def _close(self, channel: int, *, tell_guest: bool) -> None:
        client = self.clients.pop(channel, None)
        if client is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(client)
            client.close()
        if tell_guest:
            self._send(channel, FrameKind.CLOSE)

    # -- the end -----------------------------------------------------------------------------------

    def finish(self) -> None:
        """Stop QEMU if it still runs, then remove every file of this VM."""
        if self.listener is not None:
            self.listener.close()
        with contextlib.suppress(FileNotFoundError):
            (self.runtime_dir / SOCKET_NAME).unlink()
        for client in self.clients.values():
            client.close()
        if self.port is not None:
            self.port.close()
        if self.qemu is not None:
            try:
                self.qemu.wait(QEMU_EXIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.qemu.kill()
                self.qemu.wait()
        for name in (PORT_SOCKET_NAME, PID_FILE_NAME, BACKEND_FILE_NAME):
            with contextlib.suppress(FileNotFoundError):
                (self.runtime_dir / name).unlink()


def _stop(monitor: Monitor) -> None:
    if monitor.qemu is not None and monitor.qemu.poll() is None:
        monitor.qemu.kill()
    monitor.stopping = True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pywsl.vm.backends.qemu_monitor")
    parser.add_argument("--runtime-dir", required=True, type=Path)
    parser.add_argument("--boot-timeout", type=int, default=30000)
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
    monitor = Monitor(runtime_dir, options.qemu_argv, options.boot_timeout / 1000)
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
