"""The qemu backend: a real VM with Debian's kernel, its initramfs, and the mini_init channel over a
virtio-serial port. One VM boots for the module (TCG where KVM does not work)."""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from qemu_guest_setup import ensure_kernel, ensure_qemu

from pywsl.api.session.wslconfig import parse_wslconfig
from pywsl.vm import CoreVm, VmConfig
from pywsl.vm.backends.qemu import QemuBackend, running_backend
from pywsl.vm.errors import VmError
from pywsl.vm.initramfs import build_initramfs, resolve_modules
from pywsl.vm.kernel import find_kernel

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def guest_kernel() -> tuple[Path, Path]:
    if ensure_qemu() is None:
        pytest.skip("qemu-system-x86 is not installed and apt-get cannot install it here")
    return ensure_kernel()


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("qemu-cache")
    previous = os.environ.get("PYWSL_CACHE_ROOT")
    os.environ["PYWSL_CACHE_ROOT"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("PYWSL_CACHE_ROOT", None)
    else:
        os.environ["PYWSL_CACHE_ROOT"] = previous


def _qemu_processes(runtime_dir: Path) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            if str(runtime_dir).encode() in cmdline and b"qemu" in cmdline:
                state = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()[0]
                if state != "Z":
                    found.append(int(entry))
    return found


@pytest.fixture(scope="module")
def runtime_dir() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="pywsl-qemu-"))
    yield folder
    backend = QemuBackend()
    backend.kill(folder)
    assert backend.wait_stopped(folder, 30)
    shutil.rmtree(folder)


@pytest.fixture(scope="module")
def booted(guest_kernel: tuple[Path, Path], cache: Path, runtime_dir: Path) -> Iterator[tuple[CoreVm, float]]:
    image, modules = guest_kernel
    config = VmConfig(
        owner_uid=0,
        owner_gid=0,
        runtime_dir=runtime_dir,
        uid_map=[(0, 0, 1)],
        gid_map=[(0, 0, 1)],
        networking_mode="none",
        hostname="pywsl-qemu-test",
        memory_bytes=512 << 20,
        processors=1,
        vm_idle_timeout_ms=120_000,
        instance_idle_timeout_ms=1000,
        backend="qemu",
        kernel=image,
        kernel_modules=modules,
        kernel_boot_timeout_ms=90_000,
    )
    started = time.monotonic()
    vm = CoreVm.boot(config)
    seconds = time.monotonic() - started
    yield vm, seconds
    # --shutdown (whatever order the tests ran in): nothing of the VM is left but its log
    vm.shutdown()
    assert _qemu_processes(runtime_dir) == []
    assert sorted(os.listdir(runtime_dir)) == ["mini_init.log"]
    assert CoreVm.attach(runtime_dir, "qemu") is None


def test_kernel_release_is_read_from_the_image(guest_kernel: tuple[Path, Path]) -> None:
    image, modules = guest_kernel
    kernel = find_kernel(image, modules)
    assert kernel.release == modules.name
    with pytest.raises(VmError, match="not an x86 Linux kernel"):
        find_kernel(modules / "modules.order", modules)


def test_modules_resolve_with_dependencies_first(tmp_path: Path) -> None:
    tree = tmp_path / "6.0-test"
    for name in ("a/virtio.ko", "a/virtio_ring.ko", "a/virtio_mmio.ko", "b/9p.ko"):
        (tree / "kernel" / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / "kernel" / name).write_bytes(b"")
    (tree / "modules.dep").write_text(
        "kernel/a/virtio_mmio.ko: kernel/a/virtio.ko kernel/a/virtio_ring.ko\n"
        "kernel/a/virtio.ko: kernel/a/virtio_ring.ko\nkernel/a/virtio_ring.ko:\nkernel/b/9p.ko:\n"
    )
    (tree / "modules.builtin").write_text("kernel/c/virtio_console.ko\nkernel/c/9pnet_virtio.ko\n")
    assert resolve_modules(tree) == [
        "kernel/a/virtio_ring.ko",
        "kernel/a/virtio.ko",
        "kernel/a/virtio_mmio.ko",
        "kernel/b/9p.ko",
    ]
    (tree / "modules.builtin").write_text("kernel/c/virtio_console.ko\n")
    with pytest.raises(VmError, match="9pnet_virtio is neither built into the kernel"):
        resolve_modules(tree)


def test_initramfs_is_built_once_and_holds_init_busybox_and_modules(
    guest_kernel: tuple[Path, Path], tmp_path: Path
) -> None:
    kernel = find_kernel(*guest_kernel)
    first = build_initramfs(kernel, tmp_path)
    assert build_initramfs(kernel, tmp_path) == first
    assert [item.name for item in tmp_path.iterdir()] == [first.name]
    listing = (
        subprocess.run(
            ["busybox", "cpio", "-t"],
            input=gzip.decompress(first.read_bytes()),
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split()
    )
    assert {"init", "busybox", "modules.list", "modules/virtio_console.ko", "modules/9p.ko"} <= set(listing)
    # modules from .modinfo (Debian's package has no modules.dep): virtio_ring before virtio_mmio
    order = resolve_modules(kernel.modules)
    names = [Path(item).name for item in order]
    assert names.index("virtio_ring.ko") < names.index("virtio_mmio.ko") < names.index("virtio_console.ko")


def test_pywsl_backend_key_selects_qemu_and_honours_kernel_keys() -> None:
    config = parse_wslconfig(
        "[pywsl]\nbackend = qemu\n[wsl2]\nkernel = /k/vmlinuz\nkernelCommandLine = quiet\n"
    )
    assert (config.backend, config.kernel) == ("qemu", Path("/k/vmlinuz"))
    assert config.kernel_command_line == "quiet"
    assert config.ignored == () and config.warnings == ()
    default = parse_wslconfig("[wsl2]\nkernel = /k/vmlinuz\n")
    assert default.backend == "namespaces" and len(default.ignored) == 1
    bad = parse_wslconfig("[pywsl]\nbackend = firecracker\n")
    assert bad.backend == "namespaces" and "Valid values: namespaces, qemu" in bad.warnings[0]


def test_the_guest_kernel_answers(booted: tuple[CoreVm, float], guest_kernel: tuple[Path, Path]) -> None:
    vm, seconds = booted
    print(f"qemu VM boot to the first mini_init channel: {seconds:.1f} s")
    assert vm.booted
    assert vm.kernel_release == guest_kernel[1].name
    assert vm.running_instances() == {}


def test_connections_are_separate_channels(booted: tuple[CoreVm, float], runtime_dir: Path) -> None:
    vm, _seconds = booted
    assert running_backend(runtime_dir) == "qemu"
    others = [CoreVm.attach(runtime_dir, "qemu") for _ in range(3)]
    try:
        for other in others:
            assert other is not None and other.kernel_release == vm.kernel_release
            assert other.running_instances() == {}
        assert vm.running_instances() == {}
    finally:
        for other in others:
            if other is not None:
                other.close()


def test_directories_cannot_cross_into_the_vm_yet(booted: tuple[CoreVm, float], tmp_path: Path) -> None:
    vm, _seconds = booted
    with pytest.raises(VmError, match="cannot hand a directory to the VM"):
        vm.launch_instance("busybox", tmp_path, default_uid=0, hostname="x")
    assert vm.running_instances() == {}
