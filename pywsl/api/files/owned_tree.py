"""Root's changes to a distribution's tree, confined to what the user and the VM's ids own.

A distribution's `rootfs` lives in a folder the user owns, and everything in it belongs to the
user's VM (the host ids of its id range, and the user's own uid for uid 1000 inside): the user can
rename, exchange and replace any of it at any time. Some steps still need root's rights on that
tree (deleting files of the VM's ids, moving `rootfs` to another folder, giving a new `rootfs` to
the VM's root). They are done here, by these rules:

* the folder that holds the tree is reached and verified by the caller (`RootfsFolders`) and passed
  as a descriptor; the tree's top is opened in it with `O_NOFOLLOW` and checked with `fstat`: a
  directory on the folder's device, owned by the VM's root id or by the user (`TreeOwners`);
* every directory is opened from its verified parent's descriptor and checked again (owner,
  device, and that it is the entry that was looked at); entries are removed with `unlinkat` /
  `rmdir` relative to a verified directory descriptor, never by path;
* anything owned by neither the user nor the VM's id range, and anything on another device, is
  left in place and reported (`ForeignContent`), with the folders that hold it;
* the final removal of the top checks that the name still names the verified directory.

What stays open by design: between a check and an `unlinkat`, the user may put another entry under
the same name. Such an entry sits in a directory the user (or the VM's root) can write, so the user
could delete it themselves; root adds no reach. A directory is only ever removed when empty.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from typing import NamedTuple

from pywsl.vm.directories import RENAME_NOREPLACE, renameat2

__all__ = ["ForeignContent", "TreeOwners", "move_tree", "open_tree_top", "remove_tree"]

_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_REPORTED = 3  # paths named in a ForeignContent message


class ForeignContent(PermissionError):
    """A tree holds something root must not touch for this user; it was left in place."""

    def __init__(self, message: str, paths: Iterable[str] = ()) -> None:
        super().__init__(errno.EACCES, message)
        self.paths = list(paths)


class _MovedAway(ForeignContent):
    """A verified directory was gone from its name when it was to be removed."""


class TreeOwners(NamedTuple):
    """Whose files root may delete, move or hand over for a user: the user's uid and the host uids
    of the user's VM (`ranges`: first host uid and count of each line of its uid map).
    `anyone` is root's own session, which may touch everything."""

    user_uid: int
    vm_root_uid: int
    ranges: tuple[tuple[int, int], ...] = ()
    anyone: bool = False

    @classmethod
    def for_vm(cls, user_uid: int, uid_map: Iterable[tuple[int, int, int]]) -> TreeOwners:
        """The owners of the tree of `user_uid`'s VM with uid map `uid_map` (inside, outside, count)."""
        lines = list(uid_map)
        ranges = tuple((outside, count) for _, outside, count in lines)
        vm_root = next(
            (outside - inside for inside, outside, count in lines if inside <= 0 < inside + count), user_uid
        )
        return cls(user_uid, vm_root, ranges, anyone=user_uid == 0)

    def owns(self, uid: int) -> bool:
        """True for a file root may delete for this user."""
        return (
            self.anyone
            or uid == self.user_uid
            or any(first <= uid < first + count for first, count in self.ranges)
        )

    def may_be_top(self, uid: int) -> bool:
        """True for the owner of a tree's top as the service makes it: the VM's root, or the user."""
        return self.anyone or uid in (self.vm_root_uid, self.user_uid)


def open_tree_top(parent_fd: int, name: str, owners: TreeOwners, shown: str) -> tuple[int, os.stat_result]:
    """`name` in the verified folder `parent_fd`, opened (`O_NOFOLLOW`) and checked: a directory on
    the folder's device whose owner `owners.may_be_top`. FileNotFoundError when it is missing."""
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"invalid folder name {name!r}")
    try:
        fd = os.open(name, _DIRECTORY_FLAGS, dir_fd=parent_fd)
    except NotADirectoryError:
        raise NotADirectoryError(errno.ENOTDIR, "not a directory (or a symbolic link)", shown) from None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise NotADirectoryError(errno.ENOTDIR, "is a symbolic link", shown) from None
        raise type(error)(error.errno, error.strerror, shown) from None
    try:
        info = os.fstat(fd)
        if info.st_dev != os.fstat(parent_fd).st_dev:
            raise ForeignContent(
                f"{shown} is a mount point, not a distribution's root filesystem; it was left in place.",
                [shown],
            )
        if not owners.may_be_top(info.st_uid):
            raise ForeignContent(
                f"{shown} belongs to uid {info.st_uid}, which is neither the user nor "
                "the root of the user's VM: it is not the folder made for the "
                "distribution and was left in place.",
                [shown],
            )
    except BaseException:
        os.close(fd)
        raise
    return fd, info


def remove_tree(parent_fd: int, name: str, owners: TreeOwners, shown: str) -> bool:
    """Delete `name` (in the verified folder `parent_fd`) and what it holds, with root's rights.

    False when it does not exist. What `owners` do not own, and other devices, are left in place
    with the folders that lead to them; `ForeignContent` then names them, after everything else
    is gone.
    """
    try:
        top_fd, top = open_tree_top(parent_fd, name, owners, shown)
    except FileNotFoundError:
        return False
    try:
        kept = _remove_contents(top_fd, top.st_dev, owners, shown)
    finally:
        os.close(top_fd)
    if kept:
        listed = ", ".join(kept[:_REPORTED]) + (
            f" and {len(kept) - _REPORTED} more" if len(kept) > _REPORTED else ""
        )
        raise ForeignContent(
            f"{shown} holds files that belong to neither the user nor the "
            f"distribution's ids, or other file systems: {listed}. They were left in "
            "place.",
            kept,
        )
    _remove_verified_entry(parent_fd, name, top, shown)
    return True


