"""QEMU's process for a ``qemu`` VM: it runs as the VM's owner and opens nothing of root's.

A guest that escapes into QEMU must get no more of the host than the VM's owner has. The monitor
(root) therefore starts QEMU with the owner's uid and gid (no supplementary groups but the group
of ``/dev/kvm`` when the owner is in it) and ``no_new_privs``, and hands it, as descriptors on
fixed numbers (``qemu_command.QEMU_FDS``), everything it would otherwise open with root's rights:

* the kernel and the initramfs, copied into sealed memory files (QEMU reads them as
  ``/proc/self/fd/N``, which any process may reopen). A kernel the user named (``[wsl2] kernel``)
  is opened with the owner's rights (``open_as_owner``), so no file the owner cannot read reaches
  the VM; the host's own kernel and the cached initramfs are root's and opened as root;
* the guest console's log file (``-add-fd``, ``/dev/fdset/1``), and with ``debugConsole`` on a
  terminal a pipe to the console relay (``qemu_console``) as QEMU's standard output;
* the swap disk (``[wsl2] swap``, ``/dev/fdset/2``): an unnamed sparse file in the cache root, or
  the file ``[wsl2] swapFile`` names, made or opened by a child that became the owner (and
  removed the same way when the VM is gone);
* the channel port and the QMP monitor, each one end of a socket pair the monitor keeps the other
  end of (no socket file at all);
* the file servers' sockets: QEMU's vhost-user needs a socket it connects to itself, so it gets an
  ``O_PATH`` descriptor of each (``/proc/self/fd/N``; the socket belongs to the owner, the runtime
  folder around it stays root's).

When the owner is root (the command line run as root) QEMU keeps root's ids, with the same
descriptors.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import pwd
import signal
import socket
import stat
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pywsl.vm.errors import VmError

__all__ = [
    "QemuIdentity",
    "copy_to_memory",
    "inherited_fd",
    "named_swap_file",
    "open_as_owner",
    "owner_identity",
    "remove_swap_file",
    "spawn_qemu",
    "swap_file",
]

KVM_DEVICE = "/dev/kvm"
MAX_IMAGE_BYTES = 512 * 1024 * 1024
_PR_SET_PDEATHSIG = 1
_PR_SET_NO_NEW_PRIVS = 38
_F_ADD_SEALS = 1033
_F_SEAL_SEAL, _F_SEAL_SHRINK, _F_SEAL_GROW, _F_SEAL_WRITE = 1, 2, 4, 8
_MOVE_BASE = 64  # descriptors are first moved above this, then onto their fixed numbers


@dataclass(frozen=True)
class QemuIdentity:
    """The ids QEMU runs with: ``uid``, ``gid`` and the supplementary ``groups``."""

    uid: int
    gid: int
    groups: tuple[int, ...] = ()

    @property
    def is_root(self) -> bool:
        return self.uid == 0


def owner_identity(uid: int, gid: int) -> QemuIdentity:
    """The owner's ids, with the group of ``/dev/kvm`` only (when the owner is in it)."""
    if uid == 0:
        return QemuIdentity(0, gid, ())
    groups: tuple[int, ...] = ()
    with contextlib.suppress(OSError, KeyError):
        kvm_group = os.stat(KVM_DEVICE).st_gid
        if kvm_group != 0 and kvm_group in os.getgrouplist(pwd.getpwuid(uid).pw_name, gid):
            groups = (kvm_group,)
    return QemuIdentity(uid, gid, groups)


def _become(identity: QemuIdentity) -> None:
    """In a child: drop to ``identity`` for good (no way back to root, no new privileges)."""
    os.setgroups(list(identity.groups))
    os.setresgid(identity.gid, identity.gid, identity.gid)
    os.setresuid(identity.uid, identity.uid, identity.uid)
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)


def _as_owner(identity: QemuIdentity, action: Callable[[], int | None]) -> tuple[int | None, str]:
    """``action`` run in a child that became the owner: (the descriptor it returned, "") or
    (None, why it failed); the child's descriptor comes back over a socket pair."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            ours.close()
            if not identity.is_root:
                _become(identity)
            fd = action()
            if fd is None:
                theirs.send(b"F")
            else:
                socket.send_fds(theirs, [b"F"], [fd])
            code = 0
        except OSError as error:
            with contextlib.suppress(OSError):
                theirs.send(b"E" + (error.strerror or "error").encode())
        finally:
            os._exit(code)
    theirs.close()
    try:
        ours.settimeout(10.0)
        data, fds, _flags, _address = socket.recv_fds(ours, 256, 1)
    finally:
        ours.close()
        os.waitpid(pid, 0)
    if data != b"F" or len(fds) > 1:
        for fd in fds:
            os.close(fd)
        return None, data[1:].decode(errors="replace") if data.startswith(b"E") else "no answer"
    return (fds[0] if fds else None), ""


def open_as_owner(path: str, identity: QemuIdentity) -> int:
    """``path`` opened read-only with the owner's rights (in a child that became the owner), a
    regular file; VmError when the owner may not read it."""
    fd, reason = _as_owner(
        identity, lambda: os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    )
    if fd is None:
        raise VmError(f"the kernel {path} cannot be read by the VM's owner: {reason}")
    return _regular(fd, path)


def _regular(fd: int, path: str) -> int:
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_IMAGE_BYTES:
        os.close(fd)
        raise VmError(f"{path} is not a kernel or initramfs image (a regular file of at most 512 MiB)")
    return fd


def open_as_root(path: str) -> int:
    """A root-owned image (the host's kernel, the cached initramfs), read-only."""
    return _regular(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC), path)


