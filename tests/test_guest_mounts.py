"""Mount plans and the system call wrappers behind them."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import TypedDict

import pytest

from pywsl.guest import forking, host_view, mounts, syscalls

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mount namespaces need root")


def test_distribution_plan_has_no_devtmpfs() -> None:
    for mode in ("mirrored", "none"):
        for host in ("/mnt/host", None):
            plan = mounts.distribution_plan(mode, host)
            fresh = {
                step.target: step.fstype for step in plan if isinstance(step, mounts.Mount) and step.fstype
            }
            assert "devtmpfs" not in fresh.values()
            assert fresh["/dev"] == "tmpfs" and fresh["/dev/pts"] == "devpts" and fresh["/proc"] == "proc"
            assert fresh["/run"] == "tmpfs" and fresh["/tmp"] == "tmpfs"
            binds = {step.target: step for step in plan if isinstance(step, mounts.Mount) and not step.fstype}
            assert {f"/dev/{name}" for name in mounts.DEVICE_NODES} <= set(binds)
            assert all(binds[f"/dev/{name}"].file for name in mounts.DEVICE_NODES)
            trees = [step for step in plan if isinstance(step, mounts.AttachTree)]
            assert [step.target for step in trees] == ([host] if host else [])
            if mode == "none":
                assert fresh["/sys"] == "sysfs"
            else:
                assert binds["/sys"].read_only and binds["/sys"].recursive
    devpts = next(step for step in mounts.distribution_plan("mirrored", None) if step.target == "/dev/pts")
    assert isinstance(devpts, mounts.Mount) and "newinstance" in (devpts.options or "")


def test_worker_plan_is_read_only_programs_and_the_target() -> None:
    plan = mounts.worker_plan(read_only_target=True)
    binds = [
        step
        for step in plan
        if isinstance(step, mounts.Mount) and step.fstype is None and step.source != "/dev/null"
    ]
    assert binds and all(step.read_only for step in binds)
    assert any(
        isinstance(step, mounts.AttachTree) and step.target == mounts.WORKER_TARGET and step.read_only
        for step in plan
    )
    assert not any(
        isinstance(step, mounts.AttachTree) and step.read_only
        for step in mounts.worker_plan(read_only_target=False)
    )


def test_system_call_errors_name_the_call(tmp_path: Path) -> None:
    with pytest.raises(OSError) as failure:
        syscalls.pivot_root(str(tmp_path / "missing"), str(tmp_path / "missing"))
    assert failure.value.errno == errno.ENOENT and "pivot_root" in str(failure.value)
    with pytest.raises(OSError) as failure:
        syscalls.umount2(str(tmp_path / "missing"))
    assert failure.value.errno == errno.ENOENT and "umount2" in str(failure.value)
    with pytest.raises(OSError) as failure:
        syscalls.open_tree(-1, "", syscalls.AT_EMPTY_PATH)
    assert failure.value.errno == errno.EBADF and "open_tree" in str(failure.value)
    with pytest.raises(OSError) as failure:
        syscalls.unshare(0x1)  # not a namespace flag
    assert failure.value.errno == errno.EINVAL and "unshare" in str(failure.value)
    plain = tmp_path / "file"
    plain.write_text("x")
    fd = os.open(plain, os.O_RDONLY)
    try:
        with pytest.raises(OSError) as failure:
            syscalls.setns(fd, syscalls.CLONE_NEWNS)
        assert failure.value.errno == errno.EINVAL and "setns" in str(failure.value)
        with pytest.raises(OSError) as failure:
            syscalls.openat2(fd, "x", os.O_RDONLY, syscalls.RESOLVE_IN_ROOT)
        assert failure.value.errno == errno.ENOTDIR
    finally:
        os.close(fd)


class MountReport(TypedDict, total=False):
    mounts: list[list[str]]  # [mount point, filesystem type]
    error: str


def _in_mount_namespace(root: Path, steps: list[mounts.Step]) -> MountReport:
    """Apply ``steps`` under ``root`` in a forked child with its own mount namespace; report the
    mounts the steps made (not what the host had mounted already: other processes mount too)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        result: MountReport = {}
        try:
            os.close(read_end)
            syscalls.unshare(syscalls.CLONE_NEWNS)
            mounts.make_private()
            root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
            before = {line.split()[0] for line in Path("/proc/self/mountinfo").read_text().splitlines()}
            mounts.apply_plan(root_fd, steps)
            table = [line.split() for line in Path("/proc/self/mountinfo").read_text().splitlines()]
            result["mounts"] = [
                [fields[4], fields[fields.index("-") + 1]] for fields in table if fields[0] not in before
            ]
        except BaseException as error:  # reported to the parent
            result["error"] = repr(error)
        forking.write_all(write_end, json.dumps(result).encode())
        forking.exit_now(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        data = reader.read()
    forking.wait_for(pid)
    report: MountReport = json.loads(data)
    return report


@needs_root
def test_symlinks_in_the_root_cannot_redirect_mounts_outside(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "proc").symlink_to("/etc")
    (root / "dev").symlink_to("../../../../../../..")
    steps: list[mounts.Step] = [
        mounts.Mount("/proc", "tmpfs", "tmpfs"),
        mounts.Mount("/dev", "tmpfs", "tmpfs"),
        mounts.Mount("/dev/null", source="/dev/null", file=True),
        mounts.Symlink("/dev/fd", "/proc/self/fd"),
        mounts.Mount("/run/deep/er", "tmpfs", "tmpfs"),
    ]
    result = _in_mount_namespace(root, steps)
    assert "error" not in result, result
    points = {point: fstype for point, fstype in result["mounts"]}
    assert points[f"{root}/etc"] == "tmpfs"  # /proc -> /etc resolved inside the root
    assert points[str(root)] == "tmpfs"  # /dev -> ../../.. stops at the root
    assert f"{root}/null" in points and f"{root}/run/deep/er" in points
    assert "/etc" not in points and "/tmp" not in points
    assert not any(point.startswith("/tmp") and not point.startswith(str(root)) for point in points)
    assert (root / "run/deep/er").is_dir()
    assert not (root / "null").exists() or (root / "null").stat().st_size == 0


@needs_root
def test_a_dangling_mount_point_fails_clearly(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "dev").symlink_to("/nowhere/at/all")
    result = _in_mount_namespace(root, [mounts.Mount("/dev", "tmpfs", "tmpfs")])
    assert "cannot set up /dev" in str(result.get("error"))
    assert not Path("/nowhere").exists()


def test_host_tree_plan_attaches_the_prepared_tree_with_a_proc_on_top() -> None:
    plan = mounts.host_tree_plan("/windows/host")
    assert plan[0] == mounts.AttachTree("/windows/host", "host")
    assert isinstance(plan[1], mounts.Mount)
    assert (plan[1].target, plan[1].fstype) == ("/windows/host/proc", "proc")
    assert mounts.distribution_plan("mirrored", "/windows/host")[-2:] == plan


def _mount_table() -> dict[str, tuple[str, set[str]]]:
    """mount point -> (type, per-mount options) of this process; the topmost mount wins."""
    table: dict[str, tuple[str, set[str]]] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        table[fields[4]] = (fields[fields.index("-") + 1], set(fields[5].split(",")))
    return table


@needs_root
def test_host_view_masks_and_locks_what_the_vm_inherits(tmp_path: Path) -> None:
    """``host_view.prepare`` in a forked child: the host tree at the folder, its masks, /sys read-only."""
    before = _mount_table()
    folder = tmp_path / "runtime"
    folder.mkdir(mode=0o700)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        report: dict[str, object] = {}
        try:
            os.close(read_end)
            host_view.prepare(str(folder))
            fd = host_view.open_host_tree(str(folder))
            os.close(fd)
            mounted = _mount_table()
            report["mounts"] = {point: [kind, sorted(options)] for point, (kind, options) in mounted.items()}
            report["masked"] = {name: os.listdir(folder / name) for name in host_view.MASKED}
            report["host_pid_visible"] = os.path.exists(folder / "proc" / str(os.getpid()))
        except BaseException as error:  # reported to the parent
            report["error"] = repr(error)
        forking.write_all(write_end, json.dumps(report).encode())
        forking.exit_now(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        data = reader.read()
    forking.wait_for(pid)
    result = json.loads(data)
    assert "error" not in result, result
    table = result["mounts"]
    kind, options = table[str(folder)]
    assert {"nosuid", "nodev"} <= set(options) and "ro" not in options
    for name in host_view.MASKED:
        kind, options = table[f"{folder}/{name}"]
        assert kind == "tmpfs" and {"ro", "nosuid", "nodev", "noexec"} <= set(options)
        assert result["masked"][name] == []
    assert not result["host_pid_visible"]
    assert "ro" in table["/sys"][1]
    # Nothing of it reached the host's mount namespace; the folder is no host tree here.
    assert _mount_table() == before
    with pytest.raises(OSError):
        host_view.open_host_tree(str(folder))
