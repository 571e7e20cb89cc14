"""Distributions on disk images (the ``qemu`` backend): WSL's VHD side of the user session.

``UserSession`` asks here for what differs when a distribution's root filesystem is a disk:

* ``disk_for_vm``: the image opened with the user's rights, as the VM takes it (``DiskImage``:
  mounted with WSL's options, without ``discard`` when the distribution is not sparse);
* ``export_vhd``: ``--export --vhd`` / ``--format vhd``: the image converted to a VHDX (or VHD,
  by the target's name) with ``qemu-img``, as the user, on descriptors;
* ``resize``: ``--manage --resize``: grow the file, then ``resize2fs`` in the VM; or shrink the
  file system in the VM first (``resize2fs`` refuses to go below what the files use), then the file;
* ``wait_released``: the VM attaches a disk for each use and detaches it when the use ended; a
  change to the file waits (bounded) until QEMU holds it no longer.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from pywsl.api.errors import WslError
from pywsl.api.files.disk_files import DiskFiles
from pywsl.vm.disk_image import DEFAULT_MOUNT_OPTIONS, NOT_SPARSE_MOUNT_OPTIONS, DiskImage, disk_format

if TYPE_CHECKING:
    from pywsl.api.session.registry import Registration
    from pywsl.vm import CoreVm

__all__ = ["DEFAULT_VHD_SIZE", "DistributionDisks", "held_by_vm"]

DEFAULT_VHD_SIZE = 1 << 40  # WSL's [wsl2] defaultVhdSize: 1 TB
RELEASE_TIMEOUT = 15.0
VM_PID_FILE = "mini_init.pid"  # QEMU's pid first (the qemu backend's runtime folder)


def held_by_vm(runtime_dir: Path, fd: int) -> bool:
    """True while the VM's QEMU process has the file ``fd`` is open on among its descriptors."""
    try:
        qemu = (runtime_dir / VM_PID_FILE).read_text().split()[0]
    except (OSError, IndexError):
        return False
    info = os.fstat(fd)
    folder = f"/proc/{qemu}/fd"
    try:
        names = os.listdir(folder)
    except OSError:
        return False
    for name in names:
        with contextlib.suppress(OSError):
            held = os.stat(os.path.join(folder, name))
            if (held.st_dev, held.st_ino) == (info.st_dev, info.st_ino):
                return True
    return False


class DistributionDisks:
    """Disk images of one user's distributions."""

    def __init__(self, files: DiskFiles, runtime_dir: Path) -> None:
        self.files = files
        self.runtime_dir = runtime_dir

    @contextlib.contextmanager
    def disk_for_vm(self, registration: Registration) -> Iterator[DiskImage]:
        options = DEFAULT_MOUNT_OPTIONS if registration.sparse else NOT_SPARSE_MOUNT_OPTIONS
        with self.files.open(registration.base_path, registration.vhd_file_name) as fd:
            yield DiskImage(fd, "ext4", options)

    def wait_released(self, fd: int, timeout: float = RELEASE_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while held_by_vm(self.runtime_dir, fd):
            if time.monotonic() >= deadline:
                raise WslError("WSL_E_DISTRO_NOT_STOPPED", "The disk is still in use by the VM.")
            time.sleep(0.02)

    def export_vhd(self, registration: Registration, output_fd: int, target_name: str | None) -> None:
        with self.files.open(registration.base_path, registration.vhd_file_name, writable=False) as fd:
            self.wait_released(fd)
            self.files.convert(fd, disk_format(registration.vhd_file_name), output_fd, target_name)

    def resize(self, registration: Registration, new_size: int, vm: CoreVm, output_fd: int) -> None:
        if disk_format(registration.vhd_file_name) != "raw":
            raise WslError(
                "E_INVALIDARG", f"{registration.vhd_file_name}: only a raw disk image can be resized here."
            )
        with self.disk_for_vm(registration) as disk:
            self.wait_released(disk.fd)
            current = os.fstat(disk.fd).st_size
            if new_size >= current:
                os.ftruncate(disk.fd, new_size)
                status = vm.resize_disk(disk, 0, output_fd)
            else:
                status = vm.resize_disk(disk, new_size, output_fd)
                if status == 0:
                    self.wait_released(disk.fd)
                    os.ftruncate(disk.fd, new_size)
        if status != 0:
            raise WslError("E_FAIL", f"Resizing the disk failed (status {status}); it was left as it was.")
