"""Root's launch, without the session stack: `pywsl -d D -- cmd` at the interpreter's speed.

`UserSession.create_lx_process` serves every caller of the library: it recovers the registry under
its lock, reads `.wslconfig` when the VM must boot, checks a distribution's folder against the
user's trusted folders, relays terminals and captures pipes. What a script's `pywsl -d D -- cmd`
needs of it, as root with a running VM and no terminal, is much less, and loading the rest
(`pathlib`, `typing`, `enum`, `socket`, `json`...) cost such a launch more than the VM's work. So
that launch is done here, with the same steps, the same messages and the same results:

* the registration (`registry_snapshot`: read without the lock, a plainly usable entry only);
* its root filesystem, opened as `RootfsFolders.open_rootfs` opens it, but stricter: no component
  of the path may be a link (not even above the user's folders), `rootfs` on the folder's device;
* the request (`launch_request.process_request`, as the session builds it) on the caller's own
  descriptors 0, 1 and 2, plus a control and an exit channel, as `LxProcess` prepares them;
* when no VM runs, the boot as `UserSession._boot` does it (`cold_start.boot_vm`: `.wslconfig`,
  `CoreVm.boot`, the boot's warnings first);
* the VM's side (`pywsl.vm.quick_launch`): `LaunchInit`, `Initialize`, `CreateSession`,
  `CreateProcessUtilityVm`;
* the wait as `LxProcess.wait` does it: SIGINT, SIGTERM, SIGHUP and SIGQUIT forwarded
  (`SignalProcess`), the `ExitStatus` echoed.

`launch` returns None, having run nothing, whenever that shape does not fit: not root, a standard
stream that is a terminal or closed, a display in the environment (GUI sockets need `.wslconfig`),
a VM to boot with another backend than namespaces, an entry that is not plainly usable, a link in
the folder's path, or a VM that stopped or refused on the way. The caller then takes the full
path, which handles all of those.
"""

from __future__ import annotations

import os
import sys

from pywsl.api.process.launch_request import process_request
from pywsl.api.process.quick_process import QuickProcess, plain_streams
from pywsl.api.session.gui_share import GUI_VARIABLES
from pywsl.api.session.path_rules import data_folder, runtime_folder
from pywsl.api.session.registry_snapshot import read_registration
from pywsl.vm import quick_launch as vm_launch
from pywsl.vm.timezone import host_timezone
from pywsl.wire.launch_link import socket_pair

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from pywsl.api.session.registry_snapshot import LaunchRegistration
    from pywsl.vm.process_request import ProcessRequest

__all__ = ["launch"]

_WALK_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def launch(
    distribution: str | None,
    command_line: Sequence[str],
    *,
    filename: str | None,
    cwd: str,
    username: str,
    environ: Mapping[str, str],
) -> QuickProcess | None:
    """Start the process (shell mode when `filename` is None) in `distribution` (None: the default
    one) on this process's std streams; None when the full path must do it (nothing ran)."""
    if sys.platform != "linux" or os.geteuid() != 0 or any(environ.get(name) for name in GUI_VARIABLES):
        return None
    if not plain_streams():
        return None
    home = environ.get("HOME", "")
    if not os.path.isabs(home):  # `$HOME` wins when it is absolute (`path_rules.home_folder`)
        import pwd

        home = pwd.getpwuid(0).pw_dir
    registration = read_registration(data_folder(home, environ), distribution)
    if registration is None:
        return None
    rootfs = _open_rootfs(registration.base_path)
    if rootfs is None:
        return None
    try:
        request = _request(registration, command_line, filename, cwd, username, environ)
        if request is None:
            return None
        return _start(registration, request, rootfs, environ)
    finally:
        os.close(rootfs)


def _request(
    registration: LaunchRegistration,
    command_line: Sequence[str],
    filename: str | None,
    cwd: str,
    username: str,
    environ: Mapping[str, str],
) -> ProcessRequest | None:
    """The request, as the session builds it; None for arguments it refuses (the full path
    reports them in its error context, `CreateLxProcess`)."""
    try:
        return process_request(
            command_line,
            filename=filename,
            cwd=cwd,
            username=username,
            login=False,
            environment=None,
            wslenv_source=environ,
            console=(False, False, False),
            rows=0,
            columns=0,
            default_environment=registration.default_environment,
            default_uid=registration.default_uid,
        )
    except Exception as error:
        from pywsl.api.errors import WslError

        if isinstance(error, WslError):
            return None
        raise


def _boot(environ: Mapping[str, str]) -> list[str] | None:
    """No VM runs: boot it here (`cold_start.boot_vm`), or None for the full path to."""
    from pywsl.api.session.cold_start import boot_vm

    return boot_vm(environ)


def _start(
    registration: LaunchRegistration, request: ProcessRequest, rootfs: int, environ: Mapping[str, str]
) -> QuickProcess | None:
    control, relay_control = socket_pair()
    exit_end, relay_exit = socket_pair()
    try:
        started = vm_launch.launch(
            runtime_folder(0),
            request,
            name=registration.name,
            rootfs=rootfs,
            hostname=os.uname().nodename,
            timezone=host_timezone() or "",
            stdio=(0, 1, 2),
            control_fd=relay_control.fileno(),
            exit_fd=relay_exit.fileno(),
            start_timeout=vm_launch.DEFAULT_DISTRIBUTION_START_TIMEOUT_MS / 1000,
            prestart_vm=True,  # a cold launch: the VM's interpreter loads while this one does
            boot=lambda: _boot(environ),
        )
    except BaseException:
        control.close()
        exit_end.close()
        raise
    finally:
        relay_control.close()
        relay_exit.close()
    if started is None:
        control.close()
        exit_end.close()
        return None
    if (started.flavor or "", started.version or "") != (registration.flavor, registration.os_version):
        _store_release(registration, started.flavor or "", started.version or "")
    return QuickProcess(control, exit_end, started.warnings, registration.name)


def _open_rootfs(base_path: str) -> int | None:
    """`base_path/rootfs` as an O_PATH descriptor, reached from `/` without any link and on the
    folder's device; None when that does not hold (the full path then decides)."""
    parts = [part for part in os.path.normpath(base_path).split("/") if part]
    fd = os.open("/", _WALK_FLAGS)
    try:
        for name in [*parts, "rootfs"]:
            parent = fd
            fd = os.open(name, _WALK_FLAGS, dir_fd=parent)
            if name == "rootfs" and os.fstat(fd).st_dev != os.fstat(parent).st_dev:
                os.close(parent)
                os.close(fd)
                return None
            os.close(parent)
    except OSError:
        os.close(fd)
        return None
    return fd


def _store_release(registration: LaunchRegistration, flavor: str, version: str) -> None:
    """Flavor and OsVersion changed in the distribution (as `UserSession._launch` stores them)."""
    if not (flavor or version):
        return
    import contextlib
    import uuid

    from pywsl.api.errors import WslError
    from pywsl.api.session.registrations import update_registration
    from pywsl.api.session.registry import Registration, RegistryData
    from pywsl.api.session.user_session import UserSession

    def store(entry: Registration, _: RegistryData) -> None:
        entry.flavor, entry.os_version = flavor, version

    with contextlib.suppress(WslError):
        update_registration(UserSession().registry, uuid.UUID(registration.guid), store)
