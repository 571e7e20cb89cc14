"""The uid/gid ranges a user's utility VM runs with (the user namespace of the ``namespaces`` backend).

WSL's utility VM is a separate kernel, so root in a distribution is root of that VM only. pywsl's
``namespaces`` backend gets the same property from a user namespace: root inside maps to an
unprivileged range of host ids.

The range of a user is:

* the first ``/etc/subuid`` (``/etc/subgid``) entry of that user (by name or by numeric uid), when
  it has one of at least :data:`MIN_RANGE` ids;
* otherwise a default range of :data:`DEFAULT_RANGE_SIZE` ids starting at
  ``DEFAULT_ID_BASE + DEFAULT_RANGE_SIZE * uid``. ``DEFAULT_ID_BASE`` is 2^30: far above the ids
  distributions hand to real accounts (below 60000, plus ``nobody`` at 65534) and above the
  ranges ``useradd`` writes into ``/etc/subuid`` (100000 onwards, 65536 per user), and every
  default range ends below 2^31. That leaves room for uids below :data:`DEFAULT_MAX_OWNER_UID`;
  a user above that needs a ``/etc/subuid`` entry.

For an owner other than root, uid and gid 1000 inside (the first user a distribution's setup
creates) map to the owner's own host uid and gid, so files that user creates in the host's
filesystem belong to the owner.

The host groups that own device nodes a distribution gets (:data:`DEVICE_GROUPS`: ``kvm``,
``video``, ``render``) keep their host number inside when the owner is a member of them (root's VM
gets every one that exists): ``with_host_groups`` maps each such gid to itself, in place of the
same number of the range. A distribution's user in a group of that number then reaches the
nodes as the host's group allows; the nodes' own modes never change, and an owner outside the
group gets nothing. Files of the distribution that carry such a number from the range show as
``nogroup`` inside.
"""

from __future__ import annotations

import grp
import os
import pwd
from pathlib import Path

TYPE_CHECKING = False  # `typing` would cost a cold launch's boot its load
if TYPE_CHECKING:
    from typing import NamedTuple
else:
    from pywsl.records import NamedTuple

IdMap = list[tuple[int, int, int]]

DEFAULT_ID_BASE = 1 << 30
DEFAULT_RANGE_SIZE = 65536
DEFAULT_MAX_OWNER_UID = ((1 << 31) - DEFAULT_ID_BASE) // DEFAULT_RANGE_SIZE
MIN_RANGE = 65536
OWNER_ID_INSIDE = 1000
SUBUID_PATH = Path("/etc/subuid")
SUBGID_PATH = Path("/etc/subgid")
DEVICE_GROUPS = ("kvm", "video", "render")
OVERFLOW_ID = 65534  # nobody / nogroup: never remapped


class IdMapError(ValueError):
    """No usable id range for a user."""


class SubordinateRange(NamedTuple):
    start: int
    count: int  # type: ignore[assignment]  # a field, where a tuple has its count() method


def parse_subordinate_file(text: str, user_name: str | None, uid: int) -> SubordinateRange | None:
    """The first ``name:start:count`` line of ``/etc/subuid``-style text for the user, if any."""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(":")
        if len(fields) != 3:
            continue
        owner, start_text, count_text = fields
        if owner != user_name and owner != str(uid):
            continue
        if not (start_text.isdigit() and count_text.isdigit()):
            continue
        start, count = int(start_text), int(count_text)
        if count <= 0 or start + count > 1 << 32:
            continue
        return SubordinateRange(start, count)
    return None


def _subordinate_range(path: Path, user_name: str | None, uid: int) -> SubordinateRange | None:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    found = parse_subordinate_file(text, user_name, uid)
    if found is not None and found.count < MIN_RANGE:
        return None
    return found


