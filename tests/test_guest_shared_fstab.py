"""``/mnt/wsl`` (a tmpfs shared by the distributions of one VM) and ``[automount] mountFsTab``."""

from __future__ import annotations

import os

import pytest
from conftest import VmFactory, run_in

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the namespaces backend needs root")


def test_mnt_wsl_is_shared_between_distributions_of_a_vm(vm_factory: VmFactory) -> None:
    booted = vm_factory.boot()
    first = booted.vm.launch_instance("One", vm_factory.rootfs("one", vm=booted), default_uid=0, hostname="a")
    second = booted.vm.launch_instance(
        "Two", vm_factory.rootfs("two", vm=booted), default_uid=0, hostname="b"
    )
    assert run_in(first, "echo from-one > /mnt/wsl/marker").code == 0
    assert run_in(second, "cat /mnt/wsl/marker").stdout == "from-one\n"
    shown = run_in(second, "grep ' /mnt/wsl ' /proc/self/mountinfo; stat -c %a /mnt/wsl").stdout.splitlines()
    assert "tmpfs" in shown[0] and shown[1] == "1777"
    # /tmp stays each distribution's own.
    run_in(first, "echo mine > /tmp/own")
    assert run_in(second, "cat /tmp/own").code != 0
    # A second VM has a /mnt/wsl of its own.
    other = vm_factory.boot()
    third = other.vm.launch_instance(
        "Three", vm_factory.rootfs("three", vm=other), default_uid=0, hostname="c"
    )
    assert run_in(third, "cat /mnt/wsl/marker").code != 0
    for instance in (first, second, third):
        instance.terminate()


def test_fstab_is_mounted_at_start_and_a_bad_line_warns(vm_factory: VmFactory) -> None:
    booted = vm_factory.boot()
    boot_command = "grep -c ' /data ' /proc/self/mountinfo > /saw.new; mv /saw.new /saw"
    rootfs = vm_factory.rootfs("fstab", vm=booted, wsl_conf=f"[boot]\ncommand = {boot_command}\n")
    (rootfs / "data").mkdir()
    (rootfs / "etc/fstab").write_text("# comment\ntmpfs /data tmpfs size=1m,mode=0710 0 0\n")
    instance = booted.vm.launch_instance("Fstab", rootfs, default_uid=0, hostname="f")
    assert instance.warnings == []
    shown = run_in(instance, "grep ' /data ' /proc/self/mountinfo; stat -c %a /data").stdout.splitlines()
    assert "tmpfs" in shown[0] and shown[1] == "710"
    # [boot] command runs after fstab is mounted.
    saw = run_in(
        instance, "i=0; while [ ! -e /saw ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done; cat /saw"
    )
    assert saw.stdout == "1\n"
    instance.terminate()

    (rootfs / "etc/fstab").write_text(
        "tmpfs /data tmpfs size=1m 0 0\n/dev/nothing-here /missing ext4 defaults 0 0\n"
    )
    instance = booted.vm.launch_instance("Fstab", rootfs, default_uid=0, hostname="f")
    assert len(instance.warnings) == 1 and "mount -a failed" in instance.warnings[0], instance.warnings
    assert run_in(instance, "grep -c ' /data ' /proc/self/mountinfo").stdout == "1\n"
    instance.terminate()


def test_mount_fs_tab_false_leaves_fstab_alone(vm_factory: VmFactory) -> None:
    booted = vm_factory.boot()
    rootfs = vm_factory.rootfs("nofstab", vm=booted, wsl_conf="[automount]\nmountFsTab = false\n")
    (rootfs / "data").mkdir()
    (rootfs / "etc/fstab").write_text("tmpfs /data tmpfs size=1m 0 0\n")
    instance = booted.vm.launch_instance("NoFstab", rootfs, default_uid=0, hostname="n")
    assert instance.warnings == []
    assert run_in(instance, "grep -c ' /data ' /proc/self/mountinfo").stdout == "0\n"
    instance.terminate()
