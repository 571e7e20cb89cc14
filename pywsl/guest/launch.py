"""Starting a distribution's init: the child mini_init forks for ``LaunchInit``.

WSL's mini_init clones a child into new mount, pid, uts and ipc namespaces that mounts the
distribution and execs its init; failures are reported with ``CreateInstanceResult`` on the init
channel. pywsl's mini_init forks a *shim* that unshares those namespaces and forks init, which
is then pid 1 of the new pid namespace. The shim stays as mini_init's direct child and exits with
init, so that mini_init learns of the exit (``ChildExit``) through its own ``waitpid``.

With ``[boot] systemd=true`` pid 1 becomes systemd and pywsl's init runs beside it (see
``systemd_boot``); systemd ignores SIGKILL from its own namespace, so the shim, outside it, is the
one that ends pid 1 when pywsl's init has gone (the *guard* pipe closing: after a grace period;
``b"K"`` on it: at once). The shim also gives init the VM's cgroup2 root (for systemd's
sub-group) and removes that sub-group once pid 1 is gone.
"""

from __future__ import annotations

import errno
import os
import select
import struct
import time

from pywsl.guest import forking, init, syscalls
from pywsl.guest import lean_signal as signal
from pywsl.guest.init import send_failure
from pywsl.lean_context import suppress

TYPE_CHECKING = False  # the type checker sees dataclasses; `records` gives the same classes cheaply
if TYPE_CHECKING:
    from dataclasses import replace
else:
    from pywsl.records import replace

GUARD_GRACE = 5.0  # pywsl's init gone, pid 1 still there: time for systemd's last stage to end
CGROUP_STAGING = "/tmp"  # where the shim briefly mounts the VM's cgroup2 to get a descriptor of it
CGROUP_REMOVE_TIMEOUT = 5.0


def _open_cgroup_root() -> int:
    """A descriptor of the VM's cgroup2 root (this cgroup namespace's), or -1 when there is none."""
    try:
        syscalls.mount(
            "cgroup2",
            CGROUP_STAGING,
            "cgroup2",
            syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC,
            None,
        )
    except OSError:
        return -1
    try:
        fd = os.open(CGROUP_STAGING, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        fd = -1
    with suppress(OSError):
        syscalls.umount2(CGROUP_STAGING, syscalls.MNT_DETACH)
    if fd >= 0 and not os.access(f"/proc/self/fd/{fd}", os.W_OK):
        os.close(fd)  # not delegated to the VM's root: no sub-group can be made there
        return -1
    return fd


def _remove_group(cgroup_fd: int, name: str) -> None:
    """Remove the instance's sub-group and what systemd made below it, deepest first (bounded)."""
    try:
        top = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=cgroup_fd)
    except OSError:
        return
    deadline = time.monotonic() + CGROUP_REMOVE_TIMEOUT
    try:
        for _folder, dirs, _files, folder_fd in os.fwalk(".", topdown=False, dir_fd=top):
            for child in dirs:
                _rmdir(child, folder_fd, deadline)
    finally:
        os.close(top)
    _rmdir(name, cgroup_fd, deadline)


def _rmdir(name: str, dir_fd: int, deadline: float) -> None:
    while True:
        try:
            os.rmdir(name, dir_fd=dir_fd)
            return
        except FileNotFoundError:
            return
        except OSError as error:
            if error.errno != errno.EBUSY or time.monotonic() > deadline:
                return
            time.sleep(0.02)


def _watch(pid: int, guard_read: int) -> int:
    """Wait for pid 1 of the instance; end it when init's guard asks (or closes). Its exit code."""
    pidfd = os.pidfd_open(pid)
    kill_at: float | None = None
    try:
        while True:
            timeout = None if kill_at is None else max(0.0, kill_at - time.monotonic())
            ready, _, _ = select.select([pidfd] + ([guard_read] if guard_read >= 0 else []), [], [], timeout)
            if pidfd in ready:
                return forking.wait_for(pid)
            if guard_read in ready:
                data = b""
                with suppress(OSError):
                    data = os.read(guard_read, 16)
                if not data or b"K" in data:
                    os.close(guard_read)
                    guard_read = -1
                    kill_at = time.monotonic() + (0.0 if b"K" in data else GUARD_GRACE)
            if kill_at is not None and time.monotonic() >= kill_at:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                kill_at = None
    finally:
        os.close(pidfd)
        if guard_read >= 0:
            os.close(guard_read)


def run_shim(parameters: init.InitParameters, pid_write: int) -> None:
    """The forked shim: new namespaces, fork init, report its pid, wait for it. Never returns."""
    syscalls.set_process_name("init-shim")
    try:
        syscalls.unshare(
            syscalls.CLONE_NEWNS | syscalls.CLONE_NEWPID | syscalls.CLONE_NEWUTS | syscalls.CLONE_NEWIPC
        )
        cgroup_fd = _open_cgroup_root()
        guard_read, guard_write = os.pipe2(os.O_CLOEXEC)
        parameters = replace(
            parameters, guard_fd=guard_write, cgroup_fd=cgroup_fd, cgroup_name=f"instance-{os.getpid()}"
        )
        pid = os.fork()
    except OSError as error:
        send_failure(parameters.channel_fd, error.errno or 1, init.STEP_LAUNCH_INIT)
        forking.exit_now(1)
        return
    if pid == 0:
        os.close(pid_write)
        os.close(guard_read)
        init.run(parameters)
        forking.exit_now(1)
    for fd in (
        parameters.tree_fd,
        parameters.host_tree_fd,
        parameters.interop_tree_fd,
        parameters.shared_tree_fd,
        parameters.folders_tree_fd,
        parameters.channel_fd,
        parameters.control_fd,
        guard_write,
    ):
        if fd >= 0:
            os.close(fd)
    forking.write_all(pid_write, struct.pack("<I", pid))
    os.close(pid_write)
    code = _watch(pid, guard_read)
    if cgroup_fd >= 0:
        _remove_group(cgroup_fd, parameters.cgroup_name)
        os.close(cgroup_fd)
    forking.exit_now(code)
