"""The work of `RegisterDistribution`: a root filesystem archive becomes an Installed distribution.

`UserSession.register_distribution` checks the arguments, adds the new registration as Installing
and holds its operation lock; `DistributionImporter` then does the rest as WSL does: the folder and an
empty root filesystem, the archive through the VM's import worker (`LxMiniInitMessageImport`),
`_ProcessImportResultMessage` (a valid distribution, its name, flavor and version) and State =
Installed (the default when there is none). The worker's warnings (device nodes it left out) go
to the user (`user_warnings`) once the import succeeded. A failure undoes what this import made
and removes the entry; an entry whose files cannot be deleted stays Uninstalling for the next
recovery.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from pywsl.api import cancellation
from pywsl.api.errors import WslError
from pywsl.api.files.disk_files import DiskFiles
from pywsl.api.files.rootfs_folder import OpenVm, RootfsFolders, with_details
from pywsl.api.files.transfer import Progress, Source, StderrCollector, open_archive_source, open_image_source
from pywsl.api.session import user_warnings
from pywsl.api.session.distribution_info import DistributionInfo, distribution_info
from pywsl.api.session.registrations import check_unique, update_registration
from pywsl.api.session.registry import DistributionState, Registration, Registry, RegistryData, validate_name
from pywsl.vm.disk_image import DiskImage

if TYPE_CHECKING:
    from pywsl.vm import ImportOutcome, VmConfig

__all__ = ["DistributionImporter"]


class DistributionImporter:
    """Imports into new registrations of `registry`, in `folders`, through the VM `open_vm` gives
    (booted with `vm_config()`)."""

    def __init__(
        self,
        registry: Registry,
        folders: RootfsFolders,
        *,
        vm_config: Callable[[], VmConfig],
        open_vm: OpenVm,
        disk_size: int = 0,
        fixed_size: bool = False,
    ) -> None:
        self.registry = registry
        self.folders = folders
        self.disks = DiskFiles(folders)
        self.disk_size = disk_size  # a registration on a disk: the size of its new image
        self.fixed_size = fixed_size  # ... all of it allocated at once (`--fixed-vhd`)
        self._vm_config = vm_config
        self._open_vm = open_vm

    def run(
        self, registration: Registration, source: Source, progress: Progress | None, *, vhd: bool = False
    ) -> DistributionInfo:
        """Import `source` into `registration` (Installing, its operation lock held); its final
        `DistributionInfo`, or the failure after the rollback. `vhd`: `source` is a disk image
        holding an ext4 root filesystem, copied into the distribution's folder and checked."""
        made: list[bool] = []
        try:
            if vhd:
                return self._import_vhd(registration, source, made)
            return self._import(registration, source, progress, made)
        except BaseException:
            self._rollback(registration, rootfs_made=bool(made))
            raise

    def _prepare_rootfs(self, registration: Registration, config: VmConfig, made: list[bool]) -> None:
        """Create the distribution's folder (as the user) and an empty `rootfs` in it; `made`
        gets an item once the rootfs is there (a rollback may delete it then, not before)."""
        if self.folders.make_folder(registration.base_path):

            def mark(entry: Registration, _: RegistryData) -> None:
                entry.created_base_path = True

            update_registration(self.registry, registration.id, mark)
            registration.created_base_path = True
        if registration.on_disk:
            self.disks.create(
                registration.base_path, registration.vhd_file_name, self.disk_size, allocate=self.fixed_size
            )
        else:
            self.folders.make_rootfs(registration.base_path, config.uid_map, config.gid_map)
        made.append(True)

    def _target(self, registration: Registration) -> AbstractContextManager[int | DiskImage]:
        """Where the VM's import worker extracts to: the `rootfs` folder, or the new disk."""
        if not registration.on_disk:
            return self.folders.open_rootfs(registration.base_path)
        return _disk(self.disks, registration)

    def _import(
        self, registration: Registration, source: Source, progress: Progress | None, made: list[bool]
    ) -> DistributionInfo:
        self._prepare_rootfs(registration, self._vm_config(), made)
        stderr = StderrCollector()
        try:
            with (
                open_archive_source(source, self.folders.identity, progress=progress) as archive,
                self._open_vm() as vm,
            ):
                try:
                    with self._target(registration) as rootfs:
                        outcome = vm.import_rootfs(
                            rootfs, archive.fd, stderr.fd, cancel=cancellation.current()
                        )
                except WslError:
                    archive.check()
                    raise
                except (OSError, ValueError) as error:
                    archive.check()
                    raise WslError(
                        "WSL_E_IMPORT_FAILED",
                        with_details("Importing the distribution failed.", f"{error}", stderr.text()),
                    ) from None
                archive.check()
        finally:
            details = stderr.text()
        return self._finish(registration, outcome, details)

    def _import_vhd(self, registration: Registration, source: Source, made: list[bool]) -> DistributionInfo:
        if self.folders.make_folder(registration.base_path):

            def mark(entry: Registration, _: RegistryData) -> None:
                entry.created_base_path = True

            update_registration(self.registry, registration.id, mark)
            registration.created_base_path = True
        with open_image_source(source, self.folders.identity) as source_fd:
            made.append(True)
            self.disks.copy_in(source_fd, registration.base_path, registration.vhd_file_name)
        return self.check_in_place(registration)

    def check_in_place(self, registration: Registration) -> DistributionInfo:
        """ImportInplace: the VM mounts the disk and checks the root filesystem on it."""
        stderr = StderrCollector()
        try:
            with (
                _disk(self.disks, registration) as disk,  # opened as the user before any VM boots
                self._open_vm() as vm,
                open(os.devnull, "rb") as nothing,
            ):
                outcome = vm.import_rootfs(disk, nothing.fileno(), stderr.fd, in_place=True)
        except WslError:
            raise
        except (OSError, ValueError) as error:
            raise WslError(
                "WSL_E_DISK_CORRUPTED" if getattr(error, "step", None) == 2 else "WSL_E_IMPORT_FAILED",
                with_details("The disk cannot be used as a distribution.", f"{error}", stderr.text()),
            ) from None
        return self._finish(registration, outcome, stderr.text())

    def _finish(self, registration: Registration, outcome: ImportOutcome, details: str) -> DistributionInfo:
        """`_ProcessImportResultMessage`, then State=Installed and the default if there is none."""
        if not outcome.valid:
            raise WslError(
                "WSL_E_NOT_A_LINUX_DISTRO",
                with_details("The imported file is not a valid Linux distribution.", details),
            )
        name = registration.name
        if not name:
            name = outcome.default_name or ""
            if not name:
                raise WslError("WSL_E_DISTRIBUTION_NAME_NEEDED")
            validate_name(name)
        flavor = outcome.flavor or ""
        os_version = outcome.version or ""
        with self.registry.transaction() as data:
            check_unique(data, name, registration.base_path, exclude=registration.id)
            entry = data.distributions.get(registration.id)
            if entry is None:
                raise WslError("E_UNEXPECTED", "The registration vanished during the import.")
            entry.name, entry.flavor, entry.os_version = name, flavor, os_version
            entry.state = DistributionState.INSTALLED
            if data.default_distribution is None or data.default_distribution not in data.distributions:
                data.default_distribution = entry.id
            data.fix_default()
            info = distribution_info(entry, entry.state, data.default_distribution)
        for warning in outcome.warnings:
            user_warnings.emit(warning)
        return info

    def _rollback(self, registration: Registration, *, rootfs_made: bool) -> None:
        """Undo a failed import: files (only what this import made), then the entry (the op lock
        is still held)."""
        with contextlib.suppress(WslError), self.registry.transaction() as data:
            entry = data.distributions.get(registration.id)
            if entry is not None:
                entry.state = DistributionState.UNINSTALLING
                registration.created_base_path = entry.created_base_path
        try:
            if rootfs_made:
                self.folders.remove_files(registration, only_created_folder=True)
            elif registration.created_base_path:
                self.folders.remove_empty_folder(registration.base_path)
        except (OSError, WslError):
            return  # left as Uninstalling: the next recovery retries (content root must not delete stays)
        with contextlib.suppress(WslError), self.registry.transaction() as data:
            data.distributions.pop(registration.id, None)
            data.fix_default()


@contextlib.contextmanager
def _disk(disks: DiskFiles, registration: Registration) -> Iterator[DiskImage]:
    with disks.open(registration.base_path, registration.vhd_file_name) as fd:
        yield DiskImage(fd)
