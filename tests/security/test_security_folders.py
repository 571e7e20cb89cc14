"""Root acting on folders a user can change, and a distribution's files seen by other host users.

The root service deletes, moves and hands over a distribution's `rootfs`, which lives in a folder
its owner controls. These tests attack that with a real service and two real users: the owner
swaps its folders (renames and `renameat2(RENAME_EXCHANGE)`) for a directory of root's or a link
to the other user's files while it imports and unregisters, plants files of root's in its root
filesystem, and the other user tries to reach a setuid file of the distribution. The descriptor
helpers the service uses (`pywsl.api.files.owned_tree`) are tested on their own first.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from busybox_images import busybox_archive, os_release_text
from multiuser_support import ServiceProcess, User, Workspace, as_user, user_env

from pywsl.api.credentials import UserIdentity, makedirs_as
from pywsl.api.errors import WslError
from pywsl.api.files.owned_tree import ForeignContent, TreeOwners, move_tree, remove_tree
from pywsl.api.files.rootfs_folder import RootfsFolders
from pywsl.vm.directories import RENAME_EXCHANGE, RENAME_NOREPLACE, renameat2
from pywsl.vm.idmap import maps_for_owner

NOBODY = UserIdentity(65534, 65534, (65534,), "nobody", Path("/nonexistent"))
VM_ROOT = 1 << 30
NOBODY_OWNERS = TreeOwners.for_vm(NOBODY.uid, [(0, VM_ROOT, 65536)])
RACE_SECONDS = 4.0


# ------------------------------------------------------------------------------------------------
# The descriptor helpers, without the service
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A folder every user can traverse (pytest's own is private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="pywsl-folders-"))
    os.chmod(folder, 0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


@pytest.fixture
def nobody_folder(scratch: Path) -> Path:
    folder = scratch / "nobody"
    folder.mkdir()
    os.chown(folder, NOBODY.uid, NOBODY.gid)
    return folder


def _mapped_rootfs(parent: Path) -> Path:
    """A root filesystem as the VM leaves it: everything owned by ids of the VM's range."""
    rootfs = parent / "rootfs"
    (rootfs / "etc" / "deep").mkdir(parents=True)
    (rootfs / "etc" / "deep" / "file").write_text("x")
    (rootfs / "link").symlink_to("/etc")
    (rootfs / "own").write_text("the user's")
    for path in (rootfs, rootfs / "etc", rootfs / "etc" / "deep", rootfs / "etc" / "deep" / "file"):
        os.chown(path, VM_ROOT, VM_ROOT)
    os.chown(rootfs / "link", VM_ROOT + 5, VM_ROOT + 5, follow_symlinks=False)
    os.chown(rootfs / "own", NOBODY.uid, NOBODY.gid)
    return rootfs


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[int]:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def _snapshot(top: Path) -> list[tuple[str, int, int, int, bytes]]:
    """Every entry below and including `top`: path, owner, group, mode and file content."""
    result = []
    for path in [top, *sorted(top.rglob("*"))]:
        info = path.lstat()
        content = path.read_bytes() if stat.S_ISREG(info.st_mode) else b""
        result.append((str(path.relative_to(top)), info.st_uid, info.st_gid, info.st_mode, content))
    return result


def test_remove_tree_deletes_what_the_vm_and_the_user_own(nobody_folder: Path) -> None:
    _mapped_rootfs(nobody_folder)
    with _opened(nobody_folder) as fd:
        assert remove_tree(fd, "rootfs", NOBODY_OWNERS, "rootfs")
        assert not (nobody_folder / "rootfs").exists()
        assert not remove_tree(fd, "rootfs", NOBODY_OWNERS, "rootfs")
    assert Path("/etc/passwd").exists()


