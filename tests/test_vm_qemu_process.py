"""QEMU's process without a VM: the descriptors it gets, the ids it runs with, the swap disk."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from pywsl.vm.backends.qemu_process import (
    QemuIdentity,
    copy_to_memory,
    open_as_owner,
    spawn_qemu,
    swap_file,
)
from pywsl.vm.errors import VmError

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="changes ids")
NOBODY = QemuIdentity(65534, 65534)


def test_the_swap_disk_is_sparse_and_has_no_name(tmp_path: Path) -> None:
    fd = swap_file(tmp_path / "cache", 64 << 20)
    try:
        info = os.fstat(fd)
        assert (info.st_size, info.st_blocks, info.st_nlink) == (64 << 20, 0, 0)
        assert os.listdir(tmp_path / "cache") == []
    finally:
        os.close(fd)


def test_images_become_sealed_memory_files(tmp_path: Path) -> None:
    image = tmp_path / "image"
    image.write_bytes(b"kernel" * 100_000)
    memory = copy_to_memory(os.open(image, os.O_RDONLY), "kernel")
    try:
        assert Path(f"/proc/self/fd/{memory}").read_bytes() == image.read_bytes()
        with pytest.raises(PermissionError):
            os.write(memory, b"changed")
    finally:
        os.close(memory)


@needs_root
def test_a_kernel_is_opened_with_the_owners_rights() -> None:
    folder = Path(tempfile.mkdtemp(prefix="pywsl-kernel-"))  # a folder every user can reach
    try:
        os.chmod(folder, 0o755)
        readable, secret = folder / "readable", folder / "secret"
        for path, mode in ((readable, 0o644), (secret, 0o600)):
            path.write_bytes(b"image")
            os.chmod(path, mode)
        os.close(open_as_owner(str(readable), NOBODY))
        with pytest.raises(VmError, match="cannot be read by the VM's owner: Permission denied"):
            open_as_owner(str(secret), NOBODY)
        with pytest.raises(VmError, match="not a kernel or initramfs image"):
            open_as_owner(str(folder), NOBODY)
    finally:
        shutil.rmtree(folder)


@needs_root
def test_qemu_gets_its_descriptors_on_their_numbers_and_the_owners_ids(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    log = os.open(tmp_path / "log", os.O_WRONLY | os.O_CREAT, 0o600)
    script = (
        "import os\n"
        "status = dict(line.split(':', 1) for line in open('/proc/self/status'))\n"
        "nnp = status['NoNewPrivs'].strip()\n"
        "os.write(6, f'{os.getresuid()} {os.getresgid()} {os.getgroups()} {nnp}'.encode())\n"
        "print(sorted(int(fd) for fd in os.listdir('/proc/self/fd')))\n"
    )
    try:
        process = spawn_qemu([sys.executable, "-I", "-S", "-c", script], {6: write_end}, NOBODY, log)
        os.close(write_end)
        assert process.wait(30) == 0, (tmp_path / "log").read_text()
        answer = os.read(read_end, 4096).decode()
    finally:
        os.close(read_end)
        os.close(log)
    assert answer == "(65534, 65534, 65534) (65534, 65534, 65534) [] 1"
    seen = [int(fd) for fd in (tmp_path / "log").read_text().strip("[]\n").split(", ")]
    assert len(seen) == 5 and {0, 1, 2, 6} < set(seen)  # and the listing's own descriptor
