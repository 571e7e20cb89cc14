"""Disks a user attaches with ``--mount`` (a real VM): held until ``--unmount``, mounted under /mnt/wsl.

WSL's ``--mount`` attaches a disk to the utility VM and mounts it (or one of its partitions) at
``/mnt/wsl/<name>``, where every distribution sees it; ``--bare`` only attaches it; ``--unmount``
unmounts its volumes and detaches it. Here the host attaches the disk for each message that
carries it (``port_demux``); the use a ``Mount`` message brings is kept for as long as the disk
stays attached by the user, and handed back (``DiskUses``) at ``Detach`` or ``Unmount``. The
mounts go into mini_init's shared tmpfs (the VM's ``/mnt/wsl``), which propagates them to the
distributions. Results are WSL's: 0 or a negative errno, and the step that failed.
"""

from __future__ import annotations

import errno
import os

from pywsl.guest import disks, mounts, programs, syscalls
from pywsl.lean_context import suppress
from pywsl.wire.message_types import MountStep

STEP = MountStep  # the enum's values as plain numbers (`pywsl.wire.enums` would cost the VM's start)
DETECT_TIMEOUT = 30.0
MAX_NAME = 255
Result = tuple[int, int]  # (0 or -errno, the failing step)


def _partition_device(fd: int, partition: int) -> str:
    """The node of ``partition`` (1-based) of the disk ``fd``; the whole disk for 0."""
    disk = os.readlink(f"/proc/self/fd/{fd}")
    if partition == 0:
        return disk
    name = os.path.basename(disk)
    candidate = f"{name}{partition}"
    if not os.path.isdir(f"/sys/class/block/{name}/{candidate}"):
        raise OSError(errno.ENOENT, f"{name} has no partition {partition}")
    return f"/dev/{candidate}"


def detect_type(device: str) -> str:
    """The file system on ``device`` (``blkid -p``, the host's util-linux); OSError when none."""
    try:
        done = programs.run(
            [disks.tool("blkid"), "-p", "-o", "value", "-s", "TYPE", device],
            {"PATH": disks.TOOL_PATH, "LANG": "C.UTF-8"},
            stderr=programs.DEVNULL,
            timeout=DETECT_TIMEOUT,
        )
    except TimeoutError:
        raise OSError(errno.ETIMEDOUT, "blkid did not answer") from None
    kind = done.output.decode(errors="replace").strip()
    if done.returncode != 0 or not kind:
        raise OSError(errno.EINVAL, f"no file system found on {device}")
    return kind


def valid_name(name: str) -> bool:
    return (
        bool(name)
        and name not in (".", "..")
        and "/" not in name
        and "\0" not in name
        and len(name) <= MAX_NAME
    )


class UserDisks:
    """The user's disks in this VM: LUN -> the uses held for it and the names mounted from it."""

    def __init__(self, uses: disks.DiskUses, mount_root: str = mounts.SHARED_TMPFS_PATH) -> None:
        self.uses = uses
        self.mount_root = mount_root
        self.held: dict[int, int] = {}
        self.names: dict[int, list[str]] = {}

    def mount(self, fd: int, lun: int, partition: int, fs_type: str, name: str, options: str) -> Result:
        """Attach (``name`` "": ``--bare``) or mount a partition of the disk; this message's use is
        kept when it succeeds, handed back when it fails."""
        if not name:
            if lun in self.held:
                self.uses.end_now(lun)
                return -errno.EEXIST, STEP.LxMiniInitMountStepFindDevice
            self.held[lun] = 1
            self.names[lun] = []
            return 0, STEP.LxMiniInitMountStepNone
        result = self._mount(fd, partition, fs_type, name, options)
        if result[0] != 0:
            self.uses.end_now(lun)
            return result
        self.held[lun] = self.held.get(lun, 0) + 1
        self.names.setdefault(lun, []).append(name)
        return result

    def _mount(self, fd: int, partition: int, fs_type: str, name: str, options: str) -> Result:
        if not valid_name(name):
            return -errno.EINVAL, STEP.LxMiniInitMountStepMount
        target = os.path.join(self.mount_root, name)
        if os.path.lexists(target):
            return -errno.EEXIST, STEP.LxMiniInitMountStepMount
        step = STEP.LxMiniInitMountStepFindPartition
        try:
            device = _partition_device(fd, partition)
            step = STEP.LxMiniInitMountStepDetectFilesystem
            kind = fs_type or detect_type(device)
            step = STEP.LxMiniInitMountStepMount
            flags, data = disks.mount_options(options)
            os.mkdir(target, 0o755)
            try:
                syscalls.mount(device, target, kind, flags, data or None)
            except OSError:
                os.rmdir(target)
                raise
        except OSError as error:
            return -(error.errno or errno.EIO), step
        return 0, STEP.LxMiniInitMountStepNone

    def unmount(self, name: str) -> Result:
        """Unmount one volume the user mounted (the disk stays attached)."""
        for lun, names in self.names.items():
            if name in names:
                result = self._unmount(name)
                if result[0] == 0:
                    names.remove(name)
                    self.held[lun] -= 1
                    self.uses.end_now(lun)
                return result
        return -errno.ENOENT, STEP.LxMiniInitMountStepUnmount

    def _unmount(self, name: str) -> Result:
        target = os.path.join(self.mount_root, name)
        try:
            syscalls.umount2(target, syscalls.MNT_DETACH)
        except OSError as error:
            return -(error.errno or errno.EIO), STEP.LxMiniInitMountStepUnmount
        try:
            os.rmdir(target)
        except OSError as error:
            return -(error.errno or errno.EIO), STEP.LxMiniInitMountStepRmDir
        return 0, STEP.LxMiniInitMountStepNone

    def detach(self, lun: int | None) -> Result:
        """Unmount every volume of the disk at ``lun`` (every user disk for None) and hand back
        the uses held for it. -ENOENT when no such disk is attached."""
        luns = list(self.held) if lun is None else [lun]
        if lun is not None and lun not in self.held:
            return -errno.ENOENT, STEP.LxMiniInitMountStepFindDevice
        result: Result = (0, STEP.LxMiniInitMountStepNone)
        for each in luns:
            for name in self.names.pop(each, []):
                unmounted = self._unmount(name)
                if unmounted[0] != 0 and result[0] == 0:
                    result = unmounted
            for _ in range(self.held.pop(each, 0)):
                self.uses.end_now(each)
        return result

    def close(self) -> None:
        """The VM stops: unmount everything (the disks go with the VM)."""
        with suppress(OSError):
            self.detach(None)
