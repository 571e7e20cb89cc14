"""Disks in the utility VM (the ``qemu`` backend): finding, formatting, mounting and resizing them.

The host attaches a disk to the VM's SCSI controller and names it by its LUN (``port_demux``
opens its device node for the message that carries it). Here:

* ``device_for_lun`` waits (bounded) for the hot-plugged device's node, found through
  ``/sys/bus/scsi/devices/<host>:0:0:<LUN>/block``, as WSL's mini_init finds its VHDs;
* ``lun_of`` is the other way, from a device descriptor;
* ``format_ext4`` runs ``mkfs.ext4`` on a new, empty disk (all zeros: a sparse image), without
  zeroing what already reads as zeros;
* ``mount_tree`` mounts a disk's file system (the message's type and mount options) and returns
  it as a detached mount tree, like a shared folder's clone, so that the distribution is started
  from it exactly as from a folder; the file system stays mounted as long as a tree refers to it;
* ``in_use`` says whether the device is still mounted somewhere (an exclusive open fails), so that
  a disk is handed back to the host only once its file system is gone;
* ``check_and_resize`` runs ``e2fsck -f -y`` and ``resize2fs`` for ``--manage --resize``.

The tools are the host's (e2fsprogs, on the VM's shared ``/usr``) and read the device through
``/proc/self/fd``.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Callable, Sequence

from pywsl.guest import mounts, programs, syscalls
from pywsl.lean_context import suppress

SCSI_DEVICES = "/sys/bus/scsi/devices"
DISKS_FOLDER = "/run/pywsl/disks"
DEVICE_TIMEOUT = 30.0  # a hot-plugged disk's node appears within this (TCG is slow)
TOOL_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
MKFS_OPTIONS = ("-q", "-F", "-G", "4096", "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard")
# mount(8) options that are flags of mount(2); the rest go to the file system as its data
_FLAGS = {
    "ro": (syscalls.MS_RDONLY, True),
    "rw": (syscalls.MS_RDONLY, False),
    "nosuid": (syscalls.MS_NOSUID, True),
    "suid": (syscalls.MS_NOSUID, False),
    "nodev": (syscalls.MS_NODEV, True),
    "dev": (syscalls.MS_NODEV, False),
    "noexec": (syscalls.MS_NOEXEC, True),
    "exec": (syscalls.MS_NOEXEC, False),
    "noatime": (0x400, True),
    "nodiratime": (0x800, True),
    "relatime": (0x200000, True),
    "sync": (0x10, True),
    "dirsync": (0x80, True),
}
_IGNORED = {"defaults", "auto", "noauto", "user", "nouser", "async", "atime", "diratime"}


def _scsi_lun(name: str) -> int | None:
    parts = name.split(":")
    if len(parts) != 4 or not all(part.isdigit() for part in parts) or parts[2] != "0":
        return None
    return int(parts[3])


def _block_name(scsi_device: str) -> str | None:
    try:
        names = os.listdir(os.path.join(SCSI_DEVICES, scsi_device, "block"))
    except OSError:
        return None
    return names[0] if names else None


def device_for_lun(lun: int, timeout: float = DEVICE_TIMEOUT) -> str:
    """``/dev/<name>`` of the disk at ``lun``, once its node exists (OSError ENODEV after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        with suppress(OSError):
            for entry in os.listdir(SCSI_DEVICES):
                if _scsi_lun(entry) == lun:
                    name = _block_name(entry)
                    if name and os.path.exists(f"/dev/{name}"):
                        return f"/dev/{name}"
        if time.monotonic() >= deadline:
            raise OSError(errno.ENODEV, f"the disk at LUN {lun} did not appear in the VM")
        time.sleep(0.005)


def lun_of(fd: int) -> int | None:
    """The LUN of the SCSI disk ``fd`` is a node of (None: not a SCSI disk)."""
    info = os.fstat(fd)
    if not stat.S_ISBLK(info.st_mode):
        return None
    folder = f"/sys/dev/block/{os.major(info.st_rdev)}:{os.minor(info.st_rdev)}"
    try:
        target = os.path.basename(os.path.realpath(os.path.join(folder, "device")))
    except OSError:
        return None
    return _scsi_lun(target)


def is_disk(fd: int) -> bool:
    return stat.S_ISBLK(os.fstat(fd).st_mode)


def which(name: str, path: str) -> str | None:
    """``shutil.which(name, path=path)`` (its POSIX search) without loading ``shutil``, which (with
    its compression modules) every VM would otherwise load at start for the disk tools."""
    if os.path.dirname(name):
        return name if _executable_file(name) else None
    seen: set[str] = set()
    for folder in path.split(os.pathsep) if path else ():
        if folder not in seen:
            seen.add(folder)
            candidate = os.path.join(folder, name)
            if _executable_file(candidate):
                return candidate
    return None


def _executable_file(path: str) -> bool:
    return os.path.exists(path) and os.access(path, os.F_OK | os.X_OK) and not os.path.isdir(path)


def tool(name: str) -> str:
    found = which(name, TOOL_PATH)
    if found is None:
        raise OSError(errno.ENOENT, f"{name} is not in the VM (the host's e2fsprogs)")
    return found


def run_tool(
    argv: list[str], fd: int, output: int | None = None, after: Sequence[str] = ()
) -> programs.Finished:
    """Run a tool on the device ``fd``: ``argv``, ``/proc/self/fd/<fd>``, then ``after``; its
    output (stdout and stderr) goes to ``output``, or is captured."""
    return programs.run(
        [tool(argv[0]), *argv[1:], f"/proc/self/fd/{fd}", *after],
        {"PATH": TOOL_PATH, "LANG": "C.UTF-8"},
        stdout=programs.CAPTURE if output is None else output,
        stderr=programs.STDOUT,
        pass_fds=(fd,),
    )


def format_ext4(fd: int) -> None:
    """A new ext4 file system on the disk ``fd`` (which reads as zeros: nothing is zeroed)."""
    done = run_tool(["mkfs.ext4", *MKFS_OPTIONS], fd)
    if done.returncode != 0:
        text = done.output.decode(errors="replace").strip()
        raise OSError(errno.EIO, f"mkfs.ext4 failed ({done.returncode}): {text}")


def mount_options(options: str) -> tuple[int, str]:
    """mount(2)'s flags and data for a mount(8)-style option string."""
    flags = 0
    data: list[str] = []
    for option in filter(None, (item.strip() for item in options.split(","))):
        if option in _FLAGS:
            bit, on = _FLAGS[option]
            flags = flags | bit if on else flags & ~bit
        elif option not in _IGNORED:
            data.append(option)
    return flags, ",".join(data)


def mount_tree(fd: int, fs_type: str, options: str) -> int:
    """The file system of the disk ``fd`` as a detached mount tree (an ``O_PATH``-like fd).

    OSError from the kernel when the disk holds no such file system or a damaged one (EINVAL,
    EUCLEAN, EIO...)."""
    kind = fs_type or "ext4"
    if kind == "ext4":  # a new disk reads as zeros: its inode tables need no zeroing in the background
        options = ",".join(filter(None, (options, "noinit_itable")))
    flags, data = mount_options(options)
    os.makedirs(DISKS_FOLDER, mode=0o700, exist_ok=True)
    folder = os.path.join(DISKS_FOLDER, f"{os.getpid()}-{os.urandom(4).hex()}")
    os.mkdir(folder, 0o700)
    try:
        syscalls.mount(f"/proc/self/fd/{fd}", folder, kind, flags, data or None)
        try:
            syscalls.mount(None, folder, None, syscalls.MS_PRIVATE)
            return mounts.clone_tree(folder)
        finally:
            syscalls.umount2(folder, syscalls.MNT_DETACH)
    finally:
        os.rmdir(folder)


def in_use(lun: int) -> bool:
    """True while the disk at ``lun`` is mounted (or held exclusively) anywhere in the VM."""
    try:
        device = device_for_lun(lun, timeout=0.0)
    except OSError:
        return False
    try:
        fd = os.open(device, os.O_RDONLY | os.O_EXCL | os.O_CLOEXEC)
    except OSError as error:
        return error.errno == errno.EBUSY
    os.close(fd)
    return False


def check_and_resize(fd: int, new_size: int, output: int) -> int:
    """``e2fsck -f -y`` then ``resize2fs`` to ``new_size`` bytes (0: the whole disk), the tools'
    output on ``output``; 0 or the first failing tool's exit status (resize2fs refuses to shrink
    below what the files use)."""
    check = run_tool(["e2fsck", "-f", "-y"], fd, output)
    if check.returncode not in (0, 1):  # 1: errors were corrected
        return check.returncode
    size = [f"{new_size // 1024}K"] if new_size else []
    return run_tool(["resize2fs"], fd, output, after=size).returncode


class DiskUses:
    """The disks pid 1 was given, by the child that uses each one (an instance's shim, a worker).

    The host attached a disk once for each message that carried it; each use is handed back
    (``release``: the LUN to the port demultiplexer, which tells the host) once its child ended
    and the disk's file system is no longer mounted anywhere in the VM."""

    def __init__(self, release: Callable[[int], None]) -> None:
        self.release = release
        self.by_child: dict[int, int] = {}
        self.pending: list[int] = []

    def hold(self, child: int, lun: int) -> None:
        self.by_child[child] = lun

    def child_ended(self, child: int) -> None:
        lun = self.by_child.pop(child, None)
        if lun is not None:
            self.pending.append(lun)

    def end_now(self, lun: int) -> None:
        """A use that ended without a child (a launch into the running instance, a failure)."""
        self.pending.append(lun)

    def flush(self) -> None:
        """Hand back every ended use whose disk is no longer mounted."""
        still: list[int] = []
        for lun in self.pending:
            if in_use(lun):
                still.append(lun)
                continue
            try:
                self.release(lun)
            except OSError:
                still.append(lun)
        self.pending = still