def copy_to_memory(fd: int, name: str) -> int:
    """A sealed memory file with what ``fd`` holds (``fd`` is closed): QEMU reopens it through
    ``/proc/self/fd`` whatever its ids, and nobody can change it."""
    memory = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        with os.fdopen(fd, "rb", closefd=True) as source:
            os.set_blocking(source.fileno(), True)
            while chunk := source.read(1 << 20):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(memory, view) :]
        seals = _F_SEAL_SEAL | _F_SEAL_SHRINK | _F_SEAL_GROW | _F_SEAL_WRITE
        fcntl.fcntl(memory, _F_ADD_SEALS, seals)
    except BaseException:
        os.close(memory)
        raise
    return memory


def swap_file(folder: Path, size: int, path: str | None = None, identity: QemuIdentity | None = None) -> int:
    """The swap disk: a sparse file of ``size`` bytes, read and written by QEMU through its
    descriptor. Without ``path`` it is unnamed (``O_TMPFILE``) in ``folder`` (a folder of root's
    on a disk, the cache root), so nothing of it is left on the host once the VM is gone. With
    ``path`` (``[wsl2] swapFile``) it is that file, made or opened by the owner (``identity``)."""
    if path is not None:
        return named_swap_file(path, size, identity or QemuIdentity(0, 0))
    folder.mkdir(mode=0o755, parents=True, exist_ok=True)
    fd = os.open(folder, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    try:
        os.ftruncate(fd, size)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_swap(path: str, size: int, uid: int) -> int:
    """In the owner's child: ``path`` made (mode 0600) or opened without following a link, a
    regular file of the owner's that is empty or of ``size`` bytes (what an earlier VM left),
    emptied and sized to ``size`` (sparse). Any other file is refused, never overwritten."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != uid:
        raise OSError(errno.EPERM, "not a regular file of the VM's owner")
    if info.st_size not in (0, size):
        raise OSError(errno.EEXIST, f"it exists and is not a swap disk of {size} bytes (remove it)")
    os.ftruncate(fd, 0)  # what an earlier VM swapped out goes
    os.ftruncate(fd, size)
    return fd


def named_swap_file(path: str, size: int, identity: QemuIdentity) -> int:
    """``[wsl2] swapFile``: the swap disk at ``path``, made or opened with the owner's rights (a
    link, a folder that does not exist or that the owner cannot write, or a file that is not
    the owner's is refused with VmError)."""
    fd, reason = _as_owner(identity, lambda: _open_swap(path, size, identity.uid))
    if fd is None:
        raise VmError(f"[wsl2] swapFile {path} cannot be used by the VM's owner: {reason}")
    return fd


def _remove_swap(path: str, size: int, uid: int) -> None:
    info = os.lstat(path)
    if stat.S_ISREG(info.st_mode) and info.st_uid == uid and info.st_size == size:
        os.unlink(path)


def remove_swap_file(path: str, size: int, identity: QemuIdentity) -> None:
    """The swap file of ``[wsl2] swapFile`` removed with the owner's rights once the VM is gone
    (as WSL deletes its swap disk), when it is still a file of the owner's of the swap's size."""
    _as_owner(identity, lambda: _remove_swap(path, size, identity.uid))


def inherited_fd(text: str) -> int:
    """A descriptor number given on the command line, made close-on-exec at once (so that only
    the process it is placed for inherits it)."""
    fd = int(text)
    os.set_inheritable(fd, False)
    return fd


def _place(fds: Mapping[int, int]) -> None:
    """In the child: each source descriptor onto its fixed number (inheritable), and no other
    descriptor but the standard streams left open across the exec."""
    moved = {target: fcntl.fcntl(source, fcntl.F_DUPFD_CLOEXEC, _MOVE_BASE) for target, source in fds.items()}
    for target, source in moved.items():
        os.dup2(source, target, inheritable=True)
    for name in os.listdir("/proc/self/fd"):  # anything else inherited (close-on-exec ones go anyway)
        fd = int(name)
        if fd > 2 and fd not in fds:
            with contextlib.suppress(OSError):
                if not fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC:
                    os.close(fd)


def spawn_qemu(
    argv: list[str], fds: Mapping[int, int], identity: QemuIdentity, log_fd: int
) -> subprocess.Popen[bytes]:
    """Start QEMU with ``fds`` (fixed number -> the monitor's descriptor) as ``identity``; it gets
    SIGKILL when the monitor dies. Only the placed descriptors and the standard streams reach it."""
    parent = os.getpid()

    def prepare() -> None:  # after the ids changed (subprocess sets them first)
        _place(fds)
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    dropped = not identity.is_root
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=log_fd,
        stderr=log_fd,
        preexec_fn=prepare,
        close_fds=False,  # every other descriptor of the monitor is close-on-exec (PEP 446)
        user=identity.uid if dropped else None,
        group=identity.gid if dropped else None,
        extra_groups=list(identity.groups) if dropped else None,
        cwd="/",
    )
