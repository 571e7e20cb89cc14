"""Starting a distribution's init: the child mini_init forks for ``LaunchInit``.

WSL's mini_init clones a child into new mount, pid, uts and ipc namespaces that mounts the
distribution and execs its init; failures are reported with ``CreateInstanceResult`` on the init
channel. pywsl's mini_init forks a *shim* that unshares those namespaces and forks init, which
is then pid 1 of the new pid namespace. The shim stays as mini_init's direct child and exits with
init, so that mini_init learns of the exit (``ChildExit``) through its own ``waitpid``.
"""

from __future__ import annotations

import os
import struct

from pywsl.guest import forking, init, syscalls
from pywsl.guest.init import send_failure


def run_shim(parameters: init.InitParameters, pid_write: int) -> None:
    """The forked shim: new namespaces, fork init, report its pid, wait for it. Never returns."""
    syscalls.set_process_name("init-shim")
    try:
        syscalls.unshare(syscalls.CLONE_NEWNS | syscalls.CLONE_NEWPID | syscalls.CLONE_NEWUTS
                         | syscalls.CLONE_NEWIPC)
        pid = os.fork()
    except OSError as error:
        send_failure(parameters.channel_fd, error.errno or 1, init.STEP_LAUNCH_INIT)
        forking.exit_now(1)
        return
    if pid == 0:
        os.close(pid_write)
        init.run(parameters)
        forking.exit_now(1)
    for fd in (parameters.tree_fd, parameters.host_tree_fd, parameters.interop_tree_fd, parameters.channel_fd,
               parameters.control_fd):
        if fd >= 0:
            os.close(fd)
    forking.write_all(pid_write, struct.pack("<I", pid))
    os.close(pid_write)
    forking.exit_now(forking.wait_for(pid))