def test_remove_tree_leaves_a_top_that_was_not_made_for_the_distribution(nobody_folder: Path) -> None:
    rootfs = _mapped_rootfs(nobody_folder)
    os.chown(rootfs, 0, 0)  # a directory of root's under the distribution's name
    before = _snapshot(rootfs)
    with _opened(nobody_folder) as fd, pytest.raises(ForeignContent) as refused:
        remove_tree(fd, "rootfs", NOBODY_OWNERS, "rootfs")
    assert "uid 0" in str(refused.value)
    assert _snapshot(rootfs) == before
    (nobody_folder / "rootfs").rename(nobody_folder / "real")
    (nobody_folder / "rootfs").symlink_to(nobody_folder / "real")
    with _opened(nobody_folder) as fd, pytest.raises(NotADirectoryError):
        remove_tree(fd, "rootfs", NOBODY_OWNERS, "rootfs")
    assert _snapshot(nobody_folder / "real") == before


def test_remove_tree_keeps_foreign_files_and_says_where(nobody_folder: Path) -> None:
    rootfs = _mapped_rootfs(nobody_folder)
    (rootfs / "etc" / "deep" / "planted").write_text("root's")  # owned by root: not the VM's
    (rootfs / "var" / "lib").mkdir(parents=True)
    os.chown(rootfs / "var", VM_ROOT, VM_ROOT)
    with _opened(nobody_folder) as fd, pytest.raises(ForeignContent) as refused:
        remove_tree(fd, "rootfs", NOBODY_OWNERS, "rootfs")
    assert sorted(refused.value.paths) == ["rootfs/etc/deep/planted", "rootfs/var/lib"]
    assert "neither the user nor the distribution's ids" in str(refused.value)
    # Everything else went; what leads to the foreign entries stays.
    assert sorted(str(p.relative_to(rootfs)) for p in rootfs.rglob("*")) == [
        "etc",
        "etc/deep",
        "etc/deep/planted",
        "var",
        "var/lib",
    ]
    assert (rootfs / "etc" / "deep" / "planted").read_text() == "root's"


def test_remove_tree_stays_on_one_file_system(nobody_folder: Path) -> None:
    rootfs = _mapped_rootfs(nobody_folder)
    mount_point = rootfs / "mnt"
    mount_point.mkdir()
    os.chown(mount_point, VM_ROOT, VM_ROOT)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "pywsl-test", str(mount_point)], check=True)
    try:
        (mount_point / "kept").write_text("x")
        os.chown(mount_point, VM_ROOT, VM_ROOT)
        os.chown(mount_point / "kept", VM_ROOT, VM_ROOT)
        with _opened(nobody_folder) as fd, pytest.raises(ForeignContent) as refused:
            remove_tree(fd, "rootfs", NOBODY_OWNERS, "rootfs")
        assert refused.value.paths == ["rootfs/mnt"]
        assert (mount_point / "kept").read_text() == "x"
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def test_move_tree_moves_only_the_verified_folder(nobody_folder: Path) -> None:
    _mapped_rootfs(nobody_folder)
    target = nobody_folder / "target"
    target.mkdir()
    with _opened(nobody_folder) as source_fd, _opened(target) as target_fd:
        move_tree(source_fd, target_fd, "rootfs", NOBODY_OWNERS, "rootfs")
        assert (target / "rootfs" / "etc" / "deep" / "file").read_text() == "x"
        assert not (nobody_folder / "rootfs").exists()
        # Never over an existing folder, never a folder of root's.
        os.mkdir(nobody_folder / "rootfs")
        with pytest.raises(FileExistsError):
            move_tree(target_fd, source_fd, "rootfs", NOBODY_OWNERS, "rootfs")
        with pytest.raises(ForeignContent):
            move_tree(source_fd, target_fd, "rootfs", NOBODY_OWNERS, "rootfs")
    assert (nobody_folder / "rootfs").stat().st_uid == 0 and os.listdir(nobody_folder / "rootfs") == []
    assert (target / "rootfs" / "etc" / "deep" / "file").read_text() == "x"


