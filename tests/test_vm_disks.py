"""Distributions on ext4 disk images in the qemu VM, and WSL's VHD verbs.

One VM for the module (TCG). A busybox archive imported on the qemu backend lands on a sparse raw
image (``ext4.img``) that the VM formats and fills; a VHDX and a VHD holding an ext4 file system
(built with ``mkfs.ext4 -d`` and ``qemu-img convert``) import with ``--vhd`` and in place; an
export with ``--vhd`` is a VHDX that imports again identically; damaged images fail cleanly and
leave nothing registered; ``--manage --resize`` grows and shrinks the file system.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from busybox_images import BUSYBOX, busybox_archive
from qemu_guest_setup import ensure_kernel, ensure_qemu
from run_folders import run_folder

import pywsl as pywsl_package

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the qemu VM's file servers need root"),
    pytest.mark.skipif(not BUSYBOX.is_file(), reason="needs a static /bin/busybox (busybox-static)"),
]
TOOLS = ("mkfs.ext4", "qemu-img")


class Pywsl:
    def __init__(self, env: dict[str, str], workspace: Path) -> None:
        self.env = env
        self.workspace = workspace

    def __call__(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pywsl.cli.main", *args],
            env=self.env,
            cwd="/",
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )

    def ok(self, *args: str, timeout: float = 300) -> str:
        done = self(*args, timeout=timeout)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout

    def names(self) -> list[str]:
        done = self("-l", "-q")
        return [line.strip() for line in done.stdout.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def pywsl() -> Iterator[Pywsl]:
    if ensure_qemu() is None:
        pytest.skip("qemu-system-x86 is not installed and apt-get cannot install it here")
    for tool in TOOLS:
        found = shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin")
        assert found, f"{tool} is missing (e2fsprogs, qemu-utils)"
    image, modules = ensure_kernel()
    workspace = run_folder("disks-")
    config = workspace / "config"
    for folder in (workspace / "home", config / "pywsl", workspace / "run"):
        folder.mkdir(parents=True)
    (config / "pywsl" / "wslconfig").write_text(
        "[general]\ninstanceIdleTimeout=120000\n"
        f"[wsl2]\nvmIdleTimeout=300000\nkernel={image}\nkernelModules={modules}\n"
        "kernelBootTimeout=150000\nmemory=512MB\nprocessors=1\ndefaultVhdSize=256MB\n"
        "[pywsl]\nbackend=qemu\n"
    )
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(workspace / "home"),
        "XDG_DATA_HOME": str(workspace / "data"),
        "XDG_CONFIG_HOME": str(config),
        "PYWSL_RUNTIME_ROOT": str(workspace / "run"),
        "PYWSL_CACHE_ROOT": str(workspace / "cache"),
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(Path(pywsl_package.__file__).resolve().parent.parent),
    }
    command = Pywsl(env, workspace)
    try:
        yield command
    finally:
        done = command("--shutdown")
        if done.returncode != 0:
            command("--shutdown", "--force")
        shutil.rmtree(workspace, ignore_errors=True)
        assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def ext4_images(pywsl: Pywsl) -> dict[str, Path]:
    """An ext4 file system made from a busybox root (``mkfs.ext4 -d``): raw, VHDX and VHD."""
    root = pywsl.workspace / "root"
    archive = busybox_archive(pywsl.workspace / "box.tar", usr_bin_links=True)
    root.mkdir()
    subprocess.run(["tar", "-xf", str(archive), "-C", str(root)], check=True)
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc" / "os-release").write_text('ID=diskbox\nVERSION_ID="1.0"\n')
    raw = pywsl.workspace / "box.img"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(root), str(raw), "64M"], check=True)
    images = {"raw": raw}
    for name, fmt in (("vhdx", "vhdx"), ("vhd", "vpc")):
        target = pywsl.workspace / f"box.{name}"
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", fmt, str(raw), str(target)], check=True)
        images[name] = target
    return images


def _info(path: Path) -> dict[str, object]:
    done = subprocess.run(["qemu-img", "info", "--output=json", str(path)], capture_output=True, check=True)
    result = json.loads(done.stdout)
    assert isinstance(result, dict)
    return result


def test_an_archive_imports_onto_a_sparse_disk_that_the_vm_mounts(pywsl: Pywsl) -> None:
    archive = busybox_archive(pywsl.workspace / "box2.tar", usr_bin_links=True)
    folder = pywsl.workspace / "onDisk"
    pywsl.ok("--import", "OnDisk", str(folder), str(archive))
    image = folder / "ext4.img"
    assert image.is_file() and not (folder / "rootfs").exists()
    assert image.stat().st_size == 256 * 1024 * 1024
    assert image.stat().st_blocks * 512 < image.stat().st_size  # sparse
    root = [
        line for line in pywsl.ok("-d", "OnDisk", "--", "cat", "/proc/mounts").splitlines() if " / " in line
    ]
    assert root and root[-1].split()[2] == "ext4"
    pywsl.ok("-d", "OnDisk", "-e", "sh", "-c", "echo kept > /kept")
    pywsl.ok("--terminate", "OnDisk")
    assert pywsl.ok("-d", "OnDisk", "--", "cat", "/kept").strip() == "kept"
    listing = subprocess.run(
        ["tar", "-tf", "-"], input=pywsl_export(pywsl, "OnDisk"), capture_output=True, check=True
    ).stdout.decode()
    assert "./kept" in listing.split()
    pywsl.ok("--unregister", "OnDisk")
    assert not image.exists()


def pywsl_export(pywsl: Pywsl, name: str) -> bytes:
    target = pywsl.workspace / f"{name}.tar"
    pywsl.ok("--export", name, str(target))
    data = target.read_bytes()
    target.unlink()
    return data


@pytest.mark.parametrize("kind", ["vhdx", "vhd"])
def test_a_vhd_imports_runs_and_exports_as_vhdx_that_imports_again(
    pywsl: Pywsl, ext4_images: dict[str, Path], kind: str
) -> None:
    name = f"From{kind.upper()}"
    folder = pywsl.workspace / name
    pywsl.ok("--import", name, str(folder), str(ext4_images[kind]), "--vhd")
    assert (folder / f"box.{kind}").is_file()
    assert "ID=diskbox" in pywsl.ok("-d", name, "--", "cat", "/etc/os-release")
    exported = pywsl.workspace / f"{name}-out.vhdx"
    pywsl.ok("--export", name, str(exported), "--vhd")
    assert _info(exported)["format"] == "vhdx"
    again = f"{name}Again"
    pywsl.ok("--import", again, str(pywsl.workspace / again), str(exported), "--vhd")
    first = pywsl.ok(
        "-d",
        name,
        "-e",
        "sh",
        "-c",
        "cd / && find . -xdev | sort && find . -xdev -type f | sort | xargs md5sum",
    )
    second = pywsl.ok(
        "-d",
        again,
        "-e",
        "sh",
        "-c",
        "cd / && find . -xdev | sort && find . -xdev -type f | sort | xargs md5sum",
    )
    assert first == second
    for distro in (name, again):
        pywsl.ok("--unregister", distro)


def test_import_in_place_uses_the_file_where_it_is(pywsl: Pywsl, ext4_images: dict[str, Path]) -> None:
    image = pywsl.workspace / "inplace" / "disk.vhdx"
    image.parent.mkdir()
    shutil.copyfile(ext4_images["vhdx"], image)
    pywsl.ok("--import-in-place", "InPlace", str(image))
    assert "ID=diskbox" in pywsl.ok("-d", "InPlace", "--", "cat", "/etc/os-release")
    assert "InPlace" in pywsl.names()
    pywsl.ok("--unregister", "InPlace")


@pytest.mark.parametrize("damage", ["truncated", "not-ext4"])
def test_a_damaged_image_fails_cleanly_and_registers_nothing(
    pywsl: Pywsl, ext4_images: dict[str, Path], damage: str
) -> None:
    image = pywsl.workspace / f"{damage}.vhdx"
    if damage == "truncated":
        data = ext4_images["vhdx"].read_bytes()
        image.write_bytes(data[: len(data) // 3])
    else:
        raw = pywsl.workspace / f"{damage}.img"
        with open(raw, "wb") as handle:
            handle.truncate(32 * 1024 * 1024)
            handle.write(os.urandom(4096))
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vhdx", str(raw), str(image)], check=True)
    before = pywsl.names()
    target = str(pywsl.workspace / f"dam-{damage}")
    done = pywsl("--import", "Damaged", target, str(image), "--vhd", timeout=300)
    assert done.returncode != 0
    assert pywsl.names() == before
    assert not (pywsl.workspace / f"dam-{damage}" / image.name).exists()
    # the VM still works
    archive = busybox_archive(pywsl.workspace / "box3.tar", usr_bin_links=True)
    pywsl.ok("--import", "After", str(pywsl.workspace / f"after-{damage}"), str(archive))
    assert pywsl.ok("-d", "After", "--", "echo", "fine").strip() == "fine"
    pywsl.ok("--unregister", "After")


def test_resize_grows_and_shrinks_the_file_system(pywsl: Pywsl) -> None:
    archive = busybox_archive(pywsl.workspace / "box4.tar", usr_bin_links=True)
    folder = pywsl.workspace / "sized"
    pywsl.ok("--import", "Sized", str(folder), str(archive))

    def size_kib() -> int:
        line = pywsl.ok("-d", "Sized", "--", "df", "-k", "/").splitlines()[-1]
        return int(line.split()[1])

    before = size_kib()
    pywsl.ok("--terminate", "Sized")
    pywsl.ok("--manage", "Sized", "--resize", "512MB")
    assert (folder / "ext4.img").stat().st_size == 512 * 1024 * 1024
    grown = size_kib()
    assert grown > before * 1.5
    pywsl.ok("--terminate", "Sized")
    pywsl.ok("--manage", "Sized", "--resize", "128MB")
    assert (folder / "ext4.img").stat().st_size == 128 * 1024 * 1024
    assert size_kib() < grown / 3
    pywsl.ok("--terminate", "Sized")
    assert pywsl("--manage", "Sized", "--resize", "1MB").returncode != 0  # below what the files use
    assert pywsl.ok("-d", "Sized", "--", "echo", "intact").strip() == "intact"

    def root_options() -> list[str]:
        mounts = pywsl.ok("-d", "Sized", "--", "cat", "/proc/mounts").splitlines()
        return [line for line in mounts if " / " in line][-1].split()[3].split(",")

    assert "discard" not in root_options()  # WSL's default: not sparse
    assert pywsl("--manage", "Sized", "--set-sparse", "true").returncode != 0  # needs --allow-unsafe
    pywsl.ok("--manage", "Sized", "--set-sparse", "true", "--allow-unsafe")
    assert "discard" in root_options()  # freed blocks go back to the host
    pywsl.ok("--manage", "Sized", "--set-sparse", "false")
    assert "discard" not in root_options()
    pywsl.ok("--unregister", "Sized")


def test_mount_a_vhd_where_every_distribution_sees_it_then_unmount(
    pywsl: Pywsl, ext4_images: dict[str, Path]
) -> None:
    archive = busybox_archive(pywsl.workspace / "box5.tar", usr_bin_links=True)
    pywsl.ok("--import", "Viewer", str(pywsl.workspace / "viewer"), str(archive))
    pywsl.ok("-d", "Viewer", "--", "true")  # running before the mount
    data = pywsl.workspace / "data.vhdx"
    shutil.copyfile(ext4_images["vhdx"], data)
    out = pywsl.ok("--mount", str(data), "--vhd", "--name", "data")
    assert "/mnt/wsl/data" in out
    assert "ID=diskbox" in pywsl.ok("-d", "Viewer", "--", "cat", "/mnt/wsl/data/etc/os-release")
    pywsl.ok("--import", "Later", str(pywsl.workspace / "later"), str(archive))
    assert "ID=diskbox" in pywsl.ok("-d", "Later", "--", "cat", "/mnt/wsl/data/etc/os-release")
    pywsl.ok("--shutdown")  # WSL attaches the user's disks again when the VM starts anew
    assert "ID=diskbox" in pywsl.ok("-d", "Later", "--", "cat", "/mnt/wsl/data/etc/os-release")
    taken = pywsl("--mount", str(data), "--vhd", "--name", "data")
    assert taken.returncode != 0
    pywsl.ok("--unmount", str(data))
    assert pywsl("-d", "Viewer", "--", "ls", "/mnt/wsl/data").returncode != 0
    assert pywsl("--unmount", str(data)).returncode != 0  # no longer attached
    pywsl.ok("--mount", str(data), "--vhd", "--bare")
    assert pywsl("--mount", str(data), "--vhd", "--bare").returncode != 0  # attached already
    pywsl.ok("--unmount")
    for distro in ("Viewer", "Later"):
        pywsl.ok("--unregister", distro)