def default_range(uid: int) -> SubordinateRange:
    """The documented default range for ``uid`` (see the module docstring)."""
    if not 0 <= uid < DEFAULT_MAX_OWNER_UID:
        raise IdMapError(
            f"uid {uid} has no default id range (only uids below {DEFAULT_MAX_OWNER_UID} do); "
            f"add an entry of at least {MIN_RANGE} ids for it to {SUBUID_PATH} and {SUBGID_PATH}"
        )
    return SubordinateRange(DEFAULT_ID_BASE + DEFAULT_RANGE_SIZE * uid, DEFAULT_RANGE_SIZE)


def build_map(base: SubordinateRange, owner_host_id: int | None) -> IdMap:
    """``(inside, outside, count)`` lines: 0.. of the range, with 1000 → the owner's id when given."""
    if owner_host_id is None or base.count <= OWNER_ID_INSIDE:
        return [(0, base.start, base.count)]
    lines: IdMap = [(0, base.start, OWNER_ID_INSIDE), (OWNER_ID_INSIDE, owner_host_id, 1)]
    rest = base.count - OWNER_ID_INSIDE - 1
    if rest > 0:
        lines.append((OWNER_ID_INSIDE + 1, base.start + OWNER_ID_INSIDE + 1, rest))
    return lines


def maps_for_owner(
    uid: int, gid: int, *, subuid_path: Path = SUBUID_PATH, subgid_path: Path = SUBGID_PATH
) -> tuple[IdMap, IdMap]:
    """The uid and gid maps of the VM of host user ``uid`` (primary group ``gid``)."""
    try:
        user_name: str | None = pwd.getpwuid(uid).pw_name
    except KeyError:
        user_name = None
    uids = _subordinate_range(subuid_path, user_name, uid) or default_range(uid)
    gids = _subordinate_range(subgid_path, user_name, uid) or default_range(uid)
    owner = uid != 0
    return build_map(uids, uid if owner else None), build_map(gids, gid if owner else None)


def identity_map() -> IdMap:
    """The opt-out for trusted setups: ids inside are host ids (root inside is host root)."""
    return [(0, 0, (1 << 32) - 1)]


def host_id(id_map: IdMap, inside: int) -> int:
    """The host id that ``inside`` maps to; IdMapError when it is not mapped."""
    for start, outside, count in id_map:
        if start <= inside < start + count:
            return outside + inside - start
    raise IdMapError(f"id {inside} is not mapped")


def format_map(id_map: IdMap) -> str:
    """The text written to ``/proc/<pid>/uid_map``."""
    return "".join(f"{inside} {outside} {count}\n" for inside, outside, count in id_map)


def owner_device_groups(uid: int, gid: int, names: tuple[str, ...] = DEVICE_GROUPS) -> list[int]:
    """Host gids of the device groups ``names`` that host user ``uid`` belongs to (root: all that exist)."""
    try:
        user_name: str | None = pwd.getpwuid(uid).pw_name
    except KeyError:
        user_name = None
    member_of: set[int] = {gid}
    if user_name is not None:
        member_of.update(os.getgrouplist(user_name, gid))
    found: list[int] = []
    for name in names:
        try:
            group = grp.getgrnam(name)
        except KeyError:
            continue
        if uid == 0 or group.gr_gid in member_of:
            found.append(group.gr_gid)
    return sorted(set(found))


def with_host_groups(id_map: IdMap, host_ids: list[int]) -> IdMap:
    """``id_map`` with each of ``host_ids`` mapped to the same number inside (see the module docstring).

    An id is left out when it is 0, the overflow id, outside the map's inside range, already the
    host side of a line (the owner's own group) or the inside id of a single-id line.
    """
    lines = sorted(id_map)
    for host in sorted(set(host_ids)):
        if host in (0, OVERFLOW_ID) or any(outside <= host < outside + count for _, outside, count in lines):
            continue
        index = next(
            (
                number
                for number, (inside, _, count) in enumerate(lines)
                if inside <= host < inside + count and count > 1
            ),
            None,
        )
        if index is None:
            continue
        inside, outside, count = lines.pop(index)
        pieces = [
            (inside, outside, host - inside),
            (host, host, 1),
            (host + 1, outside + host + 1 - inside, inside + count - host - 1),
        ]
        lines[index:index] = [piece for piece in pieces if piece[2] > 0]
    return lines
