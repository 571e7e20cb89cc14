"""The monitor's side of disks: QMP with descriptors, hot-plug on the SCSI controller, use counts.

A real QEMU with the VM's SCSI controller and QMP on a socket pair, as the monitor starts it, but
no kernel: its firmware finds nothing to boot and waits. It must run (``cont``): QEMU closes a
removed descriptor set only while the machine runs.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pywsl.vm.backends.qemu_disks import FDSET_BASE, DiskAttacher, image_format
from pywsl.vm.backends.qemu_qmp import QmpError, QmpLink

QEMU = shutil.which("qemu-system-x86_64")
pytestmark = pytest.mark.skipif(QEMU is None, reason="qemu-system-x86 is not installed")


@pytest.fixture
def qemu() -> Iterator[QmpLink]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    assert QEMU is not None
    process = subprocess.Popen(
        [
            QEMU,
            "-M",
            "microvm",
            "-accel",
            "tcg",
            "-m",
            "64M",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-S",
            "-global",
            "virtio-mmio.force-legacy=false",
            "-device",
            "virtio-scsi-device,id=scsi0",
            "-chardev",
            f"socket,id=qmp,fd={theirs.fileno()}",
            "-mon",
            "chardev=qmp,mode=control",
        ],
        pass_fds=[theirs.fileno()],
        stdin=subprocess.DEVNULL,
    )
    theirs.close()
    link = QmpLink(ours)
    link.execute("cont")
    try:
        yield link
    finally:
        link.close()
        process.kill()
        process.wait(30)


def nodes(link: QmpLink) -> set[str]:
    answer: Any = link.execute("query-named-block-nodes")
    return {node["node-name"] for node in answer if node["node-name"].startswith("disk")}


def fdsets(link: QmpLink) -> set[int]:
    answer: Any = link.execute("query-fdsets")
    return {entry["fdset-id"] for entry in answer}


def image(path: Path, head: bytes = b"", size: int = 1 << 20) -> Path:
    with open(path, "wb") as handle:
        handle.write(head)
        handle.truncate(size)
    return path


def test_the_same_image_keeps_its_lun_and_goes_with_its_last_use(qemu: QmpLink, tmp_path: Path) -> None:
    disks = DiskAttacher(qemu)
    raw = image(tmp_path / "ext4.img")
    first = disks.attach(os.open(raw, os.O_RDWR))
    assert disks.attach(os.open(raw, os.O_RDWR)) == first  # an export while it runs
    vhdx = tmp_path / "box.vhdx"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vhdx", str(vhdx), "16M"], check=True)
    second = disks.attach(os.open(vhdx, os.O_RDONLY))  # read-only: no writable reopening
    assert second != first
    assert disks.attached() == {first: 2, second: 1}
    assert nodes(qemu) == {f"disk{first}", f"disk{second}"}
    disks.release(first)
    assert f"disk{first}" in nodes(qemu)
    disks.release(first)
    assert nodes(qemu) == {f"disk{second}"}
    assert FDSET_BASE + first not in fdsets(qemu)
    disks.release(second)
    disks.release(99)  # unknown: nothing
    assert nodes(qemu) == set() and disks.attached() == {}
    again = disks.attach(os.open(raw, os.O_RDWR))
    assert again not in (first, second)  # LUNs go round: one just unplugged is not reused at once


def test_what_is_not_a_disk_is_refused_and_nothing_is_left(qemu: QmpLink, tmp_path: Path) -> None:
    disks = DiskAttacher(qemu)
    fake = image(tmp_path / "fake.vhdx", b"not a vhdx")
    for opened in (os.open(fake, os.O_RDWR), os.open(tmp_path, os.O_RDONLY)):
        with pytest.raises(OSError) as refused:
            disks.attach(opened)
        assert refused.value.errno == errno.EINVAL
    broken = image(tmp_path / "broken.vhdx", b"vhdxfile")  # the signature, nothing else
    with pytest.raises(OSError) as failed:
        disks.attach(os.open(broken, os.O_RDWR))
    assert failed.value.errno == errno.EIO and "QEMU cannot attach" in str(failed.value)
    assert nodes(qemu) == set() and fdsets(qemu) == set() and disks.attached() == {}


def test_image_formats_come_from_the_name_and_must_match(tmp_path: Path) -> None:
    cases = {
        "disk.img": (b"vhdxfile", "raw"),  # never probed: a raw image is raw whatever it holds
        "disk.vhdx": (b"vhdxfile", "vhdx"),
        "disk.VHD": (b"conectix", "vpc"),  # a dynamic VHD's footer copy at the start
    }
    for name, (head, expected) in cases.items():
        fd = os.open(image(tmp_path / name, head), os.O_RDONLY)
        try:
            assert image_format(fd) == expected
        finally:
            os.close(fd)
    footer = tmp_path / "fixed.vhd"
    with open(footer, "wb") as handle:
        handle.truncate(1 << 20)
        handle.write(b"conectix")  # a fixed VHD: the footer at the end only
    fd = os.open(footer, os.O_RDONLY)
    try:
        assert image_format(fd) == "vpc"
    finally:
        os.close(fd)


def test_a_closed_qmp_link_fails_clearly(tmp_path: Path) -> None:
    ours, theirs = socket.socketpair()
    theirs.close()
    link = QmpLink(ours)
    with pytest.raises(QmpError):
        link.execute("query-status")
    with pytest.raises(QmpError, match="failed earlier"):
        link.execute("query-status")