def test_root_touches_no_folder_of_somebody_else(scratch: Path, nobody_folder: Path) -> None:
    victim = scratch / "victim"
    victim.mkdir()
    _mapped_rootfs(victim)
    before = _snapshot(victim)
    folders = RootfsFolders(NOBODY, lambda: [nobody_folder], lambda: [(0, VM_ROOT, 65536)])
    attempt: Callable[[], object]
    for attempt in (
        lambda: folders.remove_rootfs(victim),
        lambda: folders.rename_rootfs(victim, nobody_folder),
        lambda: folders.rename_rootfs(nobody_folder, victim),
    ):
        with pytest.raises(WslError) as refused:
            attempt()
        assert refused.value.code in ("E_ACCESSDENIED", "ERROR_PATH_NOT_FOUND"), refused.value
    # A link below the user's folder is not followed either.
    (nobody_folder / "link").symlink_to(victim)
    with pytest.raises(WslError, match="symbolic link"):
        folders.remove_rootfs(nobody_folder / "link")
    assert _snapshot(victim) == before


def test_renameat2_exchanges_and_never_replaces(scratch: Path) -> None:
    (scratch / "a").write_text("a")
    (scratch / "b").mkdir()
    renameat2(None, str(scratch / "a"), None, str(scratch / "b"), RENAME_EXCHANGE)
    assert (scratch / "b").read_text() == "a" and (scratch / "a").is_dir()
    with pytest.raises(FileExistsError):
        renameat2(None, str(scratch / "a"), None, str(scratch / "b"), RENAME_NOREPLACE)


def test_new_folders_are_private_and_the_rootfs_goes_to_the_vms_root(nobody_folder: Path) -> None:
    folders = RootfsFolders(NOBODY, lambda: [nobody_folder], lambda: [(0, VM_ROOT, 65536)])
    base = nobody_folder / "distro"
    assert folders.make_folder(base)
    assert stat.S_IMODE(base.stat().st_mode) == 0o700 and base.stat().st_uid == NOBODY.uid
    folders.make_rootfs(base, [(0, VM_ROOT, 65536)], [(0, VM_ROOT, 65536)])
    info = (base / "rootfs").stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (VM_ROOT, VM_ROOT, 0o755)
    # An existing folder of the user's is made private too; somebody else's is refused.
    existing = nobody_folder / "existing"
    makedirs_as(NOBODY, existing, 0o755)
    assert not folders.make_folder(existing)
    assert stat.S_IMODE(existing.stat().st_mode) == 0o700
    foreign = nobody_folder / "foreign"
    foreign.mkdir()
    os.chmod(foreign, 0o777)
    with pytest.raises(Exception, match="does not belong"):
        folders.make_folder(foreign)
    assert stat.S_IMODE(foreign.stat().st_mode) == 0o777
    folders.remove_rootfs(base)
    assert os.listdir(base) == []


# ------------------------------------------------------------------------------------------------
# The service, two users
# ------------------------------------------------------------------------------------------------

# Run as the attacker: swaps entries of its own folders until the stop file exists or the deadline
# passes, then puts everything back where it was; prints how many swaps succeeded.
ATTACKER = r"""
import ctypes, errno, json, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
AT_FDCWD, RENAME_EXCHANGE = -100, 2


def exchange(a, b):
    if libc.syscall(316, AT_FDCWD, a.encode(), AT_FDCWD, b.encode(), RENAME_EXCHANGE) != 0:
        raise OSError(ctypes.get_errno(), "exchange")


def attempt(action, *args):
    try:
        action(*args)
        return 1
    except OSError:
        return 0


race, stop, deadline = sys.argv[1], sys.argv[2], time.monotonic() + float(sys.argv[3])
dist = os.path.join(race, "dist")
rootfs, decoy, link = (os.path.join(dist, name) for name in ("rootfs", "decoy", "blink"))
stash = os.path.join(dist, "stash")
top_decoy, top_link = os.path.join(race, "topdecoy"), os.path.join(race, "toplink")
decoy_ino = os.lstat(decoy).st_ino
top_decoy_ino = os.lstat(top_decoy).st_ino
counts = {"rootfs<->decoy": 0, "rootfs<->link": 0, "dist<->decoy": 0, "dist<->link": 0, "renames": 0}
print("ready", flush=True)
while time.monotonic() < deadline and not os.path.exists(stop):
    for key, a, b in (("rootfs<->decoy", rootfs, decoy), ("rootfs<->link", rootfs, link),
                      ("dist<->decoy", dist, top_decoy), ("dist<->link", dist, top_link)):
        if attempt(exchange, a, b):
            counts[key] += 1
            attempt(exchange, a, b)
    if attempt(os.rename, rootfs, stash):
        if attempt(os.rename, decoy, rootfs):
            counts["renames"] += 1
            attempt(os.rename, rootfs, decoy)
        attempt(os.rename, stash, rootfs)


def where(ino, places):
    for place in places:
        try:
            if os.lstat(place).st_ino == ino:
                return place
        except OSError:
            pass
    return None


# Put the folders back: the top decoy at its name, then the decoy in the distribution's folder.
found = where(top_decoy_ino, [top_decoy, dist, top_link])
if found not in (None, top_decoy):
    exchange(found, top_decoy) if os.path.lexists(top_decoy) else os.rename(found, top_decoy)
if os.path.islink(dist) or not os.path.isdir(dist):
    exchange(dist, top_link)
found = where(decoy_ino, [decoy, rootfs, stash, link])
if found not in (None, decoy):
    exchange(found, decoy) if os.path.lexists(decoy) else os.rename(found, decoy)
if not os.path.islink(link):
    exchange(link, rootfs)
if os.path.lexists(stash) and not os.path.lexists(rootfs):
    os.rename(stash, rootfs)
print(json.dumps(counts), flush=True)
"""


