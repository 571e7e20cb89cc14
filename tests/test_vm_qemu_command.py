"""The qemu backend's QEMU command line: devices and descriptors, memory under KVM and TCG, the
kernel command line's words, the paths QEMU cannot take; and the KVM probe when QEMU cannot run."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import pytest

from pywsl.vm.backends.qemu_command import (
    MIN_MEMORY_MIB,
    QEMU_FDS,
    TCG_MEMORY_LIMIT_MIB,
    QemuPlan,
    host_tsc_khz,
    kvm_works,
    memory_size_mib,
    qemu_argv,
)
from pywsl.vm.errors import VmError

MIB = 1024 * 1024
PLAN = QemuPlan(
    qemu="/usr/bin/qemu-system-x86_64",
    kernel=Path("/boot/vmlinuz"),
    initramfs=Path("/var/cache/pywsl/initramfs.img"),
    python="/usr/bin/python3.11",
    shares=(Path("/srv/pywsl"), Path("/opt/venv/lib/python3.11/site-packages")),
    console_to_log=True,
    memory_bytes=512 * MIB,
    processors=3,
    kvm=True,
    vm_idle_timeout_ms=60000,
    extra_command_line="  quiet_extra=1  ",
    instance_idle_timeout_ms=15000,
    distributions=True,
    host_files=True,
    networking="nat",
    qmp=True,
)


def option_values(argv: list[str], option: str) -> list[str]:
    """The values that follow each occurrence of ``option``."""
    return [value for name, value in itertools.pairwise(argv) if name == option]


def kernel_words(argv: list[str]) -> list[str]:
    (append,) = option_values(argv, "-append")
    return append.split()


@pytest.mark.parametrize(
    ("memory_bytes", "kvm", "expected"),
    [
        (None, True, 1024),  # [wsl2] memory unset: 1 GiB
        (100 * MIB, True, MIN_MEMORY_MIB),
        (8192 * MIB, True, 8192),
        (8192 * MIB, False, TCG_MEMORY_LIMIT_MIB),  # TCG initialises memory slowly
        (512 * MIB, False, 512),
    ],
)
def test_the_guest_memory_is_the_setting_within_the_bounds(
    memory_bytes: int | None, kvm: bool, expected: int
) -> None:
    plan = dataclasses.replace(PLAN, memory_bytes=memory_bytes, kvm=kvm)
    assert memory_size_mib(plan) == expected
    argv = qemu_argv(plan)
    assert option_values(argv, "-m") == [f"{expected}M"]
    # The memory shared with the file servers (vhost-user) is the guest's whole memory.
    assert f"memory-backend-memfd,id=mem,size={expected}M,share=on" in option_values(argv, "-object")


def test_kvm_and_tcg_select_the_accelerator_and_the_cpu() -> None:
    kvm = qemu_argv(PLAN)
    assert (option_values(kvm, "-accel"), option_values(kvm, "-cpu")) == (["kvm"], ["host"])
    tcg = qemu_argv(dataclasses.replace(PLAN, kvm=False))
    assert (option_values(tcg, "-accel"), option_values(tcg, "-cpu")) == (["tcg"], ["max"])
    # Under TCG the guest's early TSC calibration is given the host's rate (when the host has one).
    khz = host_tsc_khz()
    tsc = [word for word in kernel_words(tcg) if word.startswith("tsc_early_khz=")]
    assert tsc == ([f"tsc_early_khz={khz}"] if khz else [])
    assert not any(word.startswith("tsc_early_khz=") for word in kernel_words(kvm))


def test_qemu_opens_no_file_itself_every_file_is_a_descriptor_of_the_monitor() -> None:
    argv = qemu_argv(PLAN)
    assert option_values(argv, "-kernel") == [f"/proc/self/fd/{QEMU_FDS['kernel']}"]
    assert option_values(argv, "-initrd") == [f"/proc/self/fd/{QEMU_FDS['initramfs']}"]
    chardevs = option_values(argv, "-chardev")
    assert f"socket,id=mux,fd={QEMU_FDS['port']}" in chardevs
    assert f"socket,id=qmp,fd={QEMU_FDS['qmp']}" in chardevs
    assert f"socket,id=distributions,path=/proc/self/fd/{QEMU_FDS['distributions']}" in chardevs
    assert f"socket,id=host,path=/proc/self/fd/{QEMU_FDS['host']}" in chardevs
    assert f"fd={QEMU_FDS['console']},set=1" in option_values(argv, "-add-fd")
    assert "file,id=console,path=/dev/fdset/1,append=on" in chardevs
    # debugConsole: the console on QEMU's standard output, the log kept as well.
    relayed = option_values(qemu_argv(dataclasses.replace(PLAN, console_to_log=False)), "-chardev")
    assert "stdio,id=console,signal=off,logfile=/dev/fdset/1,logappend=on" in relayed


def test_the_shares_and_the_settings_reach_the_guest() -> None:
    argv = qemu_argv(PLAN)
    assert option_values(argv, "-fsdev") == [
        "local,id=usr,path=/usr,security_model=none,readonly=on",
        "local,id=share0,path=/srv/pywsl,security_model=none,readonly=on",
        "local,id=share1,path=/opt/venv/lib/python3.11/site-packages,security_model=none,readonly=on",
    ]
    devices = option_values(argv, "-device")
    assert "virtio-9p-device,fsdev=share1,mount_tag=pywsl1" in devices
    assert "vhost-user-fs-device,chardev=host,tag=pywsl.host" in devices
    assert "virtio-net-device,netdev=net0" in devices and option_values(argv, "-smp") == ["3"]
    words = kernel_words(argv)
    for word in (
        "PYWSL_PYTHON=/usr/bin/python3.11",
        "PYWSL_SHARES=2",
        "PYWSL_SHARE0=/srv/pywsl",
        "PYWSL_SHARE1=/opt/venv/lib/python3.11/site-packages",
        "PYWSL_VM_IDLE_TIMEOUT=60000",
        "PYWSL_NETWORK=nat",
        "PYWSL_DISTRIBUTIONS=1",
        "PYWSL_HOST_FILES=1",
    ):
        assert word in words, word
    assert words[-1] == "quiet_extra=1"  # the configured kernel command line comes last


def test_a_vm_without_file_servers_or_network_has_neither() -> None:
    plan = dataclasses.replace(PLAN, distributions=False, host_files=False, networking="none", qmp=False)
    argv = qemu_argv(plan)
    assert option_values(argv, "-M") == ["microvm"] and not option_values(argv, "-object")
    assert option_values(argv, "-nic") == ["none"] and not option_values(argv, "-netdev")
    assert not any("vhost-user-fs" in device for device in option_values(argv, "-device"))
    assert "PYWSL_HOST_FILES=0" in kernel_words(argv)


@pytest.mark.parametrize(
    "change", [{"python": "/usr/bin/python 3"}, {"shares": (Path("/srv/a,b"),)}, {"shares": (Path("/a b"),)}]
)
def test_a_path_with_a_comma_or_a_space_is_refused(change: dict[str, object]) -> None:
    with pytest.raises(VmError, match="comma or space"):
        qemu_argv(dataclasses.replace(PLAN, **change))  # type: ignore[arg-type]


def test_kvm_does_not_work_when_qemu_cannot_run(tmp_path: Path) -> None:
    assert kvm_works(str(tmp_path / "qemu-system-x86_64")) is False
    broken = tmp_path / "broken-qemu"
    broken.write_text("#!/bin/sh\necho '{\"return\": {}}'\nexit 1\n")
    broken.chmod(0o755)
    assert kvm_works(str(broken)) is False  # a probe that fails is no KVM, whatever it printed
