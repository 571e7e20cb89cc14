"""Disk images in distribution folders, handled with the user's rights (no VM needed)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pywsl.api.credentials import UserIdentity
from pywsl.api.errors import WslError
from pywsl.api.files.disk_files import (
    MIN_DISK_SIZE,
    NEW_DISK_NAME,
    DiskFiles,
    image_name_for_import,
    vhd_target_format,
)
from pywsl.api.files.rootfs_folder import RootfsFolders
from pywsl.vm.disk_image import DEFAULT_MOUNT_OPTIONS, DiskImage, disk_format

ME = UserIdentity.current()


@pytest.fixture
def disks(tmp_path: Path) -> DiskFiles:
    return DiskFiles(RootfsFolders(ME, lambda: [tmp_path]))


def test_a_new_image_is_sparse_or_allocated_and_never_replaces_one(disks: DiskFiles, tmp_path: Path) -> None:
    disks.create(tmp_path, NEW_DISK_NAME, 1 << 30)
    image = tmp_path / NEW_DISK_NAME
    info = image.stat()
    assert (info.st_size, info.st_mode & 0o777) == (1 << 30, 0o600)
    assert info.st_blocks == 0  # nothing allocated
    with pytest.raises(WslError) as taken:
        disks.create(tmp_path, NEW_DISK_NAME, 1 << 20)
    assert taken.value.code == "ERROR_FILE_EXISTS"
    disks.create(tmp_path, "small.img", 1)  # at least the smallest useful disk
    assert (tmp_path / "small.img").stat().st_size == MIN_DISK_SIZE
    disks.create(tmp_path, "fixed.img", MIN_DISK_SIZE, allocate=True)
    assert (tmp_path / "fixed.img").stat().st_blocks * 512 >= MIN_DISK_SIZE


def test_an_image_is_opened_without_links_and_removed(disks: DiskFiles, tmp_path: Path) -> None:
    disks.create(tmp_path, "ext4.img", MIN_DISK_SIZE)
    with disks.open(tmp_path, "ext4.img") as fd:
        assert os.fstat(fd).st_ino == (tmp_path / "ext4.img").stat().st_ino
    with disks.open(tmp_path, "ext4.img", writable=False) as fd, pytest.raises(OSError):
        os.write(fd, b"x")
    (tmp_path / "link.img").symlink_to(tmp_path / "ext4.img")
    with pytest.raises(WslError) as link, disks.open(tmp_path, "link.img"):
        pass
    assert link.value.code == "E_ACCESSDENIED" and "symbolic link" in link.value.message
    (tmp_path / "folder.img").mkdir()
    with pytest.raises(WslError) as folder, disks.open(tmp_path, "folder.img"):
        pass
    assert folder.value.code in ("E_ACCESSDENIED",)
    with pytest.raises(WslError) as missing, disks.open(tmp_path, "none.img"):
        pass
    assert missing.value.code == "ERROR_PATH_NOT_FOUND"
    assert disks.remove(tmp_path, "ext4.img") is True
    assert disks.remove(tmp_path, "ext4.img") is False
    assert disks.remove(tmp_path / "gone", "ext4.img") is False


def test_copy_in_keeps_holes_and_reads_pipes(disks: DiskFiles, tmp_path: Path) -> None:
    source = tmp_path / "source.vhdx"
    with open(source, "wb") as handle:
        handle.write(b"vhdxfile")
        handle.seek(8 << 20)
        handle.write(b"tail")
    target = tmp_path / "target"
    target.mkdir()
    fd = os.open(source, os.O_RDONLY)
    try:
        disks.copy_in(fd, target, "source.vhdx")
    finally:
        os.close(fd)
    copied = target / "source.vhdx"
    assert copied.read_bytes() == source.read_bytes()
    assert copied.stat().st_blocks * 512 < 1 << 20  # the hole stayed a hole
    read_end, write_end = os.pipe()
    os.write(write_end, b"piped bytes")
    os.close(write_end)
    try:
        disks.copy_in(read_end, target, "piped.vhdx")
    finally:
        os.close(read_end)
    assert (target / "piped.vhdx").read_bytes() == b"piped bytes"
    with pytest.raises(WslError) as again:
        disks.copy_in(os.open(os.devnull, os.O_RDONLY), target, "piped.vhdx")
    assert again.value.code == "ERROR_FILE_EXISTS"


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img (qemu-utils) is not installed")
@pytest.mark.parametrize(("target", "expected"), [("out.vhdx", "vhdx"), ("out.vhd", "vpc")])
def test_convert_writes_a_dynamic_vhdx_or_vhd(
    disks: DiskFiles, tmp_path: Path, target: str, expected: str
) -> None:
    disks.create(tmp_path, "ext4.img", MIN_DISK_SIZE)
    output = tmp_path / target
    with disks.open(tmp_path, "ext4.img", writable=False) as image, open(output, "wb") as handle:
        disks.convert(image, "raw", handle.fileno(), str(output))
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", str(output)], capture_output=True, check=True
        ).stdout
    )
    assert info["format"] == expected
    assert info["virtual-size"] >= MIN_DISK_SIZE
    with (
        pytest.raises(WslError) as failed,
        disks.open(tmp_path, "ext4.img") as image,
        open(os.devnull, "wb") as sink,
    ):
        disks.convert(image, "vhdx", sink.fileno(), None)  # a raw image read as VHDX
    assert failed.value.code == "WSL_E_EXPORT_FAILED"


def test_names_and_formats() -> None:
    assert image_name_for_import("/x/My Disk.VHDX") == "My Disk.VHDX"
    with pytest.raises(WslError):
        image_name_for_import("/x/disk.tar")
    assert vhd_target_format("a.vhd") == ("vpc", "subformat=dynamic")
    assert vhd_target_format(None) == vhd_target_format("a.vhdx") == ("vhdx", "subformat=dynamic")
    assert [disk_format(name) for name in ("a.VHDX", "b.vhd", "ext4.img", "x")] == [
        "vhdx",
        "vpc",
        "raw",
        "raw",
    ]
    disk = DiskImage(5)
    assert (disk.fs_type, disk.mount_options) == ("ext4", DEFAULT_MOUNT_OPTIONS)
    assert "fd=5" in repr(disk)
