"""pid 1 of a real utility VM (``qemu`` backend): ``python -S -m pywsl.guest.vm_pid1``.

The initramfs's ``/init`` mounts ``/proc``, ``/sys``, ``/dev``, the host's ``/usr``, pywsl's
folders and the shared distributions folder, loads the virtio modules, sets up the network and
execs this. It binds mini_init's listening socket (an abstract name), forks the port
demultiplexer (``port_demux``, a process of its own so that copying never waits for Python code
of mini_init), then serves mini_init channels (``vm_mini_init``) until ``ShutdownVm``,
``vmIdleTimeout`` or the demultiplexer's end, and restarts the machine, which QEMU
(``-no-reboot``) turns into its own exit.
"""

from __future__ import annotations

import ctypes
import dataclasses
import gc
import os
import sys
import time

from pywsl.guest import forking, guest_log, interop_init, interop_native, mini_init
from pywsl.guest import lean_signal as signal
from pywsl.guest.port_demux import find_port, run_demux
from pywsl.guest.vm_mini_init import serve
from pywsl.wire import unix_sockets as socket

log = guest_log.getLogger("pywsl.vm_pid1")

LISTEN_ADDRESS = "\0pywsl-mini-init"
SHARE_FOLDER = "/run/pywsl/share"  # + index: the initramfs mounts the host's pywsl folders there
PORT_WAIT = 10.0
LINUX_REBOOT_CMD_RESTART = 0x01234567


def _wait_for_port() -> str:
    deadline = time.monotonic() + PORT_WAIT
    while True:
        port = find_port()
        if port is not None and os.path.exists(port):
            return port
        if time.monotonic() >= deadline:
            raise RuntimeError("the channel port did not appear")
        time.sleep(0.01)


def _restart_machine() -> None:
    """End the VM: with ``-no-reboot`` QEMU exits when the guest restarts."""
    os.sync()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.reboot(LINUX_REBOOT_CMD_RESTART)
    raise OSError(ctypes.get_errno(), "reboot failed")


def _start_demux(port_fd: int) -> socket.socket:
    """Fork the demultiplexer; the returned socket turns readable when it is gone."""
    watch, watch_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    if os.fork() == 0:
        try:
            watch.close()
            signal.signal(signal.SIGPIPE, signal.SIG_IGN)
            run_demux(port_fd, LISTEN_ADDRESS, watch_child)
        except BaseException:
            log.exception("the port demultiplexer failed")
        os._exit(1)
    watch_child.close()
    os.close(port_fd)
    return watch


def _host_path(path: str) -> str:
    """The host's path of ``path`` in one of the shared pywsl folders (``PYWSL_SHARE<n>`` on the
    kernel command line); others (``/usr``) are the same on both sides."""
    for name, host_folder in os.environ.items():
        if name.startswith("PYWSL_SHARE") and name[len("PYWSL_SHARE") :].isdigit():
            folder = SHARE_FOLDER + name[len("PYWSL_SHARE") :]
            if path == folder or path.startswith(folder + "/"):
                return host_folder + path[len(folder) :]
    return path


def _detect_interop_runtime() -> None:
    """The interop launcher's pieces as the host's files (the distributions see them under
    /mnt/host, the host's tree): pywsl's folder by its host path; no native client (it would
    be built in the VM, under emulation, and exist only there)."""
    os.environ[interop_native.DISABLE_ENV] = "0"
    runtime = interop_init.detect_runtime()
    if runtime is not None:
        package = _host_path(runtime.package_parent)
        interop_init._runtime = dataclasses.replace(runtime, package_parent=package)


def run() -> int:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    listener.bind(LISTEN_ADDRESS)
    listener.listen(64)
    port_fd = os.open(_wait_for_port(), os.O_RDWR | os.O_CLOEXEC)
    watch = _start_demux(port_fd)
    log.info("channel port ready %.1f s after the kernel started", time.monotonic())
    mini_init._warm_up()
    _detect_interop_runtime()
    gc.collect()
    gc.freeze()
    return serve(listener, watch)


def main() -> int:
    guest_log.configure(guest_log.INFO, sys.stderr)
    import logging  # for the shared wire modules that log (the port engine), in the same format

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=guest_log.STAMPED_FORMAT)
    try:
        code = run()
    except Exception:
        log.exception("pid 1 failed")
        code = 1
    if os.getpid() == 1:
        forking.reap_children()
        _restart_machine()
    return code


if __name__ == "__main__":
    sys.exit(main())