@pytest.fixture(scope="module")
def archive(workspace: Workspace) -> Path:
    return busybox_archive(workspace.folder / "folders.tar", os_release=os_release_text("folders"))


def _vm_root_of(user: User) -> int:
    return maps_for_owner(user.uid, user.gid)[0][0][1]


@contextlib.contextmanager
def _race_layout(a: User, b: User) -> Iterator[tuple[Path, Path, Path]]:
    """A's folder `race` with the distribution's folder `dist` in it, directories of root's that A
    can rename (`race/topdecoy`, `race/dist/decoy`), links to B's folder (`race/toplink`,
    `race/dist/blink`), and B's folder `victim` (reachable, so that a followed link would reach it)."""
    race = a.home / "race"
    victim = b.home / "victim"
    home_mode = stat.S_IMODE(b.home.stat().st_mode)
    made = []
    try:
        for path in (race, race / "dist"):
            path.mkdir(mode=0o755)
            os.chown(path, a.uid, a.gid)
        for decoy in (race / "topdecoy", race / "dist" / "decoy"):
            (decoy / "inside").mkdir(parents=True, mode=0o755)
            (decoy / "precious").write_text("root's\n")
            (decoy / "inside" / "deeper").write_text("root's too\n")
            made.append(decoy)
        os.chmod(b.home, 0o755)
        victim.mkdir(mode=0o755)
        (victim / "mine").write_text("B's\n")
        for path in (victim, victim / "mine"):
            os.chown(path, b.uid, b.gid)
        for link in (race / "toplink", race / "dist" / "blink"):
            link.symlink_to(victim)
            os.chown(link, a.uid, a.gid, follow_symlinks=False)
        yield race, race / "dist", victim
    finally:
        os.chmod(b.home, home_mode)
        shutil.rmtree(victim, ignore_errors=True)
        shutil.rmtree(race, ignore_errors=True)


