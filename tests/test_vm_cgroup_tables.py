"""`pywsl.vm.cgroup_tables`: the kernel's cgroup tables read with `os` alone, the early move into
the VM's groups, and what the boot does when a move or a wait cannot be made."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


class FakeUnified:
    """The kernel's rules for enabling v2 controllers, over folders in `root`: a group offers its
    sub-groups what its `cgroup.subtree_control` names; a controller can be enabled only where the
    group has it, and not in a group with processes unless it is the root."""

    def __init__(self, root: Path, root_has: set[str], busy: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.root = str(root)
        self.root_has = root_has
        self.busy = {os.path.normpath(os.path.join(self.root, name)) for name in busy}
        self.enabled: dict[str, set[str]] = {}
        self.kernel_root = True  # False: the root of a cgroup namespace, not exempt from the rule

    def controllers(self, group: str, name: str) -> set[str]:
        group = os.path.normpath(group)
        if name == "cgroup.subtree_control":
            return set(self.enabled.get(group, set()))
        return (
            set(self.root_has)
            if group == self.root
            else self.controllers(os.path.dirname(group), "cgroup.subtree_control")
        )

    def write(self, group: str, text: str) -> None:
        group = os.path.normpath(group)
        controller = text.removeprefix("+")
        if controller not in self.controllers(group, "cgroup.controllers"):
            raise OSError(errno.ENOENT, "no such controller")
        if (group != self.root or not self.kernel_root) and group in self.busy:
            raise OSError(errno.EBUSY, "processes in the group")
        self.enabled.setdefault(group, set()).add(controller)


@pytest.fixture
def unified(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., FakeUnified]:
    def make(root_has: set[str], busy: set[str] = frozenset(), folders: tuple[str, ...] = ()) -> FakeUnified:  # type: ignore[assignment]
        for folder in folders:
            (tmp_path / folder).mkdir(parents=True)
        fake = FakeUnified(tmp_path, root_has, busy)
        monkeypatch.setattr(cgroup_tables, "_controllers", fake.controllers)
        monkeypatch.setattr(cgroup_tables, "_write_control", fake.write)
        return fake

    return make


SYSTEMD_SCOPE = "user.slice/user-0.slice/session-1.scope"


def test_a_hybrid_hosts_vm_groups_stay_below_the_callers_group(tmp_path: Path, unified: Any) -> None:
    fake = unified(set(), busy={SYSTEMD_SCOPE}, folders=(SYSTEMD_SCOPE,))
    assert cgroup_tables.unified_place(str(tmp_path), f"/{SYSTEMD_SCOPE}") == f"/{SYSTEMD_SCOPE}"
    assert fake.enabled == {} and not (tmp_path / cgroup_tables.V2_TOP).exists()


def test_a_pure_v2_systemd_host_puts_vm_groups_where_the_controllers_can_be(
    tmp_path: Path, unified: Any
) -> None:
    fake = unified({"cpu", "cpuset", "io", "memory", "pids"}, busy={SYSTEMD_SCOPE}, folders=(SYSTEMD_SCOPE,))
    fake.enabled[str(tmp_path)] = {"memory", "pids"}  # what systemd enabled at the root
    place = cgroup_tables.unified_place(str(tmp_path), f"/{SYSTEMD_SCOPE}")
    assert place == f"/{cgroup_tables.V2_TOP}"
    top = str(tmp_path / cgroup_tables.V2_TOP)
    assert fake.enabled[str(tmp_path)] == {"cpu", "cpuset", "memory", "pids"}  # io and pids left alone
    assert fake.enabled[top] == {"cpu", "cpuset", "memory"}
    assert fake.controllers(os.path.join(top, "pywsl-0-x"), "cgroup.controllers") == {
        "cpu",
        "cpuset",
        "memory",
    }
    # A second VM finds the place ready.
    assert cgroup_tables.unified_place(str(tmp_path), f"/{SYSTEMD_SCOPE}") == f"/{cgroup_tables.V2_TOP}"


def test_a_caller_in_the_root_group_enables_the_controllers_there(tmp_path: Path, unified: Any) -> None:
    fake = unified({"cpu", "memory", "pids"})
    assert cgroup_tables.unified_place(str(tmp_path), "/") == "/"
    assert fake.enabled[str(tmp_path)] == {"cpu", "memory"}
    assert not (tmp_path / cgroup_tables.V2_TOP).exists()


def test_a_caller_whose_group_already_offers_them_keeps_it(tmp_path: Path, unified: Any) -> None:
    fake = unified({"cpu", "memory"}, folders=("delegated",))
    fake.enabled[str(tmp_path)] = {"cpu", "memory"}
    fake.enabled[str(tmp_path / "delegated")] = {"cpu", "memory"}
    assert cgroup_tables.unified_place(str(tmp_path), "/delegated") == "/delegated"
    assert not (tmp_path / cgroup_tables.V2_TOP).exists()


def test_a_namespace_root_with_processes_changes_nothing(tmp_path: Path, unified: Any) -> None:
    """In a cgroup namespace the root seen is a group with processes: nothing can be enabled, and
    the group made on the way is removed again."""
    fake = unified({"cpu", "memory"}, busy={"", "container"}, folders=("container",))
    fake.kernel_root = False
    assert cgroup_tables.unified_place(str(tmp_path), "/container") == "/container"
    assert fake.enabled == {}
    assert not (tmp_path / cgroup_tables.V2_TOP).exists()


def _unified_with(controller: str) -> str | None:
    """The unified hierarchy's mount point when this process is in its root group and the kernel
    offers `controller` there (on these hosts `hugetlb`, the one controller no v1 hierarchy has)."""
    found = [
        item
        for item in cgroup_tables.hierarchies(cgroup_tables.read_text("/proc/self/mountinfo"))
        if item[1] == 2
    ]
    if os.geteuid() != 0 or not found:
        return None
    mount_point = found[0][0]
    own = cgroup_tables.own_group(cgroup_tables.read_text("/proc/self/cgroup"), 2, None)
    offered = cgroup_tables.read_text(os.path.join(mount_point, "cgroup.controllers")).split()
    return mount_point if own == "/" and controller in offered else None


def test_the_kernel_gives_the_vm_groups_a_controller_the_callers_group_cannot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The real kernel's rules, with the one v2 controller this host's unified hierarchy has: a
    caller in a group with processes gets a place below the root whose groups have it."""
    mount_point = _unified_with("hugetlb")
    if mount_point is None:
        pytest.skip("needs root in the root group of a unified hierarchy that offers hugetlb")
    tag = f"pywsl-test-{os.getpid()}"
    scope, top = os.path.join(mount_point, f"{tag}-scope"), os.path.join(mount_point, f"{tag}-top")
    root_had = (
        "hugetlb" in cgroup_tables.read_text(os.path.join(mount_point, "cgroup.subtree_control")).split()
    )
    monkeypatch.setattr(cgroup_tables, "V2_CONTROLLERS", frozenset({"hugetlb"}))
    monkeypatch.setattr(cgroup_tables, "V2_TOP", f"{tag}-top")
    os.mkdir(scope)
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        assert cgroup_tables.join(scope, sleeper.pid)  # a scope with a process, as systemd's
        place = cgroup_tables.unified_place(mount_point, f"/{tag}-scope")
        assert place == f"/{tag}-top"
        assert (
            "hugetlb" in cgroup_tables.read_text(os.path.join(mount_point, "cgroup.subtree_control")).split()
        )
        assert cgroup_tables.read_text(os.path.join(top, "cgroup.subtree_control")).split() == ["hugetlb"]
        vm_group = os.path.join(top, "pywsl-0-test")
        os.mkdir(vm_group)
        assert cgroup_tables.read_text(os.path.join(vm_group, "cgroup.controllers")).split() == ["hugetlb"]
        assert cgroup_tables.join(vm_group, sleeper.pid)  # the VM's processes can live there
        assert cgroup_tables.unified_place(mount_point, f"/{tag}-scope") == place  # the next VM's too
    finally:
        sleeper.kill()
        sleeper.wait()
        for group in (os.path.join(top, "pywsl-0-test"), top, scope):
            cgroup_tables.remove_empty(group)
        if not root_had:
            with open(os.path.join(mount_point, "cgroup.subtree_control"), "w") as control:
                control.write("-hugetlb")
    assert not os.path.exists(top) and not os.path.exists(scope)
