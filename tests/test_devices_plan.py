"""Device, GPU, lxcfs and limit settings as data: discovery from a fake /dev and ldconfig listing,
the mount plan, the gid map of device groups, the .wslconfig and wsl.conf keys, boot arguments."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pywsl.api.session.wslconfig import parse_wslconfig
from pywsl.guest import devices, mounts, syscalls
from pywsl.guest.boot import parse_boot_arguments
from pywsl.guest.wsl_conf import parse_wsl_conf
from pywsl.vm import cgroups, gpu, idmap, lxcfs

LDCONFIG = """\
1234 libs found in cache `/etc/ld.so.cache'
\tlibnvidia-ml.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1
\tlibnvidia-ml.so.1 (libc6) => /usr/lib/i386-linux-gnu/libnvidia-ml.so.1
\tlibcuda.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcuda.so.1
\tlibcuda.so (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcuda.so
\tlibcudart.so.12 (libc6,x86-64) => /usr/local/cuda/lib64/libcudart.so.12
\tlibnvidia-ptxjitcompiler.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libnvidia-ptxjitcompiler.so.1
\tlibc.so.6 (libc6,x86-64, OS ABI: Linux 3.2.0) => /lib/x86_64-linux-gnu/libc.so.6
\tlibcuda.so.1 (libc6,x86-64) => /opt/other/libcuda.so.1
"""


def _char_device(path: Path) -> None:
    """A character device stand-in for the discovery code: a bind of /dev/null (never mknod)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    syscalls.mount("/dev/null", str(path), None, syscalls.MS_BIND)


@pytest.fixture
def fake_dev(tmp_path: Path):  # type: ignore[no-untyped-def]
    root = tmp_path / "dev"
    made: list[Path] = []

    def add(name: str) -> None:
        _char_device(root / name)
        made.append(root / name)

    root.mkdir()
    try:
        yield root, add
    finally:
        for path in reversed(made):
            syscalls.umount2(str(path), syscalls.MNT_DETACH)


def test_ldconfig_listing_gives_the_native_nvidia_libraries() -> None:
    found = gpu.parse_ldconfig(LDCONFIG, "x86_64")
    assert found == (
        ("libcuda.so", "/usr/lib/x86_64-linux-gnu/libcuda.so"),
        ("libcuda.so.1", "/usr/lib/x86_64-linux-gnu/libcuda.so.1"),
        ("libnvidia-ml.so.1", "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1"),
        ("libnvidia-ptxjitcompiler.so.1", "/usr/lib/x86_64-linux-gnu/libnvidia-ptxjitcompiler.so.1"),
    )
    assert gpu.parse_ldconfig(LDCONFIG, "aarch64") == ()
    assert gpu.parse_ldconfig("garbage\n\tlibcuda.so.1 (libc6,x86-64) => relative\n", "x86_64") == ()


def test_no_gpu_means_no_discovery_and_no_plan(tmp_path: Path) -> None:
    (tmp_path / "dev").mkdir()
    assert gpu.discover_gpu_libraries(tmp_path / "dev", listing=LDCONFIG) == ()
    settings = devices.DeviceSettings(gpu_libraries=(("libcuda.so.1", "/x"),))
    assert not devices.gpu_active(settings, True, str(tmp_path / "dev"))
    assert devices.distribution_devices(settings, True, str(tmp_path / "dev")) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="the fake /dev needs bind mounts")
def test_gpu_nodes_and_library_plan_from_a_fake_dev(fake_dev, tmp_path: Path) -> None:  # type: ignore

    root, add = fake_dev
    for name in (
        "nvidiactl",
        "nvidia0",
        "nvidia-uvm",
        "nvidia-uvm-tools",
        "nvidia-modeset",
        "dri/card0",
        "dri/renderD128",
        "nvidia-caps/nvidia-cap1",
        "fuse",
        "net/tun",
        "kvm",
    ):
        add(name)
    (root / "nvidia-notanode").write_text("")
    (root / "nvidiafoo").mkdir()
    assert devices.gpu_device_nodes(str(root)) == [
        "nvidia-modeset",
        "nvidia-uvm",
        "nvidia-uvm-tools",
        "nvidia0",
        "nvidiactl",
        "dri/card0",
        "dri/renderD128",
        "nvidia-caps/nvidia-cap1",
    ]
    assert gpu.host_has_gpu(root)
    library = tmp_path / "libcuda.so.1"
    library.write_text("")
    library.chmod(0o644)
    listing = f"\tlibcuda.so.1 (libc6,x86-64) => {library}\n\tlibnvidia-ml.so.1 (libc6,x86-64) => /missing\n"
    smi_folder = tmp_path / "bin"
    smi_folder.mkdir()
    (smi_folder / "nvidia-smi").write_text("")
    found = gpu.discover_gpu_libraries(root, listing=listing, program_folders=(str(smi_folder),))
    assert found == (("libcuda.so.1", str(library)), ("nvidia-smi", str(smi_folder / "nvidia-smi")))
    (smi_folder / "nvidia-smi").chmod(0o666)  # writable by anyone: never shared
    assert gpu.find_programs((str(smi_folder),)) == ()

    settings = devices.DeviceSettings(gpu_libraries=found)
    steps = devices.distribution_devices(settings, True, str(root))
    binds = [step.target for step in steps if isinstance(step, mounts.Mount) and step.source == step.target]
    assert binds[:3] == ["/dev/fuse", "/dev/net/tun", "/dev/kvm"]
    assert "/dev/nvidiactl" in binds and "/dev/dri/renderD128" in binds
    library_steps = steps[len(binds) :]
    assert library_steps[0] == mounts.Mount(
        devices.GPU_LIBRARY_DIR,
        "tmpfs",
        "tmpfs",
        "mode=755,size=64k,nr_inodes=1024",
        syscalls.MS_NOSUID | syscalls.MS_NODEV,
    )
    assert library_steps[1] == mounts.Mount(
        "/usr/lib/wsl/lib/libcuda.so.1", source=str(library), file=True, read_only=True
    )
    assert library_steps[-1] == mounts.Restrict("/usr/lib/wsl/lib", syscalls.MOUNT_ATTR_RDONLY)
    # [gpu] enabled=false in the distribution, or gpuSupport=false for the VM: no GPU at all.
    for plan in (
        devices.distribution_devices(settings, False, str(root)),
        devices.distribution_devices(
            devices.DeviceSettings(gpu_support=False, gpu_libraries=found), True, str(root)
        ),
    ):
        assert [step.target for step in plan] == ["/dev/fuse", "/dev/net/tun", "/dev/kvm"]
    plan = devices.distribution_devices(devices.DeviceSettings(nested_virtualization=False), False, str(root))
    assert [step.target for step in plan] == ["/dev/fuse", "/dev/net/tun"]


def test_library_names_cannot_leave_the_folder() -> None:
    plan = devices.gpu_library_plan([("../x", "/a"), ("ok.so", "/b"), ("ok.so", "/c"), ("a/b", "/d")])
    targets = [step.target for step in plan]
    assert targets == ["/usr/lib/wsl/lib", "/usr/lib/wsl/lib/ok.so", "/usr/lib/wsl/lib"]
    with pytest.raises(ValueError):
        devices.parse_gpu_library("../x=/a")
    with pytest.raises(ValueError):
        devices.parse_gpu_library("x=relative")


def test_launch_path_appends_the_library_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    assert devices.launch_path("/usr/bin") == "/usr/bin"
    monkeypatch.setattr(devices, "_append_library_path", True)
    assert devices.launch_path("/usr/bin:/bin") == "/usr/bin:/bin:/usr/lib/wsl/lib"
    assert devices.launch_path("/usr/lib/wsl/lib:/bin") == "/usr/lib/wsl/lib:/bin"


def test_device_groups_keep_their_number_inside() -> None:
    gid_map = [(0, 1 << 30, 1000), (1000, 4343, 1), (1001, (1 << 30) + 1001, 64535)]
    mapped = idmap.with_host_groups(gid_map, [993, 44, 4343, 0, 65534, 70000])
    assert mapped == [
        (0, 1 << 30, 44),
        (44, 44, 1),
        (45, (1 << 30) + 45, 948),
        (993, 993, 1),
        (994, (1 << 30) + 994, 6),
        (1000, 4343, 1),
        (1001, (1 << 30) + 1001, 64535),
    ]
    assert sum(count for _, _, count in mapped) == 65536
    assert idmap.host_id(mapped, 993) == 993 and idmap.host_id(mapped, 994) == (1 << 30) + 994
    assert idmap.with_host_groups(gid_map, []) == gid_map


def test_device_groups_of_an_owner() -> None:
    import grp

    video = grp.getgrnam("video").gr_gid
    assert video in idmap.owner_device_groups(0, 0)  # root may use every node already
    assert idmap.owner_device_groups(65533, 65533) == []  # no such user, not a member of anything
    assert idmap.owner_device_groups(65533, video) == [video]  # a member through its primary group


def test_automount_options_and_gpu_keys_of_wsl_conf() -> None:
    attributes, ignored = mounts.automount_attributes("ro, noexec,metadata,uid=1000,rw,nodev,nosuid")
    assert attributes == (
        syscalls.MOUNT_ATTR_RDONLY
        | syscalls.MOUNT_ATTR_NOEXEC
        | syscalls.MOUNT_ATTR_NODEV
        | syscalls.MOUNT_ATTR_NOSUID
    )
    assert ignored == ["metadata", "uid=1000"]
    conf = parse_wsl_conf(
        "[automount]\noptions = ro,noexec\nldconfig = false\n[gpu]\nenabled = false\nappendLibPath = false\n"
    )
    assert conf.warnings == []
    assert conf.automount_attributes == syscalls.MOUNT_ATTR_RDONLY | syscalls.MOUNT_ATTR_NOEXEC
    assert not (conf.gpu_enabled or conf.gpu_append_lib_path or conf.automount_ldconfig)
    default = parse_wsl_conf("")
    assert default.gpu_enabled and default.gpu_append_lib_path and default.automount_ldconfig
    assert default.automount_attributes == 0
    plan = mounts.host_tree_plan("/mnt/host", syscalls.MOUNT_ATTR_RDONLY)
    assert plan[1] == mounts.Restrict("/mnt/host", syscalls.MOUNT_ATTR_RDONLY)
    assert not any(isinstance(step, mounts.Restrict) for step in mounts.host_tree_plan("/mnt/host"))


def test_wslconfig_device_and_limit_keys() -> None:
    text = "[wsl2]\nnestedVirtualization=false\ngpuSupport=false\nswap=1GB\nprocessors=1\n"
    config = parse_wslconfig(text, host_memory=8 << 30, host_cpus=4)
    assert (config.nested_virtualization, config.gpu_support, config.swap_bytes) == (False, False, 1 << 30)
    assert config.ignored == () and config.warnings == ()
    default = parse_wslconfig("", host_memory=8 << 30, host_cpus=4)
    assert (default.nested_virtualization, default.gpu_support, default.swap_bytes) == (True, True, None)


def test_boot_arguments_carry_the_device_settings() -> None:
    from pywsl.vm import VmConfig
    from pywsl.vm.backends.namespaces import boot_arguments

    config = VmConfig(
        owner_uid=0,
        owner_gid=0,
        runtime_dir=Path("/run/x"),
        uid_map=[(0, 1 << 30, 65536)],
        gid_map=[(0, 1 << 30, 65536)],
        networking_mode="none",
        hostname="h",
        memory_bytes=None,
        processors=2,
        vm_idle_timeout_ms=1,
        instance_idle_timeout_ms=1,
        nested_virtualization=False,
        gpu_libraries=(("libcuda.so.1", "/l/libcuda.so.1"),),
        lxcfs="/var/lib/lxcfs",
    )
    boot = parse_boot_arguments(boot_arguments(config, 3, ()))
    assert boot.processors == 2
    assert boot.devices == devices.DeviceSettings(
        False, True, (("libcuda.so.1", "/l/libcuda.so.1"),), "/var/lib/lxcfs"
    )
    plain = parse_boot_arguments(
        boot_arguments(
            VmConfig(
                **{
                    **config.__dict__,
                    "processors": None,
                    "nested_virtualization": True,
                    "gpu_support": False,
                    "lxcfs": None,
                }
            ),
            3,
            (),
        )
    )
    assert plain.processors is None and plain.devices == devices.DeviceSettings(True, False, (), None)


def test_lxcfs_is_only_roots() -> None:
    line = "90 23 0:50 / {point} rw,relatime - fuse.lxcfs lxcfs rw,user_id={uid},group_id=0,allow_other\n"
    assert lxcfs.find_lxcfs(line.format(point="/var/lib/lxcfs", uid=0)) == "/var/lib/lxcfs"
    assert lxcfs.find_lxcfs(line.format(point="/home/eve/fake", uid=1000)) is None
    assert lxcfs.find_lxcfs("22 27 0:21 / /proc rw - proc proc rw\n") is None
    assert devices.lxcfs_plan(None) == []


def test_cpu_lists() -> None:
    assert cgroups.parse_cpu_list("0-3,6,8-9\n") == [0, 1, 2, 3, 6, 8, 9]
    assert cgroups.parse_cpu_list("") == []
