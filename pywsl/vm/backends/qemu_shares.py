"""The distributions folder of a ``qemu`` VM: host directories made visible in the guest.

WSL's VM gets each distribution as a disk. Here a directory the host names in ``LaunchInit``,
``Import`` or ``Export`` (an open descriptor, opened with the user's rights) is attached by the
monitor, as a detached copy of its mount tree (``open_tree``), under ``distributions/<n>`` of the
VM's runtime folder; that folder is a shared mount, so the file server sees it at once, and the
guest finds it as ``/run/pywsl/distributions/<n>``. Once the guest has opened it (``RELEASED``)
the monitor detaches it again: the guest's mount and the file server's open handles keep it.

The file server is ``virtiofsd``, started by the monitor in a user namespace with the VM's uid
and gid maps (the same mapping as the namespaces backend's user namespace): it acts on the host's
files only with the rights of those ids, never with host root's, and the guest's root writes files
owned by the owner's mapped root. It reaches the folder through a bind mount in its own mount
namespace (the runtime folder itself is root's only).

A second file server, the same way, serves the host's tree for ``/mnt/host``: a copy of the host's
mounts in its own mount namespace with ``/proc``, ``/sys`` and ``/dev`` covered by empty read-only
tmpfs mounts; through the user namespace, the VM's root sees the host's files as the owner's
mapped ids may (files of unmapped ids belong to ``nobody``), as on the namespaces backend.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
from pathlib import Path

from pywsl.vm.config import IdMap
from pywsl.vm.errors import VmError
from pywsl.vm.idmap import format_map

__all__ = [
    "DISTRIBUTIONS_NAME",
    "HOST_FILES_SOCKET_NAME",
    "VIRTIOFSD",
    "VIRTIOFSD_SOCKET_NAME",
    "DistributionShare",
    "remove_share",
    "start_virtiofsd",
]

DISTRIBUTIONS_NAME = "distributions"
VIRTIOFSD_SOCKET_NAME = "virtiofsd.sock"
HOST_FILES_SOCKET_NAME = "host-files.sock"
VIRTIOFSD = "/usr/lib/qemu/virtiofsd"
_SERVER_ROOT = "/tmp"  # where the folder is bound in the file server's own mount namespace
_HOST_VIEW = "/mnt"  # where the host view is made in the host files server's mount namespace

_CLONE_NEWNS = 0x00020000
_CLONE_NEWUSER = 0x10000000
_MS_RDONLY = 0x1
_MS_NOSUID = 0x2
_MS_NODEV = 0x4
_MS_NOEXEC = 0x8
_MS_BIND = 0x1000
_MS_REC = 0x4000
_MS_SLAVE = 1 << 19
_MS_SHARED = 1 << 20
_MNT_DETACH = 2
_OPEN_TREE_CLONE = 1
_AT_EMPTY_PATH = 0x1000
_AT_RECURSIVE = 0x8000
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_SYS_OPEN_TREE = 428
_SYS_MOVE_MOUNT = 429
_PR_SET_PDEATHSIG = 1


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def _check(result: int, what: str) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return result


def _mount(source: str | None, target: str, fstype: str | None, flags: int) -> None:
    result = _libc().mount(_encoded(source), target.encode(), _encoded(fstype), ctypes.c_ulong(flags), None)
    _check(result, target)


def _encoded(text: str | None) -> bytes | None:
    return None if text is None else text.encode()


def _umount(target: str) -> None:
    _check(_libc().umount2(target.encode(), _MNT_DETACH), target)


def _attach(fd: int, target: str) -> None:
    libc = _libc()
    tree = _check(
        libc.syscall(
            ctypes.c_long(_SYS_OPEN_TREE),
            ctypes.c_int(fd),
            b"",
            ctypes.c_uint(_OPEN_TREE_CLONE | os.O_CLOEXEC | _AT_EMPTY_PATH | _AT_RECURSIVE),
        ),
        "open_tree",
    )
    try:
        _check(
            libc.syscall(
                ctypes.c_long(_SYS_MOVE_MOUNT),
                ctypes.c_int(tree),
                b"",
                ctypes.c_int(-100),
                target.encode(),
                ctypes.c_uint(_MOVE_MOUNT_F_EMPTY_PATH),
            ),
            "move_mount",
        )
    finally:
        os.close(tree)


class DistributionShare:
    """``<runtime>/distributions``: a shared mount with one folder per directory the host passed."""

    def __init__(self, runtime_dir: Path) -> None:
        self.folder = Path(runtime_dir) / DISTRIBUTIONS_NAME
        self.next_name = 1
        self.attached: set[str] = set()

    def setup(self) -> None:
        remove_share(self.folder.parent)
        self.folder.mkdir(mode=0o755)
        _mount(str(self.folder), str(self.folder), None, _MS_BIND)
        _mount(None, str(self.folder), None, _MS_SHARED)

    def attach(self, fd: int) -> str:
        """Attach the directory ``fd``; its name in the folder."""
        name = str(self.next_name)
        self.next_name += 1
        target = self.folder / name
        target.mkdir(mode=0o755)
        try:
            _attach(fd, str(target))
        except OSError:
            target.rmdir()
            raise
        self.attached.add(name)
        return name

    def release(self, name: str) -> None:
        if name in self.attached:
            self.attached.discard(name)
            with contextlib.suppress(OSError):
                _umount(str(self.folder / name))
            with contextlib.suppress(OSError):
                (self.folder / name).rmdir()

    def teardown(self) -> None:
        for name in list(self.attached):
            self.release(name)
        remove_share(self.folder.parent)


def remove_share(runtime_dir: Path) -> None:
    """Detach and remove what a VM's distributions folder holds (also after a killed monitor)."""
    folder = Path(runtime_dir) / DISTRIBUTIONS_NAME
    if not folder.exists():
        return
    with contextlib.suppress(OSError):
        for entry in os.listdir(folder):
            with contextlib.suppress(OSError):
                _umount(str(folder / entry))
    with contextlib.suppress(OSError):
        _umount(str(folder))
    with contextlib.suppress(OSError):
        for entry in os.listdir(folder):
            with contextlib.suppress(OSError):
                os.rmdir(folder / entry)
    with contextlib.suppress(OSError):
        os.rmdir(folder)


