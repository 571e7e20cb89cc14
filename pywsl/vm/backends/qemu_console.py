"""``[wsl2] debugConsole`` of a ``qemu`` VM: the guest console on the terminal that booted it.

WSL shows the VM's console in a window of its own while the VM runs. Here, when the process that
boots the VM is the VM's owner and its standard error is a terminal (the command line run as root
booting root's own VM), QEMU's standard output is a pipe to this relay
(``python -S -m pywsl.vm.backends.qemu_console``), started in a session of its own with the pipe
as its standard input and the terminal, opened anew for writing only, as its standard output.
QEMU still writes the console to ``mini_init.log`` too (the chardev's ``logfile``).

The relay never reads the terminal and is no process of the terminal's session: the terminal's
hang-up sends it no signal, and a stopped terminal (Ctrl-S) holds the console back only once the
pipe's 1 MiB is full. When the terminal goes away (it hangs up: its window or its login closed)
the relay closes it at once, so the VM keeps no descriptor of it, and goes on draining the pipe;
the console then goes to the log only. It exits when QEMU exits (end of file on the pipe);
``--runtime-dir`` only names its VM in the process list.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import subprocess
import sys
from pathlib import Path

__all__ = ["relay", "start_relay", "terminal_for_console"]

READ_SIZE = 64 * 1024
PIPE_SIZE = 1024 * 1024
RELAY_START_TIMEOUT = 30.0
_F_SETPIPE_SZ = 1031


def terminal_for_console(owner_uid: int) -> int | None:
    """This process's standard error opened anew for writing only (its own file, so nothing QEMU
    or the relay sets on it changes the caller's), when it is a terminal and this process is the
    VM's owner; None otherwise (the console then goes to the log only)."""
    if os.geteuid() != owner_uid or not os.isatty(2):
        return None
    try:
        return os.open("/proc/self/fd/2", os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return None


def start_relay(terminal: int, runtime_dir: Path, python_path: str) -> int:
    """Start the relay onto ``terminal`` (closed here) and return the pipe's writing end, for
    QEMU's standard output. The relay leaves its first process at once (which is reaped here), so
    the booting process has no child left behind."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    with contextlib.suppress(OSError):
        fcntl.fcntl(write_end, _F_SETPIPE_SZ, PIPE_SIZE)
    try:
        first = subprocess.Popen(
            [sys.executable, "-S", "-m", "pywsl.vm.backends.qemu_console", "--runtime-dir", str(runtime_dir)],
            stdin=read_end,
            stdout=terminal,
            stderr=subprocess.DEVNULL,
            cwd="/",
            env={"PYTHONPATH": python_path, "LANG": "C.UTF-8"},
            start_new_session=True,
        )
    except BaseException:
        os.close(write_end)
        raise
    finally:
        os.close(read_end)
        os.close(terminal)
    try:
        first.wait(RELAY_START_TIMEOUT)
    except subprocess.TimeoutExpired:
        first.kill()
        first.wait()
    return write_end


def _write(terminal: int, data: bytes) -> bool:
    """All of ``data`` to the terminal; False when it failed (the terminal is gone)."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(terminal, view) :]
        except InterruptedError:
            continue
        except OSError:
            return False
    return True


def relay(source: int, terminal: int) -> None:
    """Copy ``source`` to ``terminal`` until end of file. A terminal that hangs up (or whose writes
    fail) is closed at once; what comes after it is read and dropped."""
    poller = select.poll()
    poller.register(source, select.POLLIN)
    poller.register(terminal, 0)  # its hang-up and errors only
    while True:
        for fd, _events in poller.poll():
            if fd == terminal:
                poller.unregister(terminal)
                os.close(terminal)
                terminal = -1
                continue
            data = os.read(source, READ_SIZE)
            if not data:
                return
            if terminal >= 0 and not _write(terminal, data):
                poller.unregister(terminal)
                os.close(terminal)
                terminal = -1


def main() -> int:
    if os.fork() != 0:  # the booting process reaps this one; the relay goes on in the child
        os._exit(0)
    relay(0, 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
