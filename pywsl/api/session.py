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
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO

from pywsl.api.credentials import (
    UserIdentity,
    acting_as,
    makedirs_as,
    open_directory_as,
    remove_tree,
    rename_tree,
)
from pywsl.api.errors import WslError, error_context, not_supported_by_backend
from pywsl.api.paths import UserPaths, user_paths
from pywsl.api.registry import (
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
from pywsl.api.transfer import Progress, StderrCollector, open_archive_source, open_export_target
from pywsl.api.wslconfig import WslConfig, load_wslconfig

if TYPE_CHECKING:
    from pywsl.api.process import LxProcess
    from pywsl.vm import CoreInstance, CoreVm, ImportOutcome, ProcessRequest, VmConfig

__all__ = [
    "DistributionConfiguration",
    "DistributionInfo",
    "DistributionState",
    "UserSession",
    "parse_wslenv",
]

Distro = str | uuid.UUID | None
Source = str | os.PathLike[str] | BinaryIO | IO[bytes] | int

TERMINATE_WAIT_SECONDS = 10.0
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
EXPORT_FORMATS = {"tar": "", "tar.gz": "gzip", "tgz": "gzip", "tar.xz": "xz", "txz": "xz"}


@dataclass(frozen=True)
class DistributionInfo:
    """One row of `EnumerateDistributions` (`LXSS_ENUMERATE_INFO` plus the registry values)."""

    id: uuid.UUID
    name: str
    state: DistributionState
    version: int                # WSL version (2)
    is_default: bool
    flavor: str
    os_version: str
    base_path: Path
    default_uid: int
    run_oobe: bool


@dataclass(frozen=True)
class DistributionConfiguration:
    """What `GetDistributionConfiguration` returns."""

    id: uuid.UUID
    name: str
    version: int                # filesystem version (2), not the WSL version
    default_uid: int
    flags: int
    default_environment: list[str] = field(default_factory=list)
    base_path: Path = Path("/")


def parse_wslenv(value: str) -> list[str]:
    """The variable names `WSLENV` shares with Linux (`NAME`, `NAME/p`, ...; `/w`-only ones excluded).

    The flags translate Windows paths in WSL; host paths are Linux paths already, so `/p` and `/l`
    change nothing here. `/w` alone means "from Linux to Windows only" and is left out.
    """
    names: list[str] = []
    for item in value.split(":"):
        name, _, flags = item.partition("/")
        if not name or "=" in name or "\0" in name:
            continue
        if "w" in flags and "u" not in flags:
            continue
        if name not in names:
            names.append(name)
    return names


def _info(registration: Registration, state: DistributionState,
          default: uuid.UUID | None) -> DistributionInfo:
    return DistributionInfo(
        id=registration.id,
        name=registration.name,
        state=state,
        version=registration.wsl_version,
        is_default=registration.id == default,
        flavor=registration.flavor,
        os_version=registration.os_version,
        base_path=registration.base_path,
        default_uid=registration.default_uid,
        run_oobe=registration.run_oobe,
    )


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
        self.registry = Registry(self.paths.data_dir, self.identity, remove_files=self._remove_files)
        self._vm_lock = threading.Lock()

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
        return load_wslconfig(self.paths.config_file, self.identity, home=self.paths.home)

    def vm_config(self, config: WslConfig | None = None) -> VmConfig:
        """The `VmConfig` of this user's VM."""
        from pywsl.vm import VmConfig
        from pywsl.vm.idmap import IdMapError, maps_for_owner

        config = config or self.config()
        try:
            uid_map, gid_map = maps_for_owner(self.identity.uid, self.identity.gid)
        except IdMapError as error:
            raise WslError("E_ACCESSDENIED", str(error)) from None
        return VmConfig(
            owner_uid=self.identity.uid,
            owner_gid=self.identity.gid,
            runtime_dir=self.paths.runtime_dir,
            uid_map=uid_map,
            gid_map=gid_map,
            networking_mode=config.networking_mode,
            hostname=socket.gethostname(),
            memory_bytes=config.effective_memory_bytes(),
            processors=config.processors,
            vm_idle_timeout_ms=config.vm_idle_timeout_ms,
            instance_idle_timeout_ms=config.instance_idle_timeout_ms,
            kernel_boot_timeout_ms=config.kernel_boot_timeout_ms,
            distribution_start_timeout_ms=config.distribution_start_timeout_ms,
        )

    def _install_root(self, config: WslConfig) -> Path:
        return config.distribution_install_path or self.paths.data_dir

    # -- the VM ------------------------------------------------------------------------------

    def _attach(self) -> CoreVm | None:
        """The running VM, or None."""
        from pywsl.vm import CoreVm

        try:
            return CoreVm.attach(self.paths.runtime_dir)
        except PermissionError:
            self._require_root("Reaching the utility VM")
            raise

    def _boot(self) -> CoreVm:
        """`_CreateVm`: the running VM, or a new one."""
        from pywsl.vm import CoreVm

        self._require_root("Starting the utility VM")
        config = self.vm_config()
        with self._vm_lock, error_context("CreateVm"):
            return CoreVm.boot(config)

    def _require_root(self, what: str) -> None:
        if os.geteuid() != 0:
            raise WslError("E_ACCESSDENIED", f"{what} needs root: use the pywsl service "
                           "(pywsl.connect()) or run as root.")

    @contextlib.contextmanager
    def _vm(self) -> Iterator[CoreVm]:
        vm = self._boot()
        try:
            yield vm
        finally:
            vm.close()

    def _running(self) -> dict[str, int]:
        """Running distributions (casefolded name → init pid); empty when no VM runs."""
        try:
            vm = self._attach()
        except (OSError, WslError):
            return {}
        if vm is None:
            return {}
        try:
            return vm.running_instances()
        finally:
            vm.close()

    # -- registry helpers --------------------------------------------------------------------

    def _recover(self) -> None:
        self.registry.recover()

    def _remove_files(self, registration: Registration) -> None:
        """Delete a distribution's root filesystem, and its folder if pywsl created it."""
        remove_tree(self.identity, registration.base_path, "rootfs")
        if registration.created_base_path:
            with acting_as(self.identity), contextlib.suppress(FileNotFoundError):
                try:
                    os.rmdir(registration.base_path)
                except OSError as error:
                    if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                        raise

    @staticmethod
    def _lookup(data: RegistryData, distro: Distro, *, list_all: bool = False) -> Registration:
        """`OpenOrDefault`: a registration by name, GUID or the default."""
        if distro is None:
            data.fix_default()
            if data.default_distribution is None:
                raise WslError("WSL_E_DEFAULT_DISTRO_NOT_FOUND")
            return data.distributions[data.default_distribution]
        if isinstance(distro, uuid.UUID):
            found = data.distributions.get(distro)
            if found is None:
                raise WslError("WSL_E_DISTRO_NOT_FOUND")
            return found
        if not isinstance(distro, str):
            raise WslError("E_INVALIDARG",
                           f"A distribution is a name, a UUID or None, not {type(distro).__name__}.")
        if not distro:
            raise WslError("E_INVALIDARG", "The distribution name is empty.")
        by_name = data.find(distro, list_all=list_all)
        if by_name is None:
            raise WslError("WSL_E_DISTRO_NOT_FOUND")
        return by_name

    def _resolve(self, distro: Distro, *, list_all: bool = False) -> Registration:
        self._recover()
        with self.registry.transaction(create=False) as data:
            return self._lookup(data, distro, list_all=list_all)

    def _ensure_installed(self, registration: Registration) -> None:
        if registration.state is not DistributionState.INSTALLED:
            raise WslError("E_ILLEGAL_STATE_CHANGE")

    def _ensure_not_locked(self, registration: Registration) -> None:
        """`_EnsureNotLocked`: no install, export, move or uninstall in progress."""
        if self.registry.active_operation(registration.id) is not None:
            raise WslError("E_ILLEGAL_STATE_CHANGE")

    def _update(self, distro_id: uuid.UUID,
                change: Callable[[Registration, RegistryData], None]) -> Registration:
        with self.registry.transaction() as data:
            registration = data.distributions.get(distro_id)
            if registration is None:
                raise WslError("WSL_E_DISTRO_NOT_FOUND")
            change(registration, data)
            return registration

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
        self._ensure_not_locked(registration)   # again: an export may have started meanwhile
        with self._rootfs_for_vm(registration.base_path) as rootfs:
            instance = vm.launch_instance(registration.name, rootfs, default_uid=registration.default_uid,
                                          hostname=socket.gethostname())
        flavor, version = instance.flavor or "", instance.version or ""
        if (flavor, version) != (registration.flavor, registration.os_version) and (flavor or version):
            def store(entry: Registration, _: RegistryData) -> None:
                entry.flavor, entry.os_version = flavor, version
            with contextlib.suppress(WslError):
                self._update(registration.id, store)
        return instance

    def _trusted_anchor(self, path: Path) -> tuple[Path, list[str]]:
        """The folder a distribution's folder is reached from, and the components below it.

        The anchor is the deepest of the user's install folder (`distributionInstallPath`), data
        folder and home that holds `path`, or `/` for a folder elsewhere. The anchor itself is
        opened as it is; no component below it may be a symlink.
        """
        from pywsl.vm.directories import parts_below

        anchors = [self._install_root(self.config()), self.paths.data_dir, self.paths.home]
        best: tuple[Path, list[str]] | None = None
        for anchor in anchors:
            parts = parts_below(anchor, path)
            if parts is not None and (best is None or len(parts) < len(best[1])):
                best = (anchor, parts)
        if best is None:
            best = (Path("/"), parts_below("/", path) or [])
        return best

    @contextlib.contextmanager
    def _rootfs_for_vm(self, base_path: Path) -> Iterator[int]:
        """An open descriptor of `base_path/rootfs` for the VM, opened with the user's rights.

        Every component below the user's install, data or home folder (`_trusted_anchor`) is
        opened with `O_NOFOLLOW`, one at a time, and the VM gets the descriptor, never the path:
        a folder swapped for a symlink after registration makes the start fail instead of
        leading the VM elsewhere. The distribution's folder must belong to the user.
        """
        from pywsl.vm.directories import SymlinkInPath, open_beneath, open_child

        anchor, parts = self._trusted_anchor(base_path)
        rootfs = base_path / "rootfs"
        try:
            with acting_as(self.identity):
                parent_fd = open_beneath(anchor, parts)
        except SymlinkInPath as error:
            raise WslError("E_ACCESSDENIED", f"{error.filename} is a symbolic link: the distribution's "
                           f"folder {base_path} is not reached through links.") from None
        except OSError as error:
            raise WslError("ERROR_PATH_NOT_FOUND", f"The distribution's folder {base_path} "
                           f"cannot be opened: {error.strerror}") from None
        try:
            owner = os.fstat(parent_fd).st_uid
            if self.identity.uid != 0 and owner != self.identity.uid:
                raise WslError("E_ACCESSDENIED", f"{base_path} does not belong to {self.identity.name}.")
            try:
                with acting_as(self.identity):
                    rootfs_fd = open_child(parent_fd, "rootfs", str(rootfs))
            except FileNotFoundError:
                raise WslError("ERROR_PATH_NOT_FOUND", f"The root filesystem {rootfs} is missing.") from None
            except SymlinkInPath:
                raise WslError("E_ACCESSDENIED", f"{rootfs} is a symbolic link, not the distribution's "
                               "root filesystem.") from None
            except OSError as error:
                raise WslError("E_ACCESSDENIED", f"{rootfs}: {error.strerror}") from None
        finally:
            os.close(parent_fd)
        try:
            yield rootfs_fd
        finally:
            os.close(rootfs_fd)

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
    ) -> DistributionInfo:
        """`RegisterDistribution` / `RegisterDistributionPipe`: import a root filesystem archive.

        `source` is a path, a binary file object, a descriptor or a pipe holding a tar, tar.gz,
        tar.xz, tar.bz2 or tar.zst. `name` None takes the image's `oobe.defaultName`. `location`
        is the distribution's folder (default `<distributionInstallPath>/<guid>`). `progress` is
        called with the number of archive bytes read so far.
        """
        with error_context("RegisterDistro"):
            if vhd:
                not_supported_by_backend("Importing a VHD")
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
            distro_id = uuid.uuid4()
            base_path = (Path(os.path.abspath(os.fspath(location))) if location is not None
                         else self._install_root(config) / str(distro_id))
            self._ensure_no_rootfs(base_path)
            lock = self.registry.acquire_operation(distro_id, DistributionState.INSTALLING)
            with lock:
                registration = Registration(id=distro_id, name=name or "", base_path=base_path,
                                            run_oobe=run_oobe, default_environment=default_environment())
                with self.registry.transaction() as data:
                    self._check_unique(data, name, base_path)
                    data.distributions[distro_id] = registration
                made: list[bool] = []
                try:
                    return self._import(registration, source, progress, made)
                except BaseException:
                    self._rollback_install(registration, rootfs_made=bool(made))
                    raise

    def _ensure_no_rootfs(self, base_path: Path) -> None:
        """An install location must not hold a root filesystem already (it would be replaced)."""
        with acting_as(self.identity):
            try:
                os.lstat(base_path / "rootfs")
            except (FileNotFoundError, NotADirectoryError):
                return
            except OSError as error:
                raise WslError("E_ACCESSDENIED", f"{base_path}: {error.strerror}") from None
        raise WslError("ERROR_FILE_EXISTS", "The supplied install location is already in use.")

    @staticmethod
    def _check_unique(data: RegistryData, name: str | None, base_path: Path, exclude: uuid.UUID | None = None
                      ) -> None:
        """`_ValidateDistributionNameAndPathNotInUse`."""
        canonical = os.path.realpath(base_path)
        for other in data.distributions.values():
            if other.id == exclude:
                continue
            if name and other.name.casefold() == name.casefold():
                if other.state is DistributionState.INSTALLED:
                    raise WslError("ERROR_ALREADY_EXISTS", "A distribution with the supplied name already "
                                   "exists. Use --name to choose a different name.")
                raise WslError("E_ILLEGAL_STATE_CHANGE")
            if os.path.realpath(other.base_path) == canonical:
                raise WslError("ERROR_FILE_EXISTS", "The supplied install location is already in use.")

    def _prepare_rootfs(self, registration: Registration, uid_map: list[tuple[int, int, int]],
                        gid_map: list[tuple[int, int, int]], made: list[bool]) -> None:
        """Create the distribution's folder (as the user) and an empty `rootfs` in it; `made`
        gets an item once the rootfs is there (a rollback may delete it then, not before)."""
        created = makedirs_as(self.identity, registration.base_path, 0o755)
        if created:
            def mark(entry: Registration, _: RegistryData) -> None:
                entry.created_base_path = True
            self._update(registration.id, mark)
            registration.created_base_path = True
        elif self.identity.uid != 0:
            with acting_as(self.identity):
                owner = os.stat(registration.base_path).st_uid
            if owner != self.identity.uid:
                raise WslError("E_ACCESSDENIED", f"{registration.base_path} does not belong to "
                               f"{self.identity.name}: choose a folder of your own.")
        self._make_rootfs(registration.base_path, uid_map, gid_map)
        made.append(True)

    def _make_rootfs(self, folder: Path, uid_map: list[tuple[int, int, int]],
                     gid_map: list[tuple[int, int, int]]) -> None:
        """An empty `folder/rootfs`, made as the user and then given to the VM's root."""
        from pywsl.vm.idmap import host_id

        parent_fd = open_directory_as(self.identity, folder)
        try:
            try:
                with acting_as(self.identity):
                    os.mkdir("rootfs", 0o755, dir_fd=parent_fd)
            except FileExistsError:
                raise WslError("ERROR_FILE_EXISTS",
                               "The supplied install location is already in use.") from None
            fd = os.open("rootfs", _DIRECTORY_FLAGS, dir_fd=parent_fd)
            try:
                os.fchown(fd, host_id(uid_map, 0), host_id(gid_map, 0))
                os.fchmod(fd, 0o755)
            finally:
                os.close(fd)
        finally:
            os.close(parent_fd)

    def _import(self, registration: Registration, source: Source, progress: Progress | None,
                made: list[bool]) -> DistributionInfo:
        config = self.vm_config()
        self._prepare_rootfs(registration, config.uid_map, config.gid_map, made)
        stderr = StderrCollector()
        try:
            with open_archive_source(source, self.identity, progress=progress) as archive, self._vm() as vm:
                try:
                    with self._rootfs_for_vm(registration.base_path) as rootfs:
                        outcome = vm.import_rootfs(rootfs, archive.fd, stderr.fd)
                except WslError:
                    archive.check()
                    raise
                except (OSError, ValueError) as error:
                    archive.check()
                    raise WslError("WSL_E_IMPORT_FAILED", _with_details(
                        "Importing the distribution failed.", f"{error}", stderr.text())) from None
                archive.check()
        finally:
            details = stderr.text()
        return self._finish_import(registration, outcome, details)

    def _finish_import(self, registration: Registration, outcome: ImportOutcome,
                       details: str) -> DistributionInfo:
        """`_ProcessImportResultMessage`, then State=Installed and the default if there is none."""
        if not outcome.valid:
            raise WslError("WSL_E_NOT_A_LINUX_DISTRO", _with_details(
                "The imported file is not a valid Linux distribution.", details))
        name = registration.name
        if not name:
            name = outcome.default_name or ""
            if not name:
                raise WslError("WSL_E_DISTRIBUTION_NAME_NEEDED")
            validate_name(name)
        flavor = outcome.flavor or ""
        os_version = outcome.version or ""
        with self.registry.transaction() as data:
            self._check_unique(data, name, registration.base_path, exclude=registration.id)
            entry = data.distributions.get(registration.id)
            if entry is None:
                raise WslError("E_UNEXPECTED", "The registration vanished during the import.")
            entry.name, entry.flavor, entry.os_version = name, flavor, os_version
            entry.state = DistributionState.INSTALLED
            if data.default_distribution is None or data.default_distribution not in data.distributions:
                data.default_distribution = entry.id
            data.fix_default()
            return _info(entry, entry.state, data.default_distribution)

    def _rollback_install(self, registration: Registration, *, rootfs_made: bool) -> None:
        """Undo a failed import: files (only what this import made), then the entry (the op lock
        is still held)."""
        with contextlib.suppress(WslError), self.registry.transaction() as data:
            entry = data.distributions.get(registration.id)
            if entry is not None:
                entry.state = DistributionState.UNINSTALLING
                registration.created_base_path = entry.created_base_path
        try:
            if rootfs_made:
                self._remove_files(registration)
            elif registration.created_base_path:
                with acting_as(self.identity), contextlib.suppress(OSError):
                    os.rmdir(registration.base_path)
        except OSError:
            return   # left as Uninstalling: the next recovery retries
        with contextlib.suppress(WslError), self.registry.transaction() as data:
            data.distributions.pop(registration.id, None)
            data.fix_default()

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
            with self._rootfs_for_vm(registration.base_path) as rootfs:
                instance = vm.launch_instance(registration.name, rootfs, default_uid=registration.default_uid,
                                              hostname=socket.gethostname())
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
        """`UnregisterDistribution`: terminate, mark Uninstalling, move the default, delete the files,
        delete the entry. An interruption is completed by the next session that opens the registry."""
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
                self._remove_files(registration)
                with self.registry.transaction() as data:
                    data.distributions.pop(registration.id, None)
                    data.fix_default()

    def configure_distribution(self, distro: Distro, *, default_uid: int | None = None,
                               flags: int | None = None) -> None:
        """`ConfigureDistribution`: set the default uid and/or the flags (`VM_MODE` stays as it is);
        the distribution is terminated if anything changed."""
        with error_context("ConfigureDistro"):
            if default_uid is not None and (isinstance(default_uid, bool) or not isinstance(default_uid, int)
                                            or not 0 <= default_uid < LX_UID_INVALID):
                raise WslError("E_INVALIDARG", f"Invalid default uid {default_uid!r}.")
            if flags is not None and flags != FLAGS_UNCHANGED and (
                    isinstance(flags, bool) or not isinstance(flags, int) or flags & ~FLAGS_ALL or flags < 0):
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
            if default_uid is not None and (isinstance(default_uid, bool) or not isinstance(default_uid, int)
                                            or not 0 <= default_uid < LX_UID_INVALID):
                raise WslError("E_INVALIDARG", f"Invalid default uid {default_uid!r}.")
            registration = self._resolve(distro)

            def apply(entry: Registration, _: RegistryData) -> None:
                entry.run_oobe = False
                if default_uid is not None:
                    entry.default_uid = default_uid
            self._update(registration.id, apply)

    def get_distribution_configuration(self, distro: Distro = None) -> DistributionConfiguration:
        """`GetDistributionConfiguration` (its Version is the filesystem version)."""
        with error_context("GetDistroConfiguration"):
            registration = self._resolve(distro)
            return DistributionConfiguration(
                id=registration.id,
                name=registration.name,
                version=registration.version,
                default_uid=registration.default_uid,
                flags=registration.flags,
                default_environment=list(registration.default_environment),
                base_path=registration.base_path,
            )

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
                registration = self._lookup(data, distro)
                if registration.state is not DistributionState.INSTALLED:
                    raise WslError("WSL_E_DISTRO_NOT_FOUND")
                data.default_distribution = registration.id

    def enumerate_distributions(self) -> list[DistributionInfo]:
        """`EnumerateDistributions`: every registration, with the live state (Running from the VM,
        Installing/Exporting/... from the operations in progress)."""
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
                result.append(_info(registration, state, default))
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
        from pywsl.api.process import LxProcess, PreparedStdio

        source = (self._environ or {}) if wslenv_source is None else wslenv_source
        arguments = list(command_line)

        def launch(prepared: PreparedStdio) -> int:
            return self.launch_lx_process(
                distro, arguments, filename=filename, cwd=cwd, username=username, login=login,
                environment=environment, wslenv_source=source,
                stdin=prepared.relay_stdio[0], stdout=prepared.relay_stdio[1], stderr=prepared.relay_stdio[2],
                control_fd=prepared.relay_control_fd, exit_fd=prepared.relay_exit_fd,
                console=prepared.console, rows=prepared.rows, columns=prepared.columns)

        try:
            return LxProcess.start(launch, stdin=stdin, stdout=stdout, stderr=stderr,
                                   args=[filename] if filename and not arguments else arguments)
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
                registration, command_line, filename=filename, cwd=cwd, username=username, login=login,
                environment=environment, wslenv_source=wslenv_source or {}, console=console,
                rows=rows, columns=columns)
        with self._vm() as vm:
            with error_context("CreateInstance"):
                instance = self._launch(vm, registration)
            try:
                with error_context("CreateLxProcess"):
                    return instance.create_process(request, (stdin, stdout, stderr), control_fd, exit_fd)
            finally:
                instance.close()

    def _process_request(self, registration: Registration, command_line: Sequence[str], *,
                         filename: str | None, cwd: str, username: str, login: bool,
                         environment: Mapping[str, str] | None, wslenv_source: Mapping[str, str],
                         console: tuple[bool, bool, bool], rows: int, columns: int) -> ProcessRequest:
        """`ParseArguments` + the environment block of a new process."""
        from pywsl.vm import ProcessRequest

        arguments = [str(item) for item in command_line]
        for value in (*arguments, cwd, username, filename or ""):
            if "\0" in value:
                raise WslError("E_INVALIDARG", "An argument contains a NUL character.")
        if filename is None:
            program = ""
            argv = ["-c", " ".join(arguments)] if arguments else []
        else:
            if login:
                raise WslError("E_INVALIDARG", "A login shell cannot be combined with a program to run.")
            if not filename:
                raise WslError("E_INVALIDARG", "The program name is empty.")
            program = filename
            argv = arguments or [filename]
        if cwd and not cwd.startswith(("/", "~")):
            raise WslError("E_INVALIDARG", f"The working directory {cwd!r} must be an absolute Linux path or "
                           "start with ~.")
        return ProcessRequest(
            filename=program,
            command_line=argv,
            cwd=cwd,
            environment=self._environment(registration, any(console), environment, wslenv_source),
            username=username,
            default_uid=registration.default_uid,
            login_shell=login,
            console=console,
            rows=max(0, int(rows)),
            columns=max(0, int(columns)),
        )

    @staticmethod
    def _environment(registration: Registration, terminal: bool, environment: Mapping[str, str] | None,
                     source: Mapping[str, str]) -> list[str]:
        """DefaultEnvironment, TERM of a terminal caller, WSLENV's variables, explicit ones."""
        result: dict[str, str] = {}
        for item in registration.default_environment:
            name, _, value = item.partition("=")
            result[name] = value
        if terminal and source.get("TERM"):
            result["TERM"] = source["TERM"]
        for name in parse_wslenv(source.get("WSLENV", "")):
            if name in source:
                result[name] = source[name]
        for name, value in (environment or {}).items():
            if not name or "=" in name or "\0" in name or "\0" in value:
                raise WslError("E_INVALIDARG", f"Invalid environment variable {name!r}.")
            result[name] = value
        return [f"{name}={value}" for name, value in result.items()]

    def export_distribution(self, distro: Distro, target: Source, *, format: str = "tar",
                            progress: Progress | None = None) -> None:
        """`ExportDistribution` / `ExportDistributionPipe`: write the root filesystem as a tar,
        tar.gz or tar.xz to a path, file object, descriptor or pipe. A file created for the export
        is removed again if it fails. `progress` is called with the bytes written so far."""
        with error_context("ExportDistro"):
            compression = self._export_compression(format)
            registration = self._resolve(distro)
            self._ensure_installed(registration)
            self._require_root("Exporting a distribution")
            lock = self.registry.acquire_operation(registration.id, DistributionState.EXPORTING)
            with lock:
                stderr = StderrCollector()
                try:
                    with open_export_target(target, self.identity, progress=progress) as output, \
                            self._vm() as vm, self._rootfs_for_vm(registration.base_path) as rootfs:
                        try:
                            vm.export_rootfs(rootfs, output.fd, stderr.fd, compression)
                        except WslError:
                            raise
                        except (OSError, ValueError) as error:
                            raise WslError("WSL_E_EXPORT_FAILED", _with_details(
                                "Exporting the distribution failed.", str(error), stderr.text())) from None
                        output.finish()
                finally:
                    stderr.close_writer()

    @staticmethod
    def _export_compression(format: str) -> str:
        if not isinstance(format, str):
            raise WslError("E_INVALIDARG", "The export format must be a string.")
        if format.lower() in ("vhd", "vhdx"):
            not_supported_by_backend("Exporting a VHD")
        compression = EXPORT_FORMATS.get(format.lower())
        if compression is None:
            raise WslError("E_INVALIDARG", f"Unknown export format {format!r}: use tar, tar.gz or tar.xz.")
        return compression

    def move_distribution(self, distro: Distro, location: str | os.PathLike[str]) -> None:
        """`MoveDistribution`: move the root filesystem to the folder `location`. The distribution
        must be stopped; a failure leaves it where it was."""
        with error_context("MoveDistro"):
            if not os.path.isabs(os.fspath(location)):
                raise WslError("E_INVALIDARG", "The new location must be an absolute path.")
            target = Path(os.path.normpath(os.fspath(location)))
            registration = self._resolve(distro)
            self._ensure_installed(registration)
            if registration.name.casefold() in self._running():
                raise WslError("WSL_E_DISTRO_NOT_STOPPED")
            lock = self.registry.acquire_operation(registration.id, DistributionState.CONVERTING)
            with lock:
                with self._rootfs_for_vm(registration.base_path):
                    pass
                with self.registry.transaction() as data:
                    self._check_unique(data, None, target, exclude=registration.id)
                    data.distributions[registration.id].move_target = target   # for crash recovery
                created = makedirs_as(self.identity, target, 0o755)
                try:
                    self._move_rootfs(registration, target)
                except BaseException:
                    if created:
                        with acting_as(self.identity), contextlib.suppress(OSError):
                            os.rmdir(target)

                    def forget(entry: Registration, _: RegistryData) -> None:
                        entry.move_target = None
                    self._update(registration.id, forget)
                    raise

                def relocate(entry: Registration, _: RegistryData) -> None:
                    entry.base_path, entry.created_base_path, entry.move_target = target, False, None
                self._update(registration.id, relocate)
                if registration.created_base_path:
                    with acting_as(self.identity), contextlib.suppress(OSError):
                        os.rmdir(registration.base_path)

    def _move_rootfs(self, registration: Registration, target: Path) -> None:
        try:
            rename_tree(self.identity, registration.base_path, target, "rootfs")
            return
        except OSError as error:
            if error.errno != errno.EXDEV:
                raise
        # Another file system: copy through the VM (export piped into import), then delete.
        self._require_root("Moving a distribution to another file system")
        config = self.vm_config()
        moved = Registration(id=registration.id, name=registration.name, base_path=target)
        self._make_rootfs(target, config.uid_map, config.gid_map)
        try:
            self._copy_rootfs(registration.base_path, moved.base_path)
        except BaseException:
            remove_tree(self.identity, target, "rootfs")
            raise
        remove_tree(self.identity, registration.base_path, "rootfs")

    def _copy_rootfs(self, source_base: Path, target_base: Path) -> None:
        """Copy `source_base/rootfs` into the empty `target_base/rootfs` through the VM."""
        stderr = StderrCollector()
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        failure: list[BaseException] = []
        with self._vm() as exporter, self._vm() as importer, \
                self._rootfs_for_vm(source_base) as source, self._rootfs_for_vm(target_base) as target:
            def export() -> None:
                try:
                    exporter.export_rootfs(source, write_end, stderr.fd, "")
                except BaseException as error:
                    failure.append(error)
                finally:
                    os.close(write_end)
            thread = threading.Thread(target=export, daemon=True)
            thread.start()
            try:
                importer.import_rootfs(target, read_end, stderr.fd)
            finally:
                os.close(read_end)
                thread.join()
        details = stderr.text()
        if failure:
            raise WslError("WSL_E_EXPORT_FAILED", _with_details("Copying the distribution failed.",
                                                                str(failure[0]), details))

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

    def set_sparse(self, distro: Distro, sparse: bool, *, allow_unsafe: bool = False) -> None:
        """`SetSparse`."""
        with error_context("Service"):
            not_supported_by_backend("Making a distribution's disk sparse")

    def resize_distribution(self, distro: Distro, new_size: int, *, output: Any = None) -> None:
        """`ResizeDistribution`."""
        with error_context("Service"):
            not_supported_by_backend("Resizing a distribution's disk")

    def import_distribution_inplace(self, name: str, vhd_path: str | os.PathLike[str]) -> uuid.UUID:
        """`ImportDistributionInplace`."""
        with error_context("RegisterDistro"):
            not_supported_by_backend("Importing a VHD in place")

    def attach_disk(self, disk: str, *, vhd: bool = False) -> None:
        """`AttachDisk`."""
        with error_context("AttachDisk"):
            not_supported_by_backend("Attaching a disk")

    def detach_disk(self, disk: str | None = None) -> None:
        """`DetachDisk`."""
        with error_context("DetachDisk"):
            not_supported_by_backend("Detaching a disk")

    def mount_disk(self, disk: str, *, vhd: bool = False, partition: int = 0, name: str | None = None,
                   fs_type: str | None = None, options: str | None = None) -> str:
        """`MountDisk`."""
        with error_context("MountDisk"):
            not_supported_by_backend("Mounting a disk")


def _with_details(message: str, *details: str) -> str:
    extra = [detail.strip() for detail in details if detail and detail.strip()]
    return "\n".join([message, *extra])
