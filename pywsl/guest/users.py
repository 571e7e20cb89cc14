"""The distribution's user database: ``/etc/passwd`` and ``/etc/group`` parsed in Python.

WSL's relay child resolves the user of a new process with ``getpwnam``/``getpwuid`` and sets its
groups with ``initgroups``, all from the distribution's own libc. The pywsl guest is a Python
interpreter that came from the host, so going through NSS would load the host's modules against
the distribution's files (or fail after ``pivot_root``). This module reads the two files directly,
the way glibc's ``files`` backend does: the first matching line wins, malformed lines and NIS
compatibility entries (``+``/``-``) are skipped, a missing file is an empty database.

Everything takes the root directory the files live under (``/`` inside a distribution), so the
same code can be pointed at any directory.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # the type checker sees dataclasses; `records` gives the same classes cheaply
if TYPE_CHECKING:
    from collections.abc import Callable
    from dataclasses import dataclass
    from typing import Any
else:
    from pywsl.records import dataclass

__all__ = [
    "MAX_DATABASE_SIZE",
    "GroupEntry",
    "PasswdEntry",
    "UserDatabase",
    "parse_group_line",
    "parse_passwd_line",
    "read_ahead",
]

# A user database larger than this is refused rather than read into memory.
MAX_DATABASE_SIZE = 64 * 1024 * 1024
# Ids are 32-bit; (uid_t)-1 means "no change" to set*id and is never a valid id.
_MAX_ID = 0xFFFFFFFE
_PASSWD_FIELDS = 7
_GROUP_FIELDS = 4


@dataclass(frozen=True)
class PasswdEntry:
    """One line of ``/etc/passwd`` (``struct passwd``)."""

    name: str
    uid: int
    gid: int
    gecos: str
    home: str
    shell: str


@dataclass(frozen=True)
class GroupEntry:
    """One line of ``/etc/group`` (``struct group``)."""

    name: str
    gid: int
    members: tuple[str, ...]


def _parse_id(text: str) -> int | None:
    if not text or not text.isascii() or not text.isdigit():
        return None
    value = int(text)
    return value if value <= _MAX_ID else None


def _database_lines(path: str) -> list[str]:
    """The meaningful lines of a colon-separated database file (empty when it does not exist)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_DATABASE_SIZE + 1)
    except (FileNotFoundError, NotADirectoryError):
        return []
    if len(data) > MAX_DATABASE_SIZE:
        raise OSError(f"{path}: larger than {MAX_DATABASE_SIZE} bytes, refusing to read it")
    lines = []
    for raw in data.split(b"\n"):
        line = raw.rstrip(b"\r").decode("utf-8", "surrogateescape")
        stripped = line.lstrip()
        if not stripped or stripped.startswith(("#", "+", "-")):
            continue
        lines.append(line)
    return lines


def parse_passwd_line(line: str) -> PasswdEntry | None:
    """A passwd line, or None if it is malformed."""
    fields = line.split(":")
    if len(fields) != _PASSWD_FIELDS or not fields[0]:
        return None
    uid = _parse_id(fields[2])
    gid = _parse_id(fields[3])
    if uid is None or gid is None:
        return None
    return PasswdEntry(fields[0], uid, gid, fields[4], fields[5], fields[6])


def parse_group_line(line: str) -> GroupEntry | None:
    """A group line, or None if it is malformed."""
    fields = line.split(":")
    if len(fields) != _GROUP_FIELDS or not fields[0]:
        return None
    gid = _parse_id(fields[2])
    if gid is None:
        return None
    members = tuple(member for member in fields[3].split(",") if member)
    return GroupEntry(fields[0], gid, members)


# What this process last parsed of each database file, with the file's identity then (device,
# inode, size, modification and change times): a lookup parses a file again only when it changed.
_parsed: dict[tuple[str, str], tuple[tuple[int, ...], list[Any]]] = {}


def _entries(path: str, kind: str, parse: Callable[[str], Any]) -> list[Any]:
    """The entries of a database file: parsed again when its identity changed since the last
    parse (a write changes its change time), else the last parse's."""
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return []
    identity = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
    known = _parsed.get((path, kind))
    if known is not None and known[0] == identity:
        return list(known[1])
    # Read after the stat: a file that changes meanwhile has another identity at the next lookup.
    entries = [entry for entry in (parse(line) for line in _database_lines(path)) if entry is not None]
    _parsed[(path, kind)] = (identity, entries)
    return list(entries)


def read_ahead(root: str = "/") -> None:
    """Parse ``/etc/passwd`` and ``/etc/group`` under ``root`` now, before a launch looks them up:
    in this process and the ones it forks, that lookup parses a file again only if it changed
    meanwhile. A file that cannot be read now is left to the lookup to report."""
    database = UserDatabase(root)
    try:
        database.users()
        database.groups()
    except OSError:
        return


class UserDatabase:
    """``/etc/passwd`` and ``/etc/group`` under ``root``, read as they are at each lookup.

    Lookups answer like ``getpwnam``/``getpwuid``/``getgrnam``/``getgrouplist`` with the
    ``files`` backend (a file unchanged since this process last read it is not parsed again). A
    file that cannot be read raises OSError.
    """

    def __init__(self, root: str = "/") -> None:
        self.root = root

    def _path(self, name: str) -> str:
        return os.path.join(self.root, "etc", name)

    def users(self) -> list[PasswdEntry]:
        return _entries(self._path("passwd"), "passwd", parse_passwd_line)

    def groups(self) -> list[GroupEntry]:
        return _entries(self._path("group"), "group", parse_group_line)

    def user_by_name(self, name: str) -> PasswdEntry | None:
        return next((entry for entry in self.users() if entry.name == name), None)

    def user_by_uid(self, uid: int) -> PasswdEntry | None:
        return next((entry for entry in self.users() if entry.uid == uid), None)

    def group_by_name(self, name: str) -> GroupEntry | None:
        return next((entry for entry in self.groups() if entry.name == name), None)

    def group_list(self, user: PasswdEntry) -> list[int]:
        """``getgrouplist``: the primary group, then every group listing the user, no duplicates."""
        gids = [user.gid]
        for group in self.groups():
            if user.name in group.members and group.gid not in gids:
                gids.append(group.gid)
        return gids
