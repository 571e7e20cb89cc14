"""`pywsl.vm.cgroup_tables`: the kernel's cgroup tables read with `os` alone, the early move into
the VM's groups, and what the boot does when a move or a wait cannot be made."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pywsl import cgroup_tables
from pywsl.vm import cgroups
from pywsl.vm.backends import namespaces, namespaces_prestart

MOUNTINFO = "\n".join(
    [
        "30 1 0:26 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw",
        "31 1 0:27 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory",
        "32 1 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct",
        "33 1 0:29 / /sys/fs/cgroup/with\\040space rw - cgroup cgroup rw,pids",
        "34 1 0:30 / /proc rw - proc proc rw",
        "no separator here",
    ]
)


def test_the_tables_are_read_as_cgroups_reads_them() -> None:
    found = cgroup_tables.hierarchies(MOUNTINFO)
    assert found == [
        ("/sys/fs/cgroup/unified", 2, frozenset()),
        ("/sys/fs/cgroup/memory", 1, frozenset({"memory"})),
        ("/sys/fs/cgroup/cpu,cpuacct", 1, frozenset({"cpu"})),
        ("/sys/fs/cgroup/with space", 1, frozenset({"pids"})),
    ]
    assert [
        (str(h.mount_point), h.version, h.controllers) for h in cgroups.mounted_hierarchies(MOUNTINFO)
    ] == [(path, version, controllers) for path, version, controllers in found]
    proc = "4:memory:/a\n1:cpu,cpuacct:/c\n0::/d\n"
    assert cgroup_tables.own_group(proc, 1, "cpu") == "/c" == cgroups.own_cgroup(1, "cpu", proc)
    assert cgroup_tables.own_group(proc, 2, None) == "/d"
    assert cgroup_tables.own_group(proc, 1, "pids") == "/"


def test_reading_and_moving_fail_quietly(tmp_path: Path) -> None:
    assert cgroup_tables.read_text(str(tmp_path / "missing")) == ""
    assert cgroup_tables.read_text(str(tmp_path)) == ""  # a folder: read() fails
    assert not cgroup_tables.has_process(str(tmp_path), os.getpid())
    assert cgroup_tables._made(str(tmp_path / "no" / "such"), "/", "group") is None
    made = cgroup_tables._made(str(tmp_path), "/", "group")
    assert made == str(tmp_path / "group") and cgroup_tables._made(str(tmp_path), "/", "group") == made
    assert not cgroup_tables._moved(str(tmp_path / "no-group"), os.getpid())
    (tmp_path / "group" / "cgroup.procs").mkdir()  # not a file: the write is refused
    assert not cgroup_tables._moved(made, os.getpid())
    assert not cgroups.VmCgroup((tmp_path / "missing",)).add(os.getpid())


def test_the_digest_names_the_real_folder(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to("real")
    digest = cgroup_tables.group_digest(str(tmp_path / "link"))
    assert (
        digest
        == cgroup_tables.group_digest(str(tmp_path / "real"))
        == namespaces.cgroup_digest(tmp_path / "real")
    )
    assert len(digest) == 12 and int(digest, 16) >= 0
    matches = namespaces.cgroups_of(tmp_path / "real")
    assert matches(f"pywsl-0-{digest}") and matches(f"pywsl-1000-{digest}")
    assert not matches(f"pywsl-x-{digest}") and not matches(f"pywsl-0-{digest}0")
    assert namespaces.is_cgroup_of(tmp_path / "link", f"pywsl-0-{digest}")


def test_the_boot_waits_for_a_process_without_pidfds(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_pidfds(pid: int, timeout: float) -> bool:
        raise OSError(38, "no pidfds")

    monkeypatch.setattr(namespaces_prestart, "exits_within", no_pidfds)
    quick = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    assert namespaces_prestart.exit_status_within(quick, 30) == 3
    slow = subprocess.Popen(["sleep", "30"])
    try:
        assert namespaces_prestart.exit_status_within(slow, 0.1) is None
    finally:
        slow.kill()
        slow.wait()


def test_a_grouping_that_does_not_end_is_not_waited_for_long(tmp_path: Path) -> None:
    process = namespaces_prestart.PrestartedProcess(os.getpid(), [])
    left, right = socket.socketpair()
    right.close()
    prestarted = namespaces_prestart.Prestarted(process, str(tmp_path), {}, left)
    assert prestarted.grouped(0)  # no mover: nothing to wait for
    prestarted.mover = _sleeper()  # as if its shell were still moving it
    try:
        assert not prestarted.grouped(0.05)
    finally:
        prestarted.mover.kill()
        left.close()
    assert prestarted.grouped(5) and prestarted.mover.returncode == -9  # ended, and reaped


def _sleeper() -> namespaces_prestart.PrestartedProcess:
    pid = os.posix_spawn("/bin/sleep", ["sleep", "30"], dict(os.environ))
    return namespaces_prestart.PrestartedProcess(pid, ["sleep", "30"])


def test_a_prestarted_process_is_waited_for_and_killed_as_popen_does() -> None:
    process = _sleeper()
    assert process.poll() is None
    with pytest.raises(subprocess.TimeoutExpired):
        process.wait(0.05)
    process.kill()
    assert process.wait(10) == -9 and process.poll() == -9
    process.kill()  # reaped: nothing is signalled again
    stranger = namespaces_prestart.PrestartedProcess(1, [])  # not a child of this process
    assert stranger.poll() == -1 and stranger.wait() == -1


def test_without_cgroups_no_mover_is_started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Groups that cannot be made (or none at all) start no shell: the boot makes them itself."""
    prestarted = namespaces_prestart.Prestarted(
        namespaces_prestart.PrestartedProcess(os.getpid(), []), str(tmp_path), {}, socket.socket()
    )

    def fail(name: str) -> tuple[str, ...]:
        raise OSError("no cgroups here")

    for make in (fail, lambda name: ()):
        monkeypatch.setattr(cgroup_tables, "make_early", make)
        prestarted.group_early()
        assert prestarted.groups == () and prestarted.mover is None and prestarted.grouped(0)
    prestarted.handoff.close()


def test_a_hand_over_that_cannot_be_sent_ends_the_interpreter_and_keeps_the_groups(tmp_path: Path) -> None:
    group = tmp_path / "group"
    group.mkdir()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    theirs.close()
    process = _sleeper()
    prestarted = namespaces_prestart.Prestarted(process, str(tmp_path), {}, ours)
    prestarted.groups = (str(group),)
    assert not prestarted.hand_over(["--listen-fd", "3"], 0, 1)
    assert process.returncode == -9 and group.is_dir()  # the boot goes on in the groups
    prestarted.end()  # no boot then: its empty groups go
    assert not group.exists()
