"""Linux system calls that Python 3.11's ``os`` module lacks, for the guest side of the utility VM.

WSL's ``mini_init`` and ``init`` are C programs that call ``unshare``, ``mount``, ``pivot_root`` and
friends directly. pywsl's guest roles do the same through ``ctypes``: every wrapper checks the result
and raises :class:`OSError` with the errno and a description of the call, so a failure says exactly
which mount or namespace operation went wrong.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import struct

from pywsl.wire import unix_sockets as socket

# Namespace flags (linux/sched.h).
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# mount(2) flags (linux/mount.h).
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MS_SHARED = 0x100000
MS_STRICTATIME = 0x1000000

# umount2(2) flags.
MNT_FORCE = 0x1
MNT_DETACH = 0x2

# open_tree(2) / move_mount(2) / mount_setattr(2).
OPEN_TREE_CLONE = 0x1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
AT_SYMLINK_NOFOLLOW = 0x100
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOVE_MOUNT_T_EMPTY_PATH = 0x40
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8

# openat2(2) resolve flags.
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

# prctl(2) options.
PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
PR_SET_CHILD_SUBREAPER = 36

# Network interface flags for bringing ``lo`` up.
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1

_SYSCALL_NUMBERS: dict[str, dict[str, int]] = {
    # The new mount API and openat2 share numbers on every architecture since Linux 5.1.
    "x86_64": {"pivot_root": 155, "open_tree": 428, "move_mount": 429, "openat2": 437, "mount_setattr": 442},
    "aarch64": {"pivot_root": 41, "open_tree": 428, "move_mount": 429, "openat2": 437, "mount_setattr": 442},
}

_libc = ctypes.CDLL(None, use_errno=True)  # the C library this interpreter already has loaded
_libc.syscall.restype = ctypes.c_long
_libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p)
_libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
_libc.unshare.argtypes = (ctypes.c_int,)
_libc.setns.argtypes = (ctypes.c_int, ctypes.c_int)
_libc.prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)


class _MountAttr(ctypes.Structure):
    _fields_ = (
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    )


class _OpenHow(ctypes.Structure):
    _fields_ = (
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    )


def _fail(call: str, filename: str | None = None) -> OSError:
    code = ctypes.get_errno()
    return OSError(code, f"{call}: {os.strerror(code)}", filename)


def _machine() -> str:
    """``platform.machine()``: what it returns on Linux, without loading ``platform``."""
    return os.uname().machine


def _number(name: str) -> int:
    machine = _machine()
    try:
        return _SYSCALL_NUMBERS[machine][name]
    except KeyError:
        raise OSError(errno.ENOSYS, f"{name}: no system call number known for {machine}") from None


# Resolve the numbers now: a guest role must not need anything it has not loaded before it enters
# its namespaces.
_NUMBERS = {name: _number(name) for name in _SYSCALL_NUMBERS.get(_machine(), {})}


def _syscall(name: str, *args: object) -> int:
    number = _NUMBERS.get(name)
    if number is None:
        number = _number(name)
    return int(_libc.syscall(number, *args))


def _path(value: str | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def unshare(flags: int) -> None:
    """Move the calling process into new namespaces (``CLONE_NEW*`` flags)."""
    if _libc.unshare(flags) < 0:
        raise _fail(f"unshare(0x{flags:x})")


def setns(fd: int, nstype: int = 0) -> None:
    """Join the namespace that ``fd`` (an open ``/proc/<pid>/ns/*`` file) refers to."""
    if _libc.setns(fd, nstype) < 0:
        raise _fail(f"setns(fd {fd}, 0x{nstype:x})")


def mount(
    source: str | None, target: str, fstype: str | None, flags: int = 0, options: str | None = None
) -> None:
    """mount(2); ``target`` may be relative to the working directory."""
    data = _path(options)
    result = _libc.mount(
        _path(source),
        os.fsencode(target),
        _path(fstype),
        flags,
        ctypes.c_char_p(data) if data is not None else None,
    )
    if result < 0:
        what = f"mount({source!r}, {target!r}, {fstype!r}, 0x{flags:x}, {options!r})"
        raise _fail(what, target)


def umount2(target: str, flags: int = 0) -> None:
    """umount2(2)."""
    if _libc.umount2(os.fsencode(target), flags) < 0:
        raise _fail(f"umount2({target!r}, 0x{flags:x})", target)


def pivot_root(new_root: str, put_old: str) -> None:
    """pivot_root(2) (glibc has no wrapper)."""
    if (
        _syscall("pivot_root", ctypes.c_char_p(os.fsencode(new_root)), ctypes.c_char_p(os.fsencode(put_old)))
        < 0
    ):
        raise _fail(f"pivot_root({new_root!r}, {put_old!r})", new_root)


def open_tree(dirfd: int, path: str, flags: int) -> int:
    """open_tree(2): with ``OPEN_TREE_CLONE`` returns a detached copy of a mount tree as an fd."""
    fd = _syscall("open_tree", ctypes.c_int(dirfd), ctypes.c_char_p(os.fsencode(path)), ctypes.c_uint(flags))
    if fd < 0:
        raise _fail(f"open_tree({dirfd}, {path!r}, 0x{flags:x})", path or None)
    return fd


def move_mount(from_dirfd: int, from_path: str, to_dirfd: int, to_path: str, flags: int) -> None:
    """move_mount(2): attach a (detached) mount somewhere in the caller's mount namespace."""
    if (
        _syscall(
            "move_mount",
            ctypes.c_int(from_dirfd),
            ctypes.c_char_p(os.fsencode(from_path)),
            ctypes.c_int(to_dirfd),
            ctypes.c_char_p(os.fsencode(to_path)),
            ctypes.c_uint(flags),
        )
        < 0
    ):
        raise _fail(
            f"move_mount({from_dirfd}, {from_path!r}, {to_dirfd}, {to_path!r}, 0x{flags:x})", to_path or None
        )


def mount_setattr(
    dirfd: int, path: str, flags: int, attr_set: int = 0, attr_clr: int = 0, propagation: int = 0
) -> None:
    """mount_setattr(2), e.g. a recursive read-only flag on a bind mount tree."""
    attr = _MountAttr(attr_set, attr_clr, propagation, 0)
    if (
        _syscall(
            "mount_setattr",
            ctypes.c_int(dirfd),
            ctypes.c_char_p(os.fsencode(path)),
            ctypes.c_uint(flags),
            ctypes.byref(attr),
            ctypes.c_size_t(ctypes.sizeof(attr)),
        )
        < 0
    ):
        raise _fail(f"mount_setattr({dirfd}, {path!r}, 0x{flags:x}, set=0x{attr_set:x})", path or None)


def openat2(dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    """openat2(2); with ``RESOLVE_IN_ROOT`` the lookup behaves as if ``dirfd`` were ``/`` (chroot)."""
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    fd = _syscall(
        "openat2",
        ctypes.c_int(dirfd),
        ctypes.c_char_p(os.fsencode(path)),
        ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
    )
    if fd < 0:
        raise _fail(f"openat2({dirfd}, {path!r})", path)
    return fd


def sethostname(name: str) -> None:
    """sethostname(2) in the caller's UTS namespace."""
    socket.sethostname(name)


def setdomainname(name: str) -> None:
    """setdomainname(2) in the caller's UTS namespace (what ``domainname`` prints)."""
    data = name.encode()
    if _libc.setdomainname(ctypes.c_char_p(data), ctypes.c_size_t(len(data))) < 0:
        raise _fail("setdomainname")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    result = int(_libc.prctl(option, arg2, arg3, arg4, arg5))
    if result < 0:
        raise _fail(f"prctl({option})")
    return result


def set_child_subreaper(enabled: bool = True) -> None:
    """Orphaned descendants are reparented to the caller instead of the namespace's pid 1."""
    prctl(PR_SET_CHILD_SUBREAPER, 1 if enabled else 0)


def set_parent_death_signal(signal_number: int) -> None:
    prctl(PR_SET_PDEATHSIG, signal_number)


def set_process_name(name: str) -> None:
    """The name ``ps`` shows for the process (``/proc/<pid>/comm``, 15 bytes at most)."""
    buffer = ctypes.create_string_buffer(name.encode()[:15])
    prctl(PR_SET_NAME, ctypes.addressof(buffer))


def set_process_title(title: str) -> None:
    """Name the process as WSL's guest processes are named (``/init``, ``SessionLeader``, ``Relay(N)``).

    Sets ``comm`` and rewrites the process's argument area, so that ``/proc/<pid>/cmdline`` and
    ``ps -f`` show ``title`` instead of the interpreter's command line (which also keeps host paths
    out of sight inside a distribution). The kernel reads a title up to its NUL when the area's last
    byte is not NUL, as for setproctitle(3).
    """
    set_process_name(title.rpartition("/")[2])
    with open("/proc/self/stat", "rb") as stat_file:
        fields = stat_file.read().rpartition(b")")[2].split()
    start, end = int(fields[45]), int(fields[46])  # arg_start and arg_end: fields 48 and 49
    size = end - start
    if size < 2:
        return
    text = title.encode()[: size - 2]
    area = text + b"\0" + b" " * (size - len(text) - 1)
    ctypes.memmove(start, area, size)


def set_link_up(interface: str) -> None:
    """Bring a network interface up (``ip link set <interface> up``) in the caller's network namespace."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", interface.encode(), 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock.fileno(), _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock.fileno(), _SIOCSIFFLAGS, struct.pack("16sH14x", interface.encode(), flags | _IFF_UP))