def _remove_verified_entry(parent_fd: int, name: str, expected: os.stat_result, shown: str) -> None:
    """rmdir `name` in `parent_fd` if it is still the directory `expected` describes."""
    try:
        current = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        raise _MovedAway(
            f"{shown} was moved away while it was being removed; it was left where it went.", [shown]
        ) from None
    if (current.st_dev, current.st_ino) != (expected.st_dev, expected.st_ino):
        raise ForeignContent(
            f"{shown} was replaced while it was being removed; the new folder was left in place.", [shown]
        )
    try:
        os.rmdir(name, dir_fd=parent_fd)
    except OSError as error:
        if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        # Emptied, then filled again or replaced under the same name: whatever is there stays.
        raise ForeignContent(
            f"{shown} was changed while it was being removed; what it holds now was left in place.", [shown]
        ) from None


class _Frame:
    """A directory being emptied: its verified descriptor, what is left to look at, its name and
    status in its parent, and whether something in it must stay."""

    def __init__(self, fd: int, info: os.stat_result, name: str, shown: str) -> None:
        self.fd = fd
        self.info = info
        self.name = name
        self.shown = shown
        self.names = os.listdir(fd)
        self.keeps = False


def _remove_contents(top_fd: int, device: int, owners: TreeOwners, shown: str) -> list[str]:
    """Empty the verified directory `top_fd` depth first; the paths left in place."""
    kept: list[str] = []
    frames = [_Frame(top_fd, os.fstat(top_fd), "", shown)]
    try:
        while frames:
            frame = frames[-1]
            if frame.names:
                child = _visit(frame, frame.names.pop(), device, owners, kept)
                if child is not None:
                    frames.append(child)
                continue
            frames.pop()
            if not frames:
                break
            os.close(frame.fd)
            parent = frames[-1]
            if frame.keeps:
                parent.keeps = True
                continue
            try:
                _remove_verified_entry(parent.fd, frame.name, frame.info, frame.shown)
            except _MovedAway:
                continue  # the user moved it elsewhere meanwhile: not root's to chase
            except ForeignContent:
                kept.append(frame.shown)
                parent.keeps = True
    finally:
        for frame in frames[1:]:
            os.close(frame.fd)
    return kept


def _visit(frame: _Frame, name: str, device: int, owners: TreeOwners, kept: list[str]) -> _Frame | None:
    """Delete one entry of `frame`'s directory, or return the frame of a subdirectory to empty."""
    shown = os.path.join(frame.shown, name)
    try:
        info = os.stat(name, dir_fd=frame.fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    refused = not owners.owns(info.st_uid) or info.st_dev != device
    if not refused and not stat.S_ISDIR(info.st_mode):
        try:
            os.unlink(name, dir_fd=frame.fd)
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            refused = True  # replaced by a directory meanwhile: looked at next time
        return None
    if not refused:
        opened = _open_checked(frame.fd, name, info, device, owners)
        if opened is not None:
            return _Frame(opened[0], opened[1], name, shown)
        refused = True
    kept.append(shown)
    frame.keeps = True
    return None


def _open_checked(
    parent_fd: int, name: str, seen: os.stat_result, device: int, owners: TreeOwners
) -> tuple[int, os.stat_result] | None:
    """The subdirectory `name` opened without following links, if it is still the entry `seen`
    and still owned by `owners` on `device`; None otherwise."""
    try:
        fd = os.open(name, _DIRECTORY_FLAGS, dir_fd=parent_fd)
    except OSError:
        return None
    info = os.fstat(fd)
    if (
        (info.st_dev, info.st_ino) != (seen.st_dev, seen.st_ino)
        or info.st_dev != device
        or not owners.owns(info.st_uid)
    ):
        os.close(fd)
        return None
    return fd, info


def move_tree(source_fd: int, target_fd: int, name: str, owners: TreeOwners, shown: str) -> None:
    """Move `name` from the verified folder `source_fd` to the verified folder `target_fd` (same
    file system: EXDEV otherwise), with root's rights (moving a directory to another folder needs
    write access to the directory itself, which belongs to the VM's root).

    The top is verified first (`open_tree_top`); the rename never replaces anything; if what
    arrived is not the verified directory (the user swapped it in between), it is moved back and
    the move fails.
    """
    top_fd, top = open_tree_top(source_fd, name, owners, shown)
    os.close(top_fd)
    if os.fstat(target_fd).st_dev != top.st_dev:
        raise OSError(errno.EXDEV, "the new folder is on another file system", shown)
    try:
        renameat2(source_fd, name, target_fd, name, RENAME_NOREPLACE)
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, "the new folder already holds a root filesystem", shown) from None
    arrived = os.stat(name, dir_fd=target_fd, follow_symlinks=False)
    if (arrived.st_dev, arrived.st_ino) != (top.st_dev, top.st_ino):
        renameat2(target_fd, name, source_fd, name, RENAME_NOREPLACE)
        raise ForeignContent(f"{shown} was replaced while it was being moved; nothing was moved.", [shown])
