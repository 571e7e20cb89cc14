"""Disks of a ``qemu`` VM: image files and block devices attached to the VM's SCSI controller.

The VM has a virtio-scsi controller (``SCSI_CONTROLLER``) from its start; a disk is hot-plugged as
a ``scsi-hd`` on its own LUN, as WSL attaches VHDs to its utility VM's SCSI controller. The disk
comes as a descriptor in a mini_init message (``qemu_bridge``): the service opened the image file
with the user's rights (or a block device, for root), so neither the monitor nor QEMU ever opens a
path. The monitor hands the descriptor to QEMU with QMP's ``add-fd`` (a file descriptor set; a
read-only reopening of ``/proc/self/fd`` as well, which QEMU asks for when it probes), adds the
block node and the device, and closes its own copies.

The image format comes from the file's name, as WSL's (``.vhdx``: VHDX, ``.vhd``: VHD, any other
name: raw), and must match the file's signature; QEMU never probes a format (a raw image holding
another format's header could otherwise name files for QEMU to open).

The same image given again while it is attached keeps its LUN: two uses share one disk (an export
while the distribution runs mounts the same file system). Each use the guest ends is reported
(``DETACH``); when the last one ends, the disk is unplugged and its node and descriptors dropped.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import stat
from dataclasses import dataclass

from pywsl.vm.backends.qemu_qmp import QmpError, QmpLink
from pywsl.vm.disk_image import disk_format

log = logging.getLogger("pywsl.qemu-disks")

__all__ = ["MAX_LUN", "SCSI_CONTROLLER", "DiskAttacher", "image_format"]

SCSI_CONTROLLER = "scsi0"
MAX_LUN = 254  # WSL's limit of attached disks
FDSET_BASE = 100  # the descriptor set of LUN n is FDSET_BASE + n (the console's and the swap's are below)
UNPLUG_TIMEOUT = 5.0
_SIGNATURES = {"vhdx": (0, b"vhdxfile"), "vpc": (-512, b"conectix")}


@dataclass
class Attachment:
    lun: int
    key: tuple[int, int]
    uses: int = 1

    @property
    def node(self) -> str:
        return f"disk{self.lun}"

    @property
    def device(self) -> str:
        return f"lun{self.lun}"

    @property
    def fdset(self) -> int:
        return FDSET_BASE + self.lun


def image_format(fd: int) -> str:
    """QEMU's format driver for the image file ``fd``: by its name, checked against its contents."""
    try:
        name = os.readlink(f"/proc/self/fd/{fd}").removesuffix(" (deleted)")
    except OSError:
        name = ""
    driver = disk_format(name)
    if driver == "raw":
        return driver
    offset, signature = _SIGNATURES[driver]
    size = os.fstat(fd).st_size
    where = offset if offset >= 0 else size + offset
    found = where >= 0 and os.pread(fd, len(signature), where) == signature
    # a dynamic VHD also keeps a copy of its footer at the start
    if not found and (driver != "vpc" or os.pread(fd, len(signature), 0) != signature):
        raise OSError(errno.EINVAL, f"{name or 'the disk image'} is not a {driver.upper()} file")
    return driver


def _read_only(fd: int) -> bool:
    return fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY


class DiskAttacher:
    """The disks attached to one VM, by image (device and inode) and by LUN."""

    def __init__(self, qmp: QmpLink) -> None:
        self.qmp = qmp
        self.by_key: dict[tuple[int, int], Attachment] = {}
        self.by_lun: dict[int, Attachment] = {}
        self.next_lun = 1  # LUNs go round, so that a LUN just unplugged is not reused at once

    def attach(self, fd: int) -> int:
        """Attach the image or block device ``fd`` (taken over: always closed) and return its LUN."""
        try:
            info = os.fstat(fd)
            if not (stat.S_ISREG(info.st_mode) or stat.S_ISBLK(info.st_mode)):
                raise OSError(errno.EINVAL, "a disk is an image file or a block device")
            key = (info.st_dev, info.st_ino)
            attached = self.by_key.get(key)
            if attached is not None:
                attached.uses += 1
                return attached.lun
            driver = "raw" if stat.S_ISBLK(info.st_mode) else image_format(fd)
            attachment = Attachment(self._free_lun(), key)
            self._plug(attachment, fd, driver, stat.S_ISBLK(info.st_mode))
        finally:
            os.close(fd)
        self.by_key[key] = attachment
        self.by_lun[attachment.lun] = attachment
        log.info("disk attached at LUN %d (%s)", attachment.lun, driver)
        return attachment.lun

    def _free_lun(self) -> int:
        for _ in range(MAX_LUN):
            lun = self.next_lun
            self.next_lun = lun % MAX_LUN + 1
            if lun not in self.by_lun:
                return lun
        raise OSError(errno.ENOSPC, f"{MAX_LUN} disks are attached already")

    def _plug(self, attachment: Attachment, fd: int, driver: str, block_device: bool) -> None:
        read_only = _read_only(fd)
        descriptors = [fd]
        if not read_only:
            descriptors.append(os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC))
        done: list[str] = []
        try:
            for descriptor in descriptors:
                self.qmp.execute("add-fd", {"fdset-id": attachment.fdset}, fds=[descriptor])
                done[:] = ["fdset"]
            protocol = "host_device" if block_device else "file"
            self.qmp.execute(
                "blockdev-add",
                {
                    "driver": driver,
                    "node-name": attachment.node,
                    "read-only": read_only,
                    "discard": "unmap",
                    # zeros written (ext4's lazy inode table and journal set-up) stay holes
                    "detect-zeroes": "off" if read_only else "unmap",
                    "file": {
                        "driver": protocol,
                        "filename": f"/dev/fdset/{attachment.fdset}",
                        "read-only": read_only,
                        "discard": "unmap",
                    },
                },
            )
            done.append("node")
            self.qmp.execute(
                "device_add",
                {
                    "driver": "scsi-hd",
                    "bus": f"{SCSI_CONTROLLER}.0",
                    "drive": attachment.node,
                    "id": attachment.device,
                    "scsi-id": 0,
                    "lun": attachment.lun,
                },
            )
        except QmpError as error:
            self._undo(attachment, done)
            raise OSError(errno.EIO, f"QEMU cannot attach the disk: {error}") from None
        finally:
            for descriptor in descriptors[1:]:
                os.close(descriptor)

    def _undo(self, attachment: Attachment, done: list[str]) -> None:
        with contextlib.suppress(QmpError):
            if "node" in done:
                self.qmp.execute("blockdev-del", {"node-name": attachment.node})
            if "fdset" in done:
                self.qmp.execute("remove-fd", {"fdset-id": attachment.fdset})

    def release(self, lun: int) -> None:
        """One use of the disk at ``lun`` ended; unplug it when it was the last."""
        attachment = self.by_lun.get(lun)
        if attachment is None:
            return
        attachment.uses -= 1
        if attachment.uses > 0:
            return
        del self.by_lun[lun]
        del self.by_key[attachment.key]
        try:
            self.qmp.execute("device_del", {"id": attachment.device})
            if not self.qmp.wait_event("DEVICE_DELETED", attachment.device, UNPLUG_TIMEOUT):
                log.warning("disk at LUN %d: QEMU did not confirm the unplug", lun)
            self._undo(attachment, ["fdset", "node"])
        except QmpError as error:
            log.warning("cannot detach the disk at LUN %d: %s", lun, error)
        log.info("disk at LUN %d detached", lun)

    def attached(self) -> dict[int, int]:
        """LUN -> uses, of the disks attached now."""
        return {lun: attachment.uses for lun, attachment in self.by_lun.items()}
