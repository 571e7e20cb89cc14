"""Acting as the user: the Linux counterpart of WSL's `CoImpersonateClient` / `RunAsUser`.

WSL's service runs as SYSTEM and impersonates the caller whenever it opens the caller's registry
hive or touches the caller's files. pywsl's service runs as root and does the same with the
filesystem credentials of the calling thread: `setfsuid`/`setfsgid` plus the user's
supplementary groups (set with the raw system call so that only this thread changes; glibc's
`setgroups` would change every thread of the service). While acting as a user, every path is
resolved and checked with that user's rights, so a symlink the user planted leads root nowhere
the user could not go already.

A few operations must still be done with root's rights on a user's tree (deleting or moving a
root filesystem whose files belong to the VM's mapped ids): `owned_tree.py` does them, from
descriptors opened as the user and verified, on what the user or the VM's ids own only.
"""

from __future__ import annotations

import errno
import functools
import os
import pwd
from _thread import _local
from pathlib import Path

TYPE_CHECKING = False  # `typing` would cost a cold launch's boot its load
if TYPE_CHECKING:
    import ctypes
    from types import TracebackType
    from typing import NamedTuple
else:
    from pywsl.records import NamedTuple

__all__ = [
    "UserIdentity",
    "acting_as",
    "makedirs_as",
    "open_as",
    "open_directory_as",
]

_NO_CHANGE = 0xFFFFFFFF  # (uid_t)-1: setfsuid/setfsgid only report the current value

# setgroups(2) numbers; the raw call changes the calling thread only.
_SYS_SETGROUPS = {
    "x86_64": 116,
    "aarch64": 159,
    "arm64": 159,
    "riscv64": 159,
    "loongarch64": 159,
    "ppc64le": 81,
    "ppc64": 81,
    "s390x": 206,
}


@functools.cache
def _libc() -> ctypes.CDLL:
    """libc's calls, loaded when a thread first changes its rights (a user's own launch never does)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.setfsuid.argtypes = [ctypes.c_uint32]
    libc.setfsuid.restype = ctypes.c_int
    libc.setfsgid.argtypes = [ctypes.c_uint32]
    libc.setfsgid.restype = ctypes.c_int
    libc.syscall.restype = ctypes.c_long
    return libc


class UserIdentity(NamedTuple):
    """A host user: ids, supplementary groups, name and home folder (from the password database)."""

    uid: int
    gid: int
    groups: tuple[int, ...]
    name: str
    home: Path

    @classmethod
    def for_uid(cls, uid: int) -> UserIdentity:
        """The identity of `uid`; a uid with no password entry is a user with no name or home."""
        try:
            entry = pwd.getpwuid(uid)
        except KeyError:
            return cls(uid, uid, (uid,), str(uid), Path("/nonexistent"))
        try:
            groups = tuple(sorted(set(os.getgrouplist(entry.pw_name, entry.pw_gid))))
        except OSError:
            groups = (entry.pw_gid,)
        return cls(uid, entry.pw_gid, groups, entry.pw_name, Path(entry.pw_dir or "/"))

    @classmethod
    def current(cls) -> UserIdentity:
        """The effective user of this process."""
        return cls.for_uid(os.geteuid())

    @property
    def is_process_user(self) -> bool:
        """True when this process already has this user's rights (nothing to switch)."""
        return self.uid == os.geteuid()


def _setgroups_thread(groups: tuple[int, ...]) -> None:
    machine = os.uname().machine
    number = _SYS_SETGROUPS.get(machine)
    if number is None:
        raise OSError(errno.ENOSYS, f"setgroups: unknown system call number on {machine}")
    import ctypes

    array = (ctypes.c_uint32 * max(len(groups), 1))(*groups)
    if _libc().syscall(ctypes.c_long(number), ctypes.c_size_t(len(groups)), array) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"setgroups({list(groups)}) failed: {os.strerror(code)}")


def _set_fs_ids(uid: int, gid: int) -> None:
    libc = _libc()
    libc.setfsgid(gid)
    libc.setfsuid(uid)
    # Both calls return the previous value whatever happens; ask again to know the outcome.
    current_gid = libc.setfsgid(_NO_CHANGE)
    current_uid = libc.setfsuid(_NO_CHANGE)
    if current_uid != uid or current_gid != gid:
        raise PermissionError(errno.EPERM, f"setfsuid({uid})/setfsgid({gid}) failed")


class _ThreadState(_local):  # `threading.local` (`threading` itself is not loaded for it)
    identity: UserIdentity | None = None
    depth: int = 0


_state = _ThreadState()


class acting_as:  # (used as a function: `with acting_as(identity):`)
    """Run the block with `identity`'s filesystem rights on this thread.

    A no-op when the process already runs as that user. Nested blocks for the same user are
    allowed; switching to another user inside a block is a programming error. (A class rather
    than `contextlib.contextmanager`: a cold launch's boot loads no `contextlib`.)
    """

    __slots__ = ("_identity", "_restore")

    def __init__(self, identity: UserIdentity) -> None:
        self._identity = identity
        # What `__exit__` undoes: None for nothing (the process's own user), () for a nested
        # block, else the groups and ids to take back.
        self._restore: tuple[tuple[int, ...], int, int] | tuple[()] | None = None

    def __enter__(self) -> None:
        identity = self._identity
        if identity.is_process_user:
            self._restore = None
            return
        if _state.identity is not None:
            if _state.identity != identity:
                raise RuntimeError(f"already acting as uid {_state.identity.uid}, not {identity.uid}")
            _state.depth += 1
            self._restore = ()
            return
        if os.geteuid() != 0:
            raise PermissionError(errno.EPERM, f"only root can act as uid {identity.uid}")
        saved_groups = tuple(os.getgroups())
        saved_uid, saved_gid = os.geteuid(), os.getegid()
        _setgroups_thread(identity.groups)
        try:
            _set_fs_ids(identity.uid, identity.gid)
        except BaseException:
            _set_fs_ids(saved_uid, saved_gid)
            _setgroups_thread(saved_groups)
            raise
        _state.identity, _state.depth = identity, 1
        self._restore = (saved_groups, saved_uid, saved_gid)

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        restore, self._restore = self._restore, None
        if restore is None:
            return
        if not restore:
            _state.depth -= 1
            return
        saved_groups, saved_uid, saved_gid = restore
        _state.identity, _state.depth = None, 0
        _set_fs_ids(saved_uid, saved_gid)
        _setgroups_thread(saved_groups)


def open_as(identity: UserIdentity, path: str | os.PathLike[str], flags: int, mode: int = 0o600) -> int:
    """`os.open` with the user's rights; the descriptor is close-on-exec."""
    with acting_as(identity):
        return os.open(path, flags | os.O_CLOEXEC, mode)


def open_directory_as(identity: UserIdentity, path: str | os.PathLike[str]) -> int:
    """A directory descriptor opened as the user; the last component must not be a symlink."""
    return open_as(identity, path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)


def makedirs_as(identity: UserIdentity, path: str | os.PathLike[str], mode: int = 0o700) -> bool:
    """`mkdir -p` as the user; True when the last component was created by this call.

    A dangling symlink counts as existing (nothing is created through it); the result must be a
    directory.
    """
    target = Path(path)
    created = False
    with acting_as(identity):
        missing: list[Path] = []
        current = target
        while not os.path.lexists(current) and current.parent != current:
            missing.append(current)
            current = current.parent
        for folder in reversed(missing):
            try:
                os.mkdir(folder, mode)
                created = folder == target
            except FileExistsError:
                created = False
        if not target.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(target))
    return created
