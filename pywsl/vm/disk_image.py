"""A distribution's disk, as ``CoreVm`` takes it: an open image file (or block device) for a real VM.

On the ``qemu`` backend a distribution's root filesystem may live on an ext4 disk image instead
of a folder (WSL's ``ext4.vhdx``). The caller opens the image (with the user's rights: the VM
never opens a path) and passes this in place of a directory; the VM attaches it to its SCSI
controller and mounts it with ``fs_type`` and ``mount_options`` (WSL's defaults).
"""

from __future__ import annotations

__all__ = ["DEFAULT_MOUNT_OPTIONS", "DiskImage", "disk_format"]

DEFAULT_MOUNT_OPTIONS = "discard,errors=remount-ro,data=ordered"
NOT_SPARSE_MOUNT_OPTIONS = "errors=remount-ro,data=ordered"  # no discard: freed blocks stay allocated
# QEMU's format driver of an image, by its name's extension (any other name: raw)
DISK_FORMATS = {".vhdx": "vhdx", ".vhd": "vpc"}


def disk_format(name: str) -> str:
    """The format of the image file called ``name``: vhdx, vpc (VHD) or raw."""
    for extension, driver in DISK_FORMATS.items():
        if name.lower().endswith(extension):
            return driver
    return "raw"


class DiskImage:
    """An open disk (the caller's descriptor ``fd``, read-write unless opened read-only)."""

    __slots__ = ("fd", "fs_type", "mount_options")

    def __init__(self, fd: int, fs_type: str = "ext4", mount_options: str = DEFAULT_MOUNT_OPTIONS) -> None:
        self.fd = fd
        self.fs_type = fs_type
        self.mount_options = mount_options

    def __repr__(self) -> str:
        return f"DiskImage(fd={self.fd}, fs_type={self.fs_type!r}, mount_options={self.mount_options!r})"