def _write_maps(pid: int, uid_map: IdMap, gid_map: IdMap) -> None:
    Path(f"/proc/{pid}/uid_map").write_text(format_map(uid_map))
    Path(f"/proc/{pid}/gid_map").write_text(format_map(gid_map))


def _host_view() -> str:
    """In the file server's mount namespace: the host's tree with its ``/proc``, ``/sys`` and
    ``/dev`` covered by empty read-only tmpfs mounts (what ``host_view`` gives the namespaces
    backend's VM); its path."""
    _mount("/", _HOST_VIEW, None, _MS_BIND | _MS_REC)
    for masked in ("proc", "sys", "dev"):
        _mount("tmpfs", f"{_HOST_VIEW}/{masked}", "tmpfs", _MS_RDONLY | _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    return _HOST_VIEW


def _server_child(folder: Path | None, sync: socket.socket, listener: int, log_fd: int) -> None:
    """In the child: enter a user and mount namespace, become its root, bind the folder (or make
    the host view when ``folder`` is None), exec."""
    _check(_libc().unshare(_CLONE_NEWUSER | _CLONE_NEWNS), "unshare")
    # opened in the new mount namespace, still as host root (the runtime folder is root's only)
    folder_fd = -1 if folder is None else os.open(folder, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    sync.send(b"U")
    if sync.recv(1) != b"M":
        os._exit(1)
    os.setresgid(0, 0, 0)
    os.setgroups([])
    os.setresuid(0, 0, 0)
    _mount(None, "/", None, _MS_REC | _MS_SLAVE)
    if folder_fd >= 0:
        _mount(f"/proc/self/fd/{folder_fd}", _SERVER_ROOT, None, _MS_BIND | _MS_REC)
        source = _SERVER_ROOT
    else:
        source = _host_view()
    _libc().prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if listener != 3:
        os.dup2(listener, 3)
    os.set_inheritable(3, True)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.closerange(4, 1 << 16)
    os.execv(
        VIRTIOFSD,
        [VIRTIOFSD, "--fd=3", "-o", f"source={source}", "-o", "cache=auto", "--rlimit-nofile=0"],
    )


def start_virtiofsd(
    runtime_dir: Path,
    folder: Path | None,
    uid_map: IdMap,
    gid_map: IdMap,
    log_fd: int,
    socket_name: str = VIRTIOFSD_SOCKET_NAME,
    socket_owner: tuple[int, int] = (0, 0),
) -> int:
    """Start the file server for ``folder`` (None: the masked host tree, for ``/mnt/host``) as the
    VM's mapped ids; its pid. QEMU connects to ``<runtime>/<socket_name>`` (through a descriptor:
    the socket belongs to ``socket_owner``, QEMU's uid and gid, the runtime folder to root)."""
    if shutil.which(VIRTIOFSD) is None:
        raise VmError(f"the qemu backend needs {VIRTIOFSD} (Debian: qemu-system-common)")
    path = Path(runtime_dir) / socket_name
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        listener.bind(str(path))
        os.chmod(path, 0o600)
        os.chown(path, *socket_owner)
        listener.listen(1)
        pid = os.fork()
        if pid == 0:
            try:
                ours.close()
                _server_child(folder, theirs, listener.fileno(), log_fd)
            except BaseException as error:
                os.write(log_fd, f"pywsl: cannot start the file server: {error}\n".encode())
            finally:
                os._exit(127)
        theirs.close()
        try:
            if ours.recv(1) != b"U":
                raise VmError("the file server did not start")
            _write_maps(pid, uid_map, gid_map)
            ours.send(b"M")
            ours.recv(1)  # end of file: the child's end closed at its exec (or its exit)
            if os.waitpid(pid, os.WNOHANG)[0]:
                raise VmError("the file server exited at once (see the VM's log)")
        except BaseException:
            with contextlib.suppress(ChildProcessError, ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            raise
        return pid
    finally:
        listener.close()
        ours.close()
        with contextlib.suppress(OSError):
            theirs.close()
