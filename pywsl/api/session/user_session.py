"""`UserSession`: WSL's `ILxssUserSession` (`LxssUserSessionImpl`) for one Linux user.

One object per user, as the service's factory keeps one impl per SID. It owns nothing a crash could
lose: registrations live in the user's registry file (`registry.py`), running distributions in the
VM's guest processes, which any host process attaches to (`pywsl.vm.CoreVm`). The methods are the
`ILxssUserSession` methods that mean something on a Linux host, with Pythonic names; each docstring
names the WSL method. Disk-image methods exist too and say that the namespaces backend cannot do
them.

For the calling user (`UserSession()`) the session runs in-process; root's service creates
`UserSession(uid=N)` for a client and then touches that user's files with the user's credentials
(`credentials.acting_as`), as WSL impersonates the caller.

The methods check their arguments, take the registry's locks and delegate the work: finding and
changing registrations (`registrations.py`), the user's VM (`user_vm.py`), a distribution's folder
and root filesystem (`rootfs_folder.py`), an import (`distribution_import.py`), the request of a
new process (`launch_request.py`) and what the session reports (`distribution_info.py`).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pywsl.api.credentials import UserIdentity, makedirs_as
from pywsl.api.errors import WslError, error_context, not_supported_by_backend
from pywsl.api.files.rootfs_folder import FOLDER_MODE, RootfsFolders, export_compression
from pywsl.api.process.launch_request import process_request
from pywsl.api.session import user_vm, user_warnings
from pywsl.api.session.paths import UserPaths, user_paths
from pywsl.api.session.registrations import Distro, check_unique, lookup, update_registration
from pywsl.api.session.registry import (
    FLAG_VM_MODE,
    FLAGS_ALL,
    FLAGS_UNCHANGED,
    LX_UID_INVALID,
    DistributionState,
    Registration,
    Registry,
    RegistryData,
    default_environment,
    validate_name,
)

if TYPE_CHECKING:
    from pywsl.api.files.transfer import Progress, Source
    from pywsl.api.process.lx_process import LxProcess
    from pywsl.api.session.disk_verbs import DiskVerbs
    from pywsl.api.session.distribution_disks import DistributionDisks
    from pywsl.api.session.distribution_info import DistributionConfiguration, DistributionInfo
    from pywsl.api.session.wslconfig import WslConfig
    from pywsl.vm import CoreInstance, CoreVm, ProcessRequest, VmConfig
    from pywsl.vm.disk_image import DiskImage

__all__ = ["Distro", "Source", "UserSession"]


def __getattr__(name: str) -> Any:
    """`Source` (the type of an archive source, `pywsl.api.files.transfer`), loaded on first use:
    the launch path does not import the transfer module."""
    if name != "Source":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from pywsl.api.files.transfer import Source

    return Source


TERMINATE_WAIT_SECONDS = 10.0


class UserSession:
    """The `ILxssUserSession` of one user (the calling user by default; any uid for root)."""

    def __init__(self, uid: int | None = None, *, environ: Mapping[str, str] | None = None) -> None:
        caller = os.geteuid()
        if uid is None or uid == caller:
            self.identity = UserIdentity.current()
            self._environ: Mapping[str, str] | None = os.environ if environ is None else environ
        else:
            if caller != 0:
                raise WslError("E_ACCESSDENIED", "Only root can open the session of another user.")
            if not isinstance(uid, int) or isinstance(uid, bool) or not 0 <= uid < 0xFFFFFFFF:
                raise WslError("E_INVALIDARG", f"Invalid uid {uid!r}.")
            self.identity = UserIdentity.for_uid(uid)
            self._environ = None
        self.paths: UserPaths = user_paths(self.identity.uid, self.identity.home, self._environ)
        self.folders = RootfsFolders(self.identity, self._trusted_folders)
        self.registry = Registry(self.paths.data_dir, self.identity, remove_files=self.folders.remove_files)
        self._vm_lock = threading.Lock()
        self._config_cache: tuple[tuple[int, ...], WslConfig] | None = None

    def __repr__(self) -> str:
        return f"UserSession(uid={self.identity.uid})"

    def close(self) -> None:
        """Nothing to release: every call attaches to the VM and detaches again."""

    def __enter__(self) -> UserSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- configuration ---------------------------------------------------------------------

    def config(self) -> WslConfig:
        """The user's global configuration (read again on every call, as WSL reads .wslconfig
        whenever it creates the VM)."""
        from pywsl.api.session.wslconfig import load_wslconfig

        return load_wslconfig(self.paths.config_file, self.identity, home=self.paths.home)

    def _current_config(self) -> WslConfig:
        """`config()` for the settings a running VM's launches read (the install folder, GUI
        apps): parsed again only when the file changed (its identity, size and times, looked up
        with the user's rights), so that a warm launch and a long-lived service do not parse an
        unchanged file again."""
        key = self._config_key()
        cached = self._config_cache
        if cached is not None and key is not None and cached[0] == key:
            return cached[1]
        config = self.config()
        self._config_cache = (key, config) if key is not None else None
        return config

    def _config_key(self) -> tuple[int, ...] | None:
        """What tells the configuration file's versions apart; None when it cannot be looked up."""
        from pywsl.api.credentials import acting_as

        try:
            with acting_as(self.identity):
                info = os.stat(self.paths.config_file)
        except FileNotFoundError:
            return (0,)
        except OSError:
            return None
        return (1, info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)

    def vm_config(self, config: WslConfig | None = None) -> VmConfig:
        """The `VmConfig` of this user's VM."""
        return user_vm.vm_config(self.identity, self.paths.runtime_dir, config or self.config())

    def _install_root(self, config: WslConfig) -> Path:
        return config.distribution_install_path or self.paths.data_dir

    def _trusted_folders(self) -> list[Path]:
        """The folders a distribution's folder may be reached from through links (its anchors)."""
        return [self._install_root(self._current_config()), self.paths.data_dir, self.paths.home]

    # -- the VM ------------------------------------------------------------------------------

    def _attach(self) -> CoreVm | None:
        """The running VM, or None."""
        return user_vm.attach(self.paths.runtime_dir)

    def _boot(self) -> CoreVm:
        """`_CreateVm`: the running VM (used as it is, as WSL does: .wslconfig is read only when
        the VM is created), or a new one."""
        self._require_root("Starting the utility VM")
        running = self._attach()
        if running is not None:
            return running
        config = self.config()
        with self._vm_lock:
            vm = user_vm.boot(self.identity, self.paths.runtime_dir, config)
        if vm.booted:
            for warning in config.startup_warnings():
                user_warnings.emit(warning)
            if config.backend == "qemu":  # the user's disks, attached again after an idle stop
                for warning in self._disk_verbs.reattach(vm):
                    user_warnings.emit(warning)
        return vm

    _require_root = staticmethod(user_vm.require_root)

    @contextlib.contextmanager
    def _vm(self) -> Iterator[CoreVm]:
        vm = self._boot()
        try:
            yield vm
        finally:
            vm.close()

    def _running(self) -> dict[str, int]:
        """Running distributions (casefolded name → init pid); empty when no VM runs."""
        return user_vm.running_instances(self.paths.runtime_dir)

    # -- registry helpers --------------------------------------------------------------------

    def _recover(self) -> None:
        self.registry.recover()

    def _resolve(self, distro: Distro, *, list_all: bool = False) -> Registration:
        self._recover()
        with self.registry.transaction(create=False) as data:
            return lookup(data, distro, list_all=list_all)

    def _ensure_installed(self, registration: Registration) -> None:
        if registration.state is not DistributionState.INSTALLED:
            raise WslError("E_ILLEGAL_STATE_CHANGE")

    def _ensure_not_locked(self, registration: Registration) -> None:
        """`_EnsureNotLocked`: no install, export, move or uninstall in progress."""
        if self.registry.active_operation(registration.id) is not None:
            raise WslError("E_ILLEGAL_STATE_CHANGE")

    _check_unique = staticmethod(check_unique)  # `_ValidateDistributionNameAndPathNotInUse`

    def _update(
        self, distro_id: uuid.UUID, change: Callable[[Registration, RegistryData], None]
    ) -> Registration:
        return update_registration(self.registry, distro_id, change)

    # -- ILxssUserSession --------------------------------------------------------------------

    def create_instance(self, distro: Distro = None) -> None:
        """`CreateInstance`: start the distribution (the default one for None) and wait until its
        init is ready. A running one is left as it is."""
        with error_context("CreateInstance"):
            registration = self._startable(distro)
            with self._vm() as vm:
                instance = self._launch(vm, registration)
                instance.close()

    def _startable(self, distro: Distro) -> Registration:
        """The registration, checked before anything is started: Installed and not locked."""
        registration = self._resolve(distro)
        self._ensure_installed(registration)
        self._ensure_not_locked(registration)
        return registration

    def _launch(self, vm: CoreVm, registration: Registration) -> CoreInstance:
        """`_CreateInstance`: LaunchInit (or attach) + Initialize; refreshes Flavor/OsVersion."""
        self._ensure_not_locked(registration)  # again: an export may have started meanwhile
        instance = self._launch_init(vm, registration)
        self._instance_reached(registration, instance.warnings, instance.flavor, instance.version)
        return instance

    def _instance_reached(
        self, registration: Registration, warnings: list[str], flavor: str | None, version: str | None
    ) -> None:
        """init's warnings to the user (it sends them to the host that started it only), and the
        distribution's Flavor and OsVersion stored when they changed."""
        for warning in warnings:
            user_warnings.emit(warning)
        flavor, version = flavor or "", version or ""
        if (flavor, version) != (registration.flavor, registration.os_version) and (flavor or version):

            def store(entry: Registration, _: RegistryData) -> None:
                entry.flavor, entry.os_version = flavor, version

            with contextlib.suppress(WslError):
                self._update(registration.id, store)

    def _launch_init(self, vm: CoreVm, registration: Registration) -> CoreInstance:
        """LaunchInit (or attach to the running init) with the root filesystem as a descriptor."""
        with self._rootfs_for_vm(registration) as rootfs:
            return vm.launch_instance(
                registration.name, rootfs, default_uid=registration.default_uid, hostname=socket.gethostname()
            )

    def _rootfs_for_vm(self, registration: Registration) -> AbstractContextManager[int | DiskImage]:
        """The root filesystem opened for the VM without following links: `base_path/rootfs`
        (`RootfsFolders.open_rootfs`), or the distribution's disk image (`DistributionDisks`)."""
        if registration.on_disk:
            return self._disks().disk_for_vm(registration)
        return self.folders.open_rootfs(registration.base_path)

    def _disks(self) -> DistributionDisks:
        from pywsl.api.files.disk_files import DiskFiles  # not on the launch path of a folder
        from pywsl.api.session.distribution_disks import DistributionDisks

        return DistributionDisks(DiskFiles(self.folders), self.paths.runtime_dir)

    def register_distribution(
        self,
        name: str | None,
        source: Source,
        *,
        location: str | os.PathLike[str] | None = None,
        version: int = 2,
        run_oobe: bool = False,
        progress: Progress | None = None,
        vhd: bool = False,
        vhd_size: int | None = None,
        fixed_vhd: bool = False,
    ) -> DistributionInfo:
        """`RegisterDistribution` / `RegisterDistributionPipe`: import a root filesystem archive.

        `source` is a path, a binary file object, a descriptor or a pipe holding a tar, tar.gz,
        tar.xz, tar.bz2 or tar.zst. `name` None takes the image's `oobe.defaultName`. `location`
        is the distribution's folder (default `<distributionInstallPath>/<guid>`); it is created
        with the folders that lead to it (WSL's `CreateDirectoryDeep`), or an existing folder of
        the user's is made, mode 0700, so that no other host user reaches the root filesystem; a
        failed import removes the folder only if it created it. `progress` is called with the
        number of archive bytes read so far.
        """
        with error_context("RegisterDistro"):
            if version == 0:
                version = 2
            if version == 1:
                raise WslError("WSL_E_WSL1_NOT_SUPPORTED")
            if version != 2:
                raise WslError("E_INVALIDARG", f"Invalid WSL version {version}.")
            if name is not None:
                validate_name(name)
            self._require_root("Importing a distribution")
            self._recover()
            config = self.config()
            on_disk = config.backend == "qemu"
            if vhd and not on_disk:
                not_supported_by_backend("Importing a VHD")
            disk_size = _new_disk_size(config, vhd_size, fixed_vhd, vhd=vhd, on_disk=on_disk)
            distro_id = uuid.uuid4()
            if location is not None:
                base_path = Path(os.path.abspath(os.fspath(location)))
            else:
                base_path = self._install_root(config) / str(distro_id)
                makedirs_as(self.identity, base_path.parent, FOLDER_MODE)
            self.folders.ensure_no_rootfs(base_path)
            lock = self.registry.acquire_operation(distro_id, DistributionState.INSTALLING)
            with lock:
                registration = Registration(
                    id=distro_id,
                    name=name or "",
                    base_path=base_path,
                    run_oobe=run_oobe,
                    default_environment=default_environment(),
                    vhd_file_name=_disk_name(source, vhd) if on_disk else "",
                    sparse=bool(config.values.get("experimental.sparseVhd", False)),
                )
                with self.registry.transaction() as data:
                    self._check_unique(data, name, base_path)
                    data.distributions[distro_id] = registration
                from pywsl.api.session.distribution_import import (
                    DistributionImporter,  # not on the launch path
                )

                importer = DistributionImporter(
                    self.registry,
                    self.folders,
                    vm_config=self.vm_config,
                    open_vm=self._vm,
                    disk_size=disk_size,
                    fixed_size=fixed_vhd,
                )
                return importer.run(registration, source, progress, vhd=vhd)

    def get_distribution_id(self, name: str, *, list_all: bool = False) -> uuid.UUID:
        """`GetDistributionId`: case-insensitive lookup; `list_all` also finds distributions that
        are being installed or uninstalled."""
        with error_context("GetDistroId"):
            if not isinstance(name, str) or not name:
                raise WslError("E_INVALIDARG", "The distribution name is empty.")
            return self._resolve(name, list_all=list_all).id

    def terminate_distribution(self, distro: Distro = None) -> None:
        """`TerminateDistribution`: stop the distribution at once; succeeds when it is not running."""
        with error_context("TerminateDistro"):
            registration = self._resolve(distro, list_all=True)
            self._terminate(registration)

    def _terminate(self, registration: Registration) -> None:
        """`_TerminateInstanceInternal`: TerminateInstance{Force} through an init channel, then wait
        until the VM no longer lists the instance (so that a listing right after shows it stopped)."""
        key = registration.name.casefold()
        if not key or key not in self._running():
            return
        self._require_root("Terminating a distribution")
        vm = self._attach()
        if vm is None:
            return
        try:
            if key not in vm.running_instances():
                return
            instance = self._launch_init(vm, registration)
            try:
                instance.terminate(force=True)
            finally:
                instance.close()
            deadline = time.monotonic() + TERMINATE_WAIT_SECONDS
            while key in vm.running_instances() and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            vm.close()

    def unregister_distribution(self, distro: Distro) -> None:
        """`UnregisterDistribution`: terminate, mark Uninstalling, move the default, delete the files
        (the root filesystem, then the distribution's folder when it is left empty, as WSL's
        `_DeleteDistribution`), delete the entry. An interruption is completed by the next session
        that opens the registry.
        Files root must not delete for the user (owned by neither the user nor the VM's ids, on
        another file system, or a `rootfs` that is not the one made for the distribution) are left
        in place and named in the error (E_ACCESSDENIED); the entry stays Uninstalling, and the
        first call after they are gone completes it (`RootfsFolders.remove_rootfs`)."""
        with error_context("UnregisterDistro"):
            if distro is None:
                raise WslError("E_INVALIDARG", "No distribution given.")
            registration = self._resolve(distro, list_all=True)
            lock = self.registry.acquire_operation(registration.id, DistributionState.UNINSTALLING)
            with lock:
                self._terminate(registration)

                def mark(entry: Registration, data: RegistryData) -> None:
                    entry.state = DistributionState.UNINSTALLING
                    data.fix_default()

                registration = self._update(registration.id, mark)
                self.folders.remove_files(registration)
                with self.registry.transaction() as data:
                    data.distributions.pop(registration.id, None)
                    data.fix_default()

    def configure_distribution(
        self, distro: Distro, *, default_uid: int | None = None, flags: int | None = None
    ) -> None:
        """`ConfigureDistribution`: set the default uid and/or the flags (`VM_MODE` stays as it is);
        the distribution is terminated if anything changed."""
        with error_context("ConfigureDistro"):
            _check_default_uid(default_uid)
            if (
                flags is not None
                and flags != FLAGS_UNCHANGED
                and (isinstance(flags, bool) or not isinstance(flags, int) or flags & ~FLAGS_ALL or flags < 0)
            ):
                raise WslError("E_INVALIDARG", f"Invalid distribution flags {flags!r}.")
            registration = self._resolve(distro)
            self._ensure_installed(registration)
            self._ensure_not_locked(registration)
            changed = [False]

            def apply(entry: Registration, _: RegistryData) -> None:
                new_uid = entry.default_uid if default_uid is None else default_uid
                new_flags = entry.flags
                if flags is not None and flags != FLAGS_UNCHANGED:
                    new_flags = (flags & ~FLAG_VM_MODE) | (entry.flags & FLAG_VM_MODE)
                changed[0] = (new_uid, new_flags) != (entry.default_uid, entry.flags)
                entry.default_uid, entry.flags = new_uid, new_flags

            registration = self._update(registration.id, apply)
            if changed[0]:
                self._terminate(registration)

    def complete_oobe(self, distro: Distro, default_uid: int | None = None) -> None:
        """What WSL does on a successful `OobeResult`: clear RunOOBE and store the default uid
        (when the distribution's setup named one)."""
        with error_context("ConfigureDistro"):
            _check_default_uid(default_uid)
            registration = self._resolve(distro)

            def apply(entry: Registration, _: RegistryData) -> None:
                entry.run_oobe = False
                if default_uid is not None:
                    entry.default_uid = default_uid

            self._update(registration.id, apply)

    def get_distribution_configuration(self, distro: Distro = None) -> DistributionConfiguration:
        """`GetDistributionConfiguration` (its Version is the filesystem version)."""
        with error_context("GetDistroConfiguration"):
            from pywsl.api.session.distribution_info import distribution_configuration

            return distribution_configuration(self._resolve(distro))

    def get_default_distribution(self) -> uuid.UUID:
        """`GetDefaultDistribution`: WSL_E_DEFAULT_DISTRO_NOT_FOUND when there is none."""
        with error_context("GetDefaultDistro"):
            return self._resolve(None).id

    def set_default_distribution(self, distro: Distro) -> None:
        """`SetDefaultDistribution`: the distribution must be installed."""
        with error_context("SetDefaultDistro"):
            if distro is None:
                raise WslError("E_INVALIDARG", "No distribution given.")
            self._recover()
            with self.registry.transaction() as data:
                registration = lookup(data, distro)
                if registration.state is not DistributionState.INSTALLED:
                    raise WslError("WSL_E_DISTRO_NOT_FOUND")
                data.default_distribution = registration.id

    def enumerate_distributions(self) -> list[DistributionInfo]:
        """`EnumerateDistributions`: every registration, with the live state (Running from the VM,
        Installing/Exporting/... from the operations in progress)."""
        from pywsl.api.session.distribution_info import distribution_info

        with error_context("EnumerateDistros"):
            self._recover()
            with self.registry.transaction(create=False) as data:
                data.fix_default()
                registrations = list(data.distributions.values())
                default = data.default_distribution
            running = self._running() if registrations else {}
            result = []
            for registration in registrations:
                state = registration.state
                if registration.name and registration.name.casefold() in running:
                    state = DistributionState.RUNNING
                elif state is DistributionState.INSTALLED:
                    state = self.registry.active_operation(registration.id) or state
                result.append(distribution_info(registration, state, default))
            return result

    def create_lx_process(
        self,
        distro: Distro = None,
        command_line: Sequence[str] = (),
        *,
        filename: str | None = None,
        cwd: str = "",
        username: str = "",
        login: bool = False,
        stdin: Any = None,
        stdout: Any = None,
        stderr: Any = None,
        environment: Mapping[str, str] | None = None,
        wslenv_source: Mapping[str, str] | None = None,
    ) -> LxProcess:
        """`CreateLxProcess`: run a process in the distribution (started if needed).

        `filename` None is shell mode: the user's shell runs `-c "<command_line joined by spaces>"`,
        or interactively when `command_line` is empty (`login` makes it a login shell). With a
        `filename`, `command_line` is the whole argv. stdio: None = this process's own stdin,
        stdout, stderr; `subprocess.PIPE` for a pipe end on the returned `LxProcess`;
        `subprocess.DEVNULL`; `stderr=subprocess.STDOUT`; or a file object or descriptor. The
        environment is the registration's default environment, TERM from the caller when a stream
        is a terminal, the variables `WSLENV` names (from `wslenv_source`, by default this
        process's environment), then `environment`.
        """
        from pywsl.api.process.lx_process import LxProcess, PreparedStdio

        source = (self._environ or {}) if wslenv_source is None else wslenv_source
        arguments = list(command_line)

        def launch(prepared: PreparedStdio) -> int:
            return self.launch_lx_process(
                distro,
                arguments,
                filename=filename,
                cwd=cwd,
                username=username,
                login=login,
                environment=environment,
                wslenv_source=source,
                stdin=prepared.relay_stdio[0],
                stdout=prepared.relay_stdio[1],
                stderr=prepared.relay_stdio[2],
                control_fd=prepared.relay_control_fd,
                exit_fd=prepared.relay_exit_fd,
                console=prepared.console,
                rows=prepared.rows,
                columns=prepared.columns,
            )

        try:
            return LxProcess.start(
                launch,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                args=[filename] if filename and not arguments else arguments,
            )
        except (TypeError, ValueError) as error:
            raise WslError("E_INVALIDARG", str(error), context="Wsl/Service/CreateLxProcess") from None

    def launch_lx_process(
        self,
        distro: Distro = None,
        command_line: Sequence[str] = (),
        *,
        filename: str | None = None,
        cwd: str = "",
        username: str = "",
        login: bool = False,
        environment: Mapping[str, str] | None = None,
        wslenv_source: Mapping[str, str] | None = None,
        stdin: int,
        stdout: int,
        stderr: int,
        control_fd: int,
        exit_fd: int,
        console: tuple[bool, bool, bool] = (False, False, False),
        rows: int = 0,
        columns: int = 0,
    ) -> int:
        """The service half of `CreateLxProcess`: the client has prepared its stdio (terminals are
        relayed through sockets) and its control and exit sockets; this starts the instance if
        needed, sends `CreateProcessUtilityVm` and returns the relay's pid."""
        with error_context("CreateInstance"):
            registration = self._startable(distro)
        with error_context("CreateLxProcess"):
            request = self._process_request(
                registration,
                command_line,
                filename=filename,
                cwd=cwd,
                username=username,
                login=login,
                environment=environment,
                wslenv_source=wslenv_source or {},
                console=console,
                rows=rows,
                columns=columns,
            )
            gui = self._gui_environment(wslenv_source or {})
            if gui is not None:
                request = request._replace(host_environment=gui)
        if not registration.on_disk:
            relay = self._quick_start(registration, request, (stdin, stdout, stderr), control_fd, exit_fd)
            if relay is not None:
                return relay
        with self._vm() as vm:
            with error_context("CreateInstance"):
                instance = self._launch(vm, registration)
            try:
                with error_context("CreateLxProcess"):
                    return instance.create_process(request, (stdin, stdout, stderr), control_fd, exit_fd)
            finally:
                instance.close()

    def _quick_start(
        self,
        registration: Registration,
        request: ProcessRequest,
        stdio: tuple[int, int, int],
        control_fd: int,
        exit_fd: int,
    ) -> int | None:
        """The process started in the running VM with every request sent at once
        (`pywsl.vm.quick_launch`); the relay's pid, or None when the VM must be booted or the
        instance started anew (nothing ran: `_vm` and `_launch` then do it, as for a boot)."""
        from pywsl.vm import quick_launch
        from pywsl.vm.timezone import host_timezone

        with error_context("CreateInstance"):
            self._ensure_not_locked(registration)
            with self.folders.open_rootfs(registration.base_path) as rootfs:
                try:
                    started = quick_launch.launch(
                        str(self.paths.runtime_dir),
                        request,
                        name=registration.name,
                        rootfs=rootfs,
                        hostname=socket.gethostname(),
                        timezone=host_timezone() or "",
                        stdio=stdio,
                        control_fd=control_fd,
                        exit_fd=exit_fd,
                        start_timeout=quick_launch.DEFAULT_DISTRIBUTION_START_TIMEOUT_MS / 1000,
                    )
                except PermissionError:
                    return None  # the VM's socket is root's: `_vm` says so
        if started is None:
            return None
        self._instance_reached(registration, started.warnings, started.flavor, started.version)
        return started.relay_pid

    def _gui_environment(self, source: Mapping[str, str]) -> tuple[str, ...] | None:
        """The caller's own display sockets for GUI apps (`gui_share`), when `.wslconfig` allows
        them; None when the caller has no display (the configuration is then not consulted)."""
        from pywsl.api.session.gui_share import GUI_VARIABLES, gui_host_environment

        if not any(source.get(name) for name in GUI_VARIABLES) or not self._current_config().gui_applications:
            return None
        return tuple(gui_host_environment(source, self.identity.uid, str(self.identity.home)))

    @staticmethod
    def _process_request(
        registration: Registration,
        command_line: Sequence[str],
        *,
        filename: str | None,
        cwd: str,
        username: str,
        login: bool,
        environment: Mapping[str, str] | None,
        wslenv_source: Mapping[str, str],
        console: tuple[bool, bool, bool],
        rows: int,
        columns: int,
    ) -> ProcessRequest:
        """`ParseArguments` + the environment block of a new process (`launch_request`)."""
        return process_request(
            command_line,
            filename=filename,
            cwd=cwd,
            username=username,
            login=login,
            environment=environment,
            wslenv_source=wslenv_source,
            console=console,
            rows=rows,
            columns=columns,
            default_environment=registration.default_environment,
            default_uid=registration.default_uid,
        )

    def export_distribution(
        self, distro: Distro, target: Source, *, format: str = "tar", progress: Progress | None = None
    ) -> None:
        """`ExportDistribution` / `ExportDistributionPipe`: write the root filesystem as a tar,
        tar.gz or tar.xz to a path, file object, descriptor or pipe. A file created for the export
        is removed again if it fails. `progress` is called with the bytes written so far."""
        with error_context("ExportDistro"):
            registration = self._resolve(distro)
            as_vhd = isinstance(format, str) and format.lower() in ("vhd", "vhdx")
            compression = "" if as_vhd and registration.on_disk else export_compression(format)
            self._ensure_installed(registration)
            self._require_root("Exporting a distribution")
            lock = self.registry.acquire_operation(registration.id, DistributionState.EXPORTING)
            with lock:
                if as_vhd:
                    self._export_vhd(registration, target, progress)
                else:  # the rootfs folder, or the distribution's disk
                    self.folders.export_rootfs(
                        registration.base_path,
                        target,
                        compression,
                        progress,
                        self._vm,
                        open_root=lambda: self._rootfs_for_vm(registration),
                    )

    def _export_vhd(self, registration: Registration, target: Source, progress: Progress | None) -> None:
        """`--export --vhd`: the distribution (stopped first) as a VHDX, or a VHD by the target's name."""
        from pywsl.api.files.transfer import open_export_target

        self._terminate(registration)
        name = os.fspath(target) if isinstance(target, str | os.PathLike) else None
        with open_export_target(target, self.identity, progress=progress) as output:
            self._disks().export_vhd(registration, output.fd, name)

    def move_distribution(self, distro: Distro, location: str | os.PathLike[str]) -> None:
        """`MoveDistribution`: move the root filesystem to the folder `location` (created with the
        folders that lead to it, as WSL's `create_directories`, or made, mode 0700). The
        distribution must be stopped; a failure leaves it where it was."""
        with error_context("MoveDistro"):
            if not os.path.isabs(os.fspath(location)):
                raise WslError("E_INVALIDARG", "The new location must be an absolute path.")
            target = Path(os.path.normpath(os.fspath(location)))
            registration = self._resolve(distro)
            self._ensure_installed(registration)
            if registration.name.casefold() in self._running():
                raise WslError("WSL_E_DISTRO_NOT_STOPPED")
            if registration.on_disk:
                raise WslError("E_INVALIDARG", "Moving a distribution on a disk image is not supported.")
            lock = self.registry.acquire_operation(registration.id, DistributionState.CONVERTING)
            with lock:
                with self._rootfs_for_vm(registration):
                    pass
                with self.registry.transaction() as data:
                    self._check_unique(data, None, target, exclude=registration.id)
                    data.distributions[registration.id].move_target = target  # for crash recovery
                created = False
                try:
                    created = self.folders.make_folder(target)
                    self._move_rootfs(registration, target)
                except BaseException:
                    if created:
                        self.folders.remove_empty_folder(target)

                    def forget(entry: Registration, _: RegistryData) -> None:
                        entry.move_target = None

                    self._update(registration.id, forget)
                    raise

                def relocate(entry: Registration, _: RegistryData) -> None:
                    entry.base_path, entry.created_base_path, entry.move_target = target, False, None

                self._update(registration.id, relocate)
                if registration.created_base_path:
                    self.folders.remove_empty_folder(registration.base_path)

    def _move_rootfs(self, registration: Registration, target: Path) -> None:
        """A rename into `target`, or across file systems a copy through the VM (needs root)."""
        if self.folders.rename_rootfs(registration.base_path, target):
            return
        self._require_root("Moving a distribution to another file system")
        config = self.vm_config()
        self.folders.move_through_vm(registration.base_path, target, config.uid_map, config.gid_map, self._vm)

    def shutdown(self, force: bool = False) -> None:
        """`Shutdown`: stop every distribution and the VM (`force` kills at once)."""
        vm = self._attach()
        if vm is None:
            return
        try:
            vm.shutdown(force=force)
        finally:
            vm.close()

    def set_version(self, distro: Distro, version: int) -> None:
        """`SetVersion`: only WSL2 exists here."""
        with error_context("SetVersion"):
            self._resolve(distro)
            if version == 2:
                raise WslError("WSL_E_VM_MODE_INVALID_STATE")
            if version == 1:
                raise WslError("WSL_E_WSL1_NOT_SUPPORTED")
            raise WslError("E_INVALIDARG", f"Invalid WSL version {version}.")

    # -- disk images: not with a directory root filesystem -----------------------------------

    # -- disk images (the qemu backend): `disk_verbs` --------------------------------------------

    @property
    def _disk_verbs(self) -> DiskVerbs:
        from pywsl.api.session.disk_verbs import DiskVerbs  # not on the launch path

        return DiskVerbs(self)

    def set_sparse(self, distro: Distro, sparse: bool, *, allow_unsafe: bool = False) -> None:
        """`SetSparse` (`DiskVerbs.set_sparse`)."""
        self._disk_verbs.set_sparse(distro, sparse, allow_unsafe=allow_unsafe)

    def resize_distribution(self, distro: Distro, new_size: int, *, output: Any = None) -> None:
        """`ResizeDistribution` (`DiskVerbs.resize_distribution`)."""
        self._disk_verbs.resize_distribution(distro, new_size, output=output)

    def import_distribution_inplace(self, name: str, vhd_path: str | os.PathLike[str]) -> uuid.UUID:
        """`ImportDistributionInplace` (`DiskVerbs.import_distribution_inplace`)."""
        return self._disk_verbs.import_distribution_inplace(name, vhd_path)

    def attach_disk(self, disk: str, *, vhd: bool = False) -> None:
        """`AttachDisk` (`DiskVerbs.attach_disk`)."""
        self._disk_verbs.attach_disk(disk, vhd=vhd)

    def detach_disk(self, disk: str | None = None) -> None:
        """`DetachDisk` (`DiskVerbs.detach_disk`)."""
        self._disk_verbs.detach_disk(disk)

    def mount_disk(
        self,
        disk: str,
        *,
        vhd: bool = False,
        partition: int = 0,
        name: str | None = None,
        fs_type: str | None = None,
        options: str | None = None,
    ) -> str:
        """`MountDisk` (`DiskVerbs.mount_disk`)."""
        return self._disk_verbs.mount_disk(
            disk, vhd=vhd, partition=partition, name=name, fs_type=fs_type, options=options
        )


def _new_disk_size(config: WslConfig, size: int | None, fixed: bool, *, vhd: bool, on_disk: bool) -> int:
    """The size of a new distribution's disk: `size` (`--vhd-size`), else `[wsl2] defaultVhdSize`
    (WSL's 1 TB). As in WSL, a fixed size needs a size and excludes importing a VHD."""
    if size is not None or fixed:
        if not on_disk:
            not_supported_by_backend("--vhd-size" if size is not None else "--fixed-vhd")
        if fixed and size is None:
            raise WslError("E_INVALIDARG", "The argument '--fixed-vhd' is not valid without '--vhd-size'.")
        if vhd:
            raise WslError("E_INVALIDARG", "A disk size cannot be given for an imported VHD.")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
            raise WslError("E_INVALIDARG", f"Invalid disk size {size!r}.")
    return size or int(config.values.get("wsl2.defaultVhdSize") or 1 << 40)


def _disk_name(source: Source, vhd: bool) -> str:
    """The file name of a new distribution's disk: `ext4.img`, or an imported VHD's own name (WSL
    keeps the source's name; one read from a pipe is `ext4.vhdx`)."""
    from pywsl.api.files.disk_files import NEW_DISK_NAME, image_name_for_import

    if not vhd:
        return NEW_DISK_NAME
    if isinstance(source, str | os.PathLike):
        return image_name_for_import(os.fspath(source))
    name: object = getattr(source, "name", None)
    if isinstance(source, int) or not isinstance(name, str):
        fd = source if isinstance(source, int) else getattr(source, "fileno", lambda: -1)()
        name = ""
        with contextlib.suppress(OSError):
            name = os.readlink(f"/proc/self/fd/{fd}")
    assert isinstance(name, str)
    return image_name_for_import(name) if name.lower().endswith((".vhd", ".vhdx")) else "ext4.vhdx"


def _check_default_uid(default_uid: int | None) -> None:
    """A default uid argument: None (unchanged) or a uid below `LX_UID_INVALID`."""
    if default_uid is not None and (
        isinstance(default_uid, bool)
        or not isinstance(default_uid, int)
        or not 0 <= default_uid < LX_UID_INVALID
    ):
        raise WslError("E_INVALIDARG", f"Invalid default uid {default_uid!r}.")
