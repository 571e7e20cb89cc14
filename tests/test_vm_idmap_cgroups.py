"""The VM's id ranges (/etc/subuid or the documented default) and its cgroup limits."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from pywsl import cgroup_tables
from pywsl.vm import cgroups, idmap
from pywsl.vm.backends import namespaces_prestart
from pywsl.vm.idmap import IdMapError, SubordinateRange


def test_subordinate_file_parsing() -> None:
    text = "# comment\nbob:100000:65536\nalice:165536:65536\n1234:300000:70000\nbroken\ncarol:x:1\n"
    assert idmap.parse_subordinate_file(text, "alice", 1001) == SubordinateRange(165536, 65536)
    assert idmap.parse_subordinate_file(text, None, 1234) == SubordinateRange(300000, 70000)
    assert idmap.parse_subordinate_file(text, "carol", 7) is None
    assert idmap.parse_subordinate_file("dave:4294967000:65536\n", "dave", 9) is None


def test_default_ranges_are_disjoint_and_unprivileged() -> None:
    first, second = idmap.default_range(0), idmap.default_range(1)
    assert first.start == idmap.DEFAULT_ID_BASE == 1 << 30
    assert second.start == first.start + first.count
    last = idmap.default_range(idmap.DEFAULT_MAX_OWNER_UID - 1)
    assert last.start + last.count <= 1 << 31
    with pytest.raises(IdMapError, match="/etc/subuid"):
        idmap.default_range(idmap.DEFAULT_MAX_OWNER_UID)
    with pytest.raises(IdMapError):
        idmap.default_range(-1)


def test_maps_for_root_and_for_a_user(tmp_path: Path) -> None:
    subuid, subgid = tmp_path / "subuid", tmp_path / "subgid"
    uid_map, gid_map = idmap.maps_for_owner(0, 0, subuid_path=subuid, subgid_path=subgid)
    assert uid_map == gid_map == [(0, 1 << 30, 65536)]
    subuid.write_text("4242:200000:65536\n")
    subgid.write_text("4242:300000:100\n")  # too small: the default range is used
    uid_map, gid_map = idmap.maps_for_owner(4242, 4343, subuid_path=subuid, subgid_path=subgid)
    assert uid_map == [(0, 200000, 1000), (1000, 4242, 1), (1001, 201001, 64535)]
    base = (1 << 30) + 65536 * 4242
    assert gid_map == [(0, base, 1000), (1000, 4343, 1), (1001, base + 1001, 64535)]
    assert idmap.host_id(uid_map, 0) == 200000 and idmap.host_id(uid_map, 1000) == 4242
    assert idmap.host_id(uid_map, 65535) == 200000 + 65535
    with pytest.raises(IdMapError):
        idmap.host_id(uid_map, 65536)
    assert idmap.format_map(uid_map) == "0 200000 1000\n1000 4242 1\n1001 201001 64535\n"
    assert idmap.identity_map() == [(0, 0, (1 << 32) - 1)]


MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""


def test_hierarchies_and_own_group() -> None:
    found = cgroups.mounted_hierarchies(MOUNTINFO)
    assert [(str(item.mount_point), item.version, sorted(item.controllers)) for item in found] == [
        ("/sys/fs/cgroup/cpu", 1, ["cpu"]),
        ("/sys/fs/cgroup/memory", 1, ["memory"]),
        ("/sys/fs/cgroup/pids", 1, ["pids"]),
        ("/sys/fs/cgroup/systemd", 1, []),
        ("/sys/fs/cgroup/unified", 2, []),
    ]
    proc = "4:memory:/a/b\n1:cpu,cpuacct:/c\n0::/d\n"
    assert cgroups.own_cgroup(1, "memory", proc) == "/a/b"
    assert cgroups.own_cgroup(1, "cpu", proc) == "/c"
    assert cgroups.own_cgroup(2, None, proc) == "/d"
    assert cgroups.own_cgroup(1, "pids", proc) == "/"


@pytest.mark.skipif(os.geteuid() != 0, reason="creating cgroups needs root")
def test_limits_are_applied_and_removed() -> None:
    group = cgroups.VmCgroup.create(f"pywsl-test-{os.getpid()}", memory_bytes=300 << 20, processors=2)
    try:
        assert group.paths
        memory = [
            path
            for path in group.paths
            if (path / "memory.limit_in_bytes").exists() or (path / "memory.max").exists()
        ]
        assert memory, group.warnings
        for path in memory:
            limit = path / ("memory.max" if (path / "memory.max").exists() else "memory.limit_in_bytes")
            assert int(limit.read_text()) == 300 << 20
        cpu = [
            path
            for path in group.paths
            if (path / "cpu.cfs_quota_us").exists() or (path / "cpu.max").exists()
        ]
        for path in cpu:
            if (path / "cpu.max").exists():
                assert (path / "cpu.max").read_text().split() == ["200000", "100000"]
            else:
                assert int((path / "cpu.cfs_quota_us").read_text()) == 200_000
        assert group.process_ids() == set()
        # A reused group loses the limits of the previous VM.
        again = cgroups.VmCgroup.create(f"pywsl-test-{os.getpid()}", memory_bytes=None, processors=None)
        for path in memory:
            if (path / "memory.limit_in_bytes").exists():
                assert int((path / "memory.limit_in_bytes").read_text()) > 300 << 20
        assert set(again.paths) <= set(group.paths)
    finally:
        group.remove()
    assert not any(path.exists() for path in group.paths)


def _prestarted(runtime_dir: Path, argv: list[str]) -> namespaces_prestart.Prestarted:
    pid = os.posix_spawn(argv[0], argv, dict(os.environ))
    ours, theirs = socket.socketpair()
    theirs.close()
    return namespaces_prestart.Prestarted(
        namespaces_prestart.PrestartedProcess(pid, argv), str(runtime_dir), {}, ours
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="creating cgroups needs root")
def test_a_shell_moves_the_prestarted_interpreter_into_every_group(tmp_path: Path) -> None:
    """`Prestarted.group_early` makes the VM's groups and a shell moves the interpreter into all of
    them; the boot waits for that shell (`grouped`), and an interpreter ended unused takes them along."""
    prestarted = _prestarted(tmp_path / "run", ["/bin/sleep", "30"])
    try:
        prestarted.group_early()
        assert prestarted.mover is not None
        assert prestarted.grouped(10) and prestarted.mover.returncode == 0
        name = cgroup_tables.group_name(0, str(tmp_path / "run"))
        assert prestarted.groups and all(os.path.basename(group) == name for group in prestarted.groups)
        assert all(cgroup_tables.has_process(group, prestarted.process.pid) for group in prestarted.groups)
    finally:
        prestarted.end()
    assert prestarted.groups and not any(os.path.exists(group) for group in prestarted.groups)


@pytest.mark.skipif(os.geteuid() != 0, reason="creating cgroups needs root")
def test_a_process_gone_before_its_move_leaves_no_groups(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """An interpreter that is gone before the shell moves it (its launch vanished, and it left the
    groups it was not in yet) would leave them behind: the shell removes them. Its failed moves
    say nothing on the launch's streams (the shell's are /dev/null)."""
    prestarted = _prestarted(tmp_path / "run", ["/bin/true"])
    assert prestarted.process.wait(10) == 0
    prestarted.group_early()
    assert prestarted.groups and prestarted.mover is not None
    assert prestarted.grouped(10)
    assert not any(os.path.exists(group) for group in prestarted.groups)
    assert capfd.readouterr() == ("", "")


@pytest.mark.skipif(os.geteuid() != 0, reason="creating cgroups needs root")
def test_the_early_groups_nobody_uses_are_removed() -> None:
    """`remove_unused` removes the groups `make_early` made beside this process's own that are
    empty (an interpreter never moved into them), and leaves one that a process is in."""
    name = f"pywsl-unused-{os.getpid()}"
    groups = cgroup_tables.make_early(name)
    assert groups
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        assert cgroup_tables.join(groups[0], sleeper.pid)
        cgroup_tables.remove_unused(name)
        assert os.path.isdir(groups[0]) and not any(os.path.exists(group) for group in groups[1:])
    finally:
        sleeper.kill()
        sleeper.wait()
    assert cgroup_tables.remove_empty(groups[0])  # (its last process gone)
    cgroup_tables.remove_unused(name)  # nothing left to remove: quietly nothing


def test_a_process_enters_the_vm_groups_early() -> None:
    """`cgroup_tables.make_early` makes the groups `VmCgroup.create` makes without a processor
    limit and a process joins them; `create` then takes them over with their limits."""
    name = f"pywsl-early-{os.getpid()}"
    child = subprocess.Popen(["sleep", "30"])
    groups: tuple[str, ...] = ()
    created: cgroups.VmCgroup | None = None
    try:
        groups = cgroup_tables.make_early(name)
        assert groups and all(os.path.basename(group) == name for group in groups)
        assert all([cgroup_tables.join(group, child.pid) for group in groups])
        assert all(cgroup_tables.has_process(group, child.pid) for group in groups)
        assert cgroup_tables.make_early(name) == groups  # made already: the same ones
        assert all([cgroup_tables.join(group, child.pid) for group in groups])  # in them: not moved again
        created = cgroups.VmCgroup.create(name, memory_bytes=300 << 20, processors=None)
        assert {str(path) for path in created.paths} == set(groups), created.warnings
        assert created.add(child.pid)
        assert not cgroup_tables.has_process(str(groups[0]), os.getpid())
    finally:
        child.kill()
        child.wait()
        for group in groups:
            assert cgroups.remove_group(Path(group), 5.0)


def test_the_groups_made_for_an_ended_process_are_reported_and_removed() -> None:
    """A process that ended before the move still gets its groups reported, so that whoever
    ended it removes them; a group with a process in it is not removed."""
    name = f"pywsl-ended-{os.getpid()}"
    child = subprocess.Popen(["true"])
    child.wait()
    groups = cgroup_tables.make_early(name)
    for group in groups:
        cgroup_tables.join(group, child.pid)  # (it has ended: no move can succeed)
    try:
        assert groups and all(os.path.isdir(group) for group in groups)
        assert not any(cgroup_tables.has_process(group, child.pid) for group in groups)
        sleeper = subprocess.Popen(["sleep", "30"])
        try:
            assert cgroup_tables.join(groups[0], sleeper.pid)
            assert not cgroup_tables.remove_empty(groups[0], timeout=0.05)  # in use: stays
            assert os.path.isdir(groups[0])
        finally:
            sleeper.kill()
            sleeper.wait()
        assert all(cgroup_tables.remove_empty(group) for group in groups)  # waits for the exit
        assert not any(os.path.exists(group) for group in groups)
        assert cgroup_tables.remove_empty(groups[0])  # gone already
    finally:
        for group in groups:
            cgroup_tables.remove_empty(group)