@contextlib.contextmanager
def _attacker(workspace: Workspace, a: User, race: Path) -> Iterator[dict[str, int]]:
    """A swapping its folders while the block runs; the counts of swaps that succeeded come back
    in the yielded dict once the block ends and everything is back in place."""
    stop = race / "stop"
    process = subprocess.Popen(
        [str(workspace.python), "-c", ATTACKER, str(race), str(stop), str(RACE_SECONDS * 3)],
        user=a.uid,
        group=a.gid,
        extra_groups=[],
        env=user_env(workspace, a),
        cwd="/",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    counts: dict[str, int] = {}
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == b"ready\n", process.stderr.read() if process.stderr else ""
        yield counts
    finally:
        stop.touch()
        out, err = process.communicate(timeout=RACE_SECONDS * 3 + 30)
        stop.unlink()
        assert process.returncode == 0, err.decode()
        counts.update(json.loads(out.decode().splitlines()[-1]))


def _entries(workspace: Workspace, user: User) -> list[dict[str, Any]]:
    answer = as_user(workspace, user, {"op": "list"})
    assert "result" in answer, answer
    entries: list[dict[str, Any]] = answer["result"]
    return entries


def _add(counts: dict[str, int], raced: dict[str, int]) -> None:
    for key, value in raced.items():
        counts[key] = counts.get(key, 0) + value


def _leftover_of_the_vm(rootfs: Path, user: User) -> None:
    """A root filesystem the attacker hid while the service removed its entry stays (its own files,
    which it cannot delete itself): it must belong to its VM; it is cleaned up for the next round."""
    if rootfs.exists():
        assert rootfs.lstat().st_uid in (_vm_root_of(user), user.uid), rootfs.lstat()
        shutil.rmtree(rootfs)


def test_swapped_folders_never_turn_root_against_other_files(
    users: tuple[User, User], workspace: Workspace, service: ServiceProcess, archive: Path
) -> None:
    a, b = users
    with _race_layout(a, b) as (race, dist, victim):
        decoys = {path: _snapshot(path) for path in (race / "topdecoy", dist / "decoy")}
        victim_before = _snapshot(victim)
        rootfs = dist / "rootfs"
        deadline = time.monotonic() + RACE_SECONDS
        counts: dict[str, int] = {}
        rounds = 0
        while rounds == 0 or time.monotonic() < deadline:
            rounds += 1
            import_action = {"op": "import", "name": "Racy", "archive": str(archive), "location": str(dist)}
            with _attacker(workspace, a, race) as raced:
                answer = as_user(workspace, a, import_action)
            _add(counts, raced)
            entries = _entries(workspace, a)  # also completes a rollback refused during the race
            if "error" in answer:
                assert entries == [], (answer, entries)
                _leftover_of_the_vm(rootfs, a)
                answer = as_user(workspace, a, import_action)  # undisturbed, it works
                entries = _entries(workspace, a)
            assert [(entry["name"], entry["state"]) for entry in entries] == [("Racy", 1)], (answer, entries)
            assert rootfs.stat().st_uid == _vm_root_of(a) and (rootfs / "bin" / "busybox").is_file()
            with _attacker(workspace, a, race) as raced:
                answer = as_user(workspace, a, {"op": "unregister", "distro": "Racy"})
            _add(counts, raced)
            if "error" in answer:
                # Refused while a decoy stood in its place: with the folders back, the next call
                # completes it.
                assert answer["error"] in ("E_ACCESSDENIED", "ERROR_PATH_NOT_FOUND"), answer
            assert _entries(workspace, a) == []
            _leftover_of_the_vm(rootfs, a)
            assert service.process is not None and service.process.poll() is None
            for path, before in decoys.items():
                assert _snapshot(path) == before, path
            assert _snapshot(victim) == victim_before
        assert all(counts.values()), counts  # every kind of swap really happened
        assert sorted(os.listdir(dist)) == ["blink", "decoy"]


def test_other_users_cannot_reach_a_distributions_files(
    users: tuple[User, User], workspace: Workspace, archive: Path
) -> None:
    a, b = users
    shared = a.home / "shared"
    shared.mkdir(mode=0o755)
    os.chown(shared, a.uid, a.gid)
    home_mode = stat.S_IMODE(a.home.stat().st_mode)
    os.chmod(a.home, 0o755)  # A's home is open to everyone: the distribution's folder is not
    try:
        by_default = as_user(workspace, a, {"op": "import", "name": "Private", "archive": str(archive)})
        in_place = as_user(
            workspace, a, {"op": "import", "name": "Shared", "archive": str(archive), "location": str(shared)}
        )
        assert "result" in by_default and "result" in in_place, (by_default, in_place)
        made = as_user(
            workspace,
            a,
            {
                "op": "run",
                "distro": "Shared",
                "command": ["cp /bin/busybox /bin/rootshell && chmod 4755 /bin/rootshell && id -u"],
            },
        )
        assert made["result"] == {"code": 0, "stdout": "0\n"}, made
        setuid = shared / "rootfs" / "bin" / "rootshell"
        info = setuid.stat()
        assert info.st_uid == _vm_root_of(a) and info.st_mode & stat.S_ISUID
        data = a.home / ".local" / "share" / "pywsl"
        [default_folder] = [path for path in data.iterdir() if (path / "rootfs").is_dir()]
        for folder in (shared, default_folder):
            assert (folder.stat().st_uid, stat.S_IMODE(folder.stat().st_mode)) == (a.uid, 0o700)
        for target in (setuid, default_folder / "rootfs" / "bin" / "busybox"):
            with pytest.raises(PermissionError):
                subprocess.run(
                    [str(target), "id", "-u"],
                    user=b.uid,
                    group=b.gid,
                    extra_groups=[],
                    env=user_env(workspace, b),
                    cwd="/",
                    capture_output=True,
                    timeout=30,
                )
            read = subprocess.run(
                ["/bin/cat", str(target.parents[1] / "etc" / "passwd")],
                user=b.uid,
                group=b.gid,
                extra_groups=[],
                cwd="/",
                capture_output=True,
                timeout=30,
            )
            assert read.returncode != 0 and b"Permission denied" in read.stderr
    finally:
        for name in ("Private", "Shared"):
            as_user(workspace, a, {"op": "unregister", "distro": name})
        os.chmod(a.home, home_mode)
        shutil.rmtree(shared, ignore_errors=True)
    assert _entries(workspace, a) == []


def test_files_of_other_owners_survive_an_unregister(
    users: tuple[User, User], workspace: Workspace, archive: Path
) -> None:
    a, _ = users
    location = a.home / "planted"
    answer = as_user(
        workspace, a, {"op": "import", "name": "Planted", "archive": str(archive), "location": str(location)}
    )
    assert "result" in answer, answer
    rootfs = location / "rootfs"
    planted = rootfs / "etc" / "planted"
    try:
        planted.write_text("root's\n")  # as root: an id outside A's range
        (rootfs / "var" / "root-dir").mkdir()
        (rootfs / "var" / "root-dir" / "inside").write_text("root's\n")
        answer = as_user(workspace, a, {"op": "unregister", "distro": "Planted"})
        assert answer.get("error") == "E_ACCESSDENIED", answer
        assert "neither the user nor the distribution's ids" in answer["message"]
        assert "planted" in answer["message"] and "root-dir" in answer["message"]
        assert planted.read_text() == "root's\n" and planted.stat().st_uid == 0
        assert (rootfs / "var" / "root-dir" / "inside").read_text() == "root's\n"
        assert not (rootfs / "bin" / "busybox").exists()  # the distribution's own files went
        [entry] = _entries(workspace, a)
        assert entry["name"] == "Planted" and entry["state"] == 4  # Uninstalling, retried later
        planted.unlink()
        shutil.rmtree(rootfs / "var" / "root-dir")
        assert _entries(workspace, a) == []  # the next call completes the unregister
        assert not rootfs.exists()
    finally:
        if location.exists():
            as_user(workspace, a, {"op": "unregister", "distro": "Planted"})
            shutil.rmtree(location, ignore_errors=True)
    assert _entries(workspace, a) == []


def test_the_attacker_script_really_swaps(users: tuple[User, User], workspace: Workspace) -> None:
    """The race above means something: A can exchange a directory of root's in its own folder."""
    a, b = users
    with _race_layout(a, b) as (_, dist, _):
        (dist / "rootfs").mkdir()
        os.chown(dist / "rootfs", a.uid, a.gid)
        script = (
            "import ctypes, sys\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "sys.exit(libc.syscall(316, -100, sys.argv[1].encode(), -100, sys.argv[2].encode(), 2))"
        )
        swapped = subprocess.run(
            [str(workspace.python), "-c", script, str(dist / "rootfs"), str(dist / "decoy")],
            user=a.uid,
            group=a.gid,
            extra_groups=[],
            env=user_env(workspace, a),
            capture_output=True,
            timeout=30,
        )
        assert swapped.returncode == 0, swapped.stderr
        assert (dist / "rootfs").stat().st_uid == 0 and (dist / "rootfs" / "precious").exists()
