"""The disk-image verbs of the user session (the qemu backend): WSL's VHD side of `ILxssUserSession`.

`UserSession` takes these methods from `DiskVerbs`: `SetSparse`, `ResizeDistribution`,
`ImportDistributionInplace` for distributions on disks, and `AttachDisk`, `MountDisk`,
`DetachDisk` for the disks a user attaches to the VM (`--mount`, mounted at `/mnt/wsl/<name>`
where every distribution sees it). With the namespaces backend, whose distributions are folders,
each of them says so (`not_supported_by_backend`). A disk the user names is opened with the
user's rights (a host block device only for root) and reaches the VM as a descriptor.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pywsl.api.errors import WslError, error_context, from_os_error, not_supported_by_backend
from pywsl.api.files.disk_files import image_name_for_import
from pywsl.api.session.registry import DistributionState, Registration, RegistryData, validate_name
from pywsl.api.session.user_disk_store import UserDiskStore

if TYPE_CHECKING:
    from pywsl.api.session.registrations import Distro
    from pywsl.api.session.user_session import UserSession
    from pywsl.vm import CoreVm
    from pywsl.vm.disk_image import DiskImage

__all__ = ["DiskVerbs"]


class DiskVerbs:
    """The disk verbs of one `UserSession`, which calls them."""

    def __init__(self, session: UserSession) -> None:
        self.session = session

    def _disk_registration(self, distro: Distro, what: str) -> Registration:
        registration = self.session._resolve(distro)
        self.session._ensure_installed(registration)
        if not registration.on_disk:
            not_supported_by_backend(what)
        return registration

    def set_sparse(self, distro: Distro, sparse: bool, *, allow_unsafe: bool = False) -> None:
        """`SetSparse`: whether blocks the distribution frees are given back to the host (its disk
        is mounted with `discard`). As in WSL, making it sparse needs `allow_unsafe`."""
        with error_context("Service"):
            registration = self._disk_registration(distro, "Making a distribution's disk sparse")
            if sparse and not allow_unsafe:
                raise WslError(
                    "E_INVALIDARG",
                    "Sparse disks may be corrupted by discards in flight; pass --allow-unsafe to make one.",
                )

            def apply(entry: Registration, _: RegistryData) -> None:
                entry.sparse = bool(sparse)

            self.session._update(registration.id, apply)
            self.session._terminate(registration)

    def resize_distribution(self, distro: Distro, new_size: int, *, output: Any = None) -> None:
        """`ResizeDistribution`: grow or shrink the distribution's disk and its file system (in the
        VM: `e2fsck -f -y`, `resize2fs`; their output goes to `output`, a descriptor or file object).
        The distribution must be stopped; a shrink below what the files use fails and changes nothing."""
        with error_context("Service"):
            registration = self._disk_registration(distro, "Resizing a distribution's disk")
            if isinstance(new_size, bool) or not isinstance(new_size, int) or new_size <= 0:
                raise WslError("E_INVALIDARG", f"Invalid size {new_size!r}.")
            if registration.name.casefold() in self.session._running():
                raise WslError("WSL_E_DISTRO_NOT_STOPPED")
            lock = self.session.registry.acquire_operation(registration.id, DistributionState.CONVERTING)
            with lock, self.session._vm() as vm, open(os.devnull, "wb") as sink:
                target = output if isinstance(output, int) else (output.fileno() if output else sink.fileno())
                self.session._disks().resize(registration, new_size, vm, target)

    def import_distribution_inplace(self, name: str, vhd_path: str | os.PathLike[str]) -> uuid.UUID:
        """`ImportDistributionInplace`: register the ext4 disk image `vhd_path` where it lies (its
        folder becomes the distribution's). On failure the image is left as it was."""
        with error_context("RegisterDistro"):
            validate_name(name)
            self.session._require_root("Importing a distribution")
            path = Path(os.path.abspath(os.fspath(vhd_path)))
            image_name_for_import(str(path))  # a .vhd or .vhdx
            if self.session.config().backend != "qemu":
                not_supported_by_backend("Importing a VHD in place")
            self.session._recover()
            distro_id = uuid.uuid4()
            lock = self.session.registry.acquire_operation(distro_id, DistributionState.INSTALLING)
            with lock:
                registration = Registration(
                    id=distro_id, name=name, base_path=path.parent, vhd_file_name=path.name
                )
                with self.session.registry.transaction() as data:
                    self.session._check_unique(data, name, path.parent)
                    data.distributions[distro_id] = registration
                from pywsl.api.session.distribution_import import DistributionImporter

                importer = DistributionImporter(
                    self.session.registry,
                    self.session.folders,
                    vm_config=self.session.vm_config,
                    open_vm=self.session._vm,
                )
                try:
                    importer.check_in_place(registration)
                except BaseException:
                    with contextlib.suppress(WslError), self.session.registry.transaction() as data:
                        data.distributions.pop(distro_id, None)
                        data.fix_default()
                    raise
            return distro_id

    def attach_disk(self, disk: str, *, vhd: bool = False) -> None:
        """`AttachDisk` (`--mount --bare`): attach a disk image (`vhd`, opened with the user's
        rights) or, for root, a host block device to the VM, unmounted, until `detach_disk`."""
        with error_context("AttachDisk"):
            result, step = self._user_disk_request(disk, vhd, name="")
            if result == -errno.EEXIST:
                raise WslError("WSL_E_DISK_ALREADY_ATTACHED")
            _check_mount_result(result, step, disk)
            self._store().add(_entry(disk, vhd, ""))

    def detach_disk(self, disk: str | None = None) -> None:
        """`DetachDisk` (`--unmount`): unmount the volumes of the disk (every disk attached with
        `--mount` for None) and detach it."""
        with error_context("DetachDisk"):
            if self.session.config().backend != "qemu":
                not_supported_by_backend("Detaching a disk")
            with contextlib.ExitStack() as stack:
                # the disk is opened (as the user) first: a disk the user cannot open is refused
                # whether a VM runs or not
                image = (
                    None
                    if disk is None
                    else stack.enter_context(self._user_disk(disk, vhd=not _is_block_device(disk)))
                )
                self._store().remove(disk)  # not attached again at the next start, whatever happens
                vm = self.session._attach()
                if vm is None:
                    return  # no VM: nothing is attached
                stack.callback(vm.close)
                result, step = vm.detach_disk(image)
            if result == -errno.ENOENT:
                raise WslError("ERROR_FILE_NOT_FOUND", f"{disk} is not attached.")
            if result != 0:
                raise WslError(
                    "WSL_E_DISK_UNMOUNT_FAILED", f"{disk or 'A disk'}: {os.strerror(-result)} (step {step})."
                )

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
        """`MountDisk` (`--mount`): mount the disk (or its partition `partition`) at
        `/mnt/wsl/<name>` in the VM, where every distribution sees it; returns the name (by
        default the letters and digits of the disk's path, and `p<partition>`)."""
        with error_context("MountDisk"):
            if isinstance(partition, bool) or not isinstance(partition, int) or partition < 0:
                raise WslError("E_INVALIDARG", f"Invalid partition {partition!r}.")
            mount_name = name if name is not None else _default_mount_name(disk, partition)
            if not mount_name or mount_name in (".", "..") or "/" in mount_name:
                raise WslError("WSL_E_VM_MODE_INVALID_MOUNT_NAME")
            result, step = self._user_disk_request(
                disk, vhd, name=mount_name, partition=partition, fs_type=fs_type or "", options=options or ""
            )
            if result == -errno.EEXIST:
                raise WslError("WSL_E_VM_MODE_MOUNT_NAME_ALREADY_EXISTS")
            _check_mount_result(result, step, disk)
            self._store().add(_entry(disk, vhd, mount_name, partition, fs_type or "", options or ""))
            return mount_name

    def _store(self) -> UserDiskStore:
        return UserDiskStore(self.session.paths.runtime_dir)

    def reattach(self, vm: CoreVm) -> list[str]:
        """A new VM booted: attach and mount again the disks the user attached before it stopped
        (as WSL does after an idle stop). A disk that fails is forgotten; one warning each."""
        warnings: list[str] = []
        store = self._store()
        for entry in store.entries():
            try:
                with self._user_disk(entry["disk"], vhd=entry["vhd"]) as image:
                    result, step = vm.mount_disk(
                        image,
                        name=entry["name"],
                        partition=entry["partition"],
                        fs_type=entry["type"],
                        options=entry["options"],
                    )
                _check_mount_result(result, step, entry["disk"])
            except (WslError, OSError) as error:
                store.remove(entry["disk"])
                warnings.append(f"{entry['disk']} was not attached again: {error}")
        return warnings

    def _user_disk_request(self, disk: str, vhd: bool, **fields: Any) -> tuple[int, int]:
        if self.session.config().backend != "qemu":
            not_supported_by_backend("Mounting a disk")
        with self._user_disk(disk, vhd=vhd) as image, self.session._vm() as vm:
            return vm.mount_disk(image, **fields)

    @contextlib.contextmanager
    def _user_disk(self, disk: str, *, vhd: bool) -> Iterator[DiskImage]:
        """A disk the user names: an image file opened with the user's rights, or (root only) a
        host block device."""
        from pywsl.api.credentials import acting_as
        from pywsl.vm.disk_image import DiskImage

        if not isinstance(disk, str) or not disk:
            raise WslError("E_INVALIDARG", "No disk given.")
        if not vhd and self.session.identity.uid != 0:
            raise WslError("WSL_E_ELEVATION_NEEDED_TO_MOUNT_DISK")
        try:
            with acting_as(self.session.identity):
                fd = os.open(disk, os.O_RDWR | os.O_CLOEXEC)
        except OSError as error:
            raise from_os_error(error, what=disk) from None
        try:
            mode = os.fstat(fd).st_mode
            wanted = stat.S_ISREG(mode) if vhd else stat.S_ISBLK(mode)
            if not wanted:
                kind = "a disk image file" if vhd else "a block device (or pass --vhd for a disk image)"
                raise WslError("E_INVALIDARG", f"{disk} is not {kind}.")
            yield DiskImage(fd)
        finally:
            os.close(fd)


def _entry(
    disk: str, vhd: bool, name: str, partition: int = 0, fs_type: str = "", options: str = ""
) -> dict[str, Any]:
    return {
        "disk": disk,
        "vhd": vhd,
        "name": name,
        "partition": partition,
        "type": fs_type,
        "options": options,
    }


def _default_mount_name(disk: str, partition: int) -> str:
    """WSL's default mount name: the letters and digits of the disk's path, then `p<partition>`."""
    name = "".join(character for character in disk if character.isascii() and character.isalnum())
    return f"{name}p{partition}" if partition else name


def _is_block_device(disk: str) -> bool:
    with contextlib.suppress(OSError):
        return stat.S_ISBLK(os.stat(disk).st_mode)
    return False


def _check_mount_result(result: int, step: int, disk: str) -> None:
    if result != 0:
        raise WslError(
            "WSL_E_DISK_MOUNT_FAILED", f"Mounting {disk} failed: {os.strerror(-result)} (step {step})."
        )
