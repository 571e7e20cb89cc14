"""Devices and limits inside real distributions: /dev/fuse mounts a FUSE file system, /dev/net/tun
creates an interface, /dev/kvm follows nestedVirtualization and the host's kvm group, nproc follows
processors, [automount] options restrict /mnt/host, lxcfs shows the VM's memory.

This host's nodes may be stricter than a stock Debian's (udev: /dev/fuse and /dev/net/tun 0666,
/dev/kvm 0660 root:kvm); the ``stock_nodes`` fixture gives them those modes for the test and puts
the host's own back after. A distribution's root is an unprivileged host id: it opens the nodes
through their mode and group only. Programs a busybox distribution lacks (a FUSE server, a tun
client) run as the distribution's root: a child of the test joins the distribution's user, mount
and network namespaces and becomes its root (uid 0 inside) before it touches a node.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import grp
import os
import shutil
import signal
import stat
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Unpack

import pytest
from conftest import BootedVm, VmConfigChanges, VmFactory, host_pid, run_in, wait_until
from run_folders import run_folder

from pywsl.guest import forking, syscalls
from pywsl.vm.idmap import with_host_groups

if TYPE_CHECKING:
    from pywsl.vm import CoreInstance, VmConfig

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="VMs need root")

CHILD_TIMEOUT = 20


@pytest.fixture(scope="module")
def stock_nodes() -> Iterator[int]:
    """Stock Debian modes for /dev/fuse, /dev/net/tun (0666) and /dev/kvm (0660 root:kvm); the kvm gid."""
    created_group = False
    try:
        kvm_gid = grp.getgrnam("kvm").gr_gid
    except KeyError:
        subprocess.run(["groupadd", "--system", "kvm"], check=True)
        created_group = True
        kvm_gid = grp.getgrnam("kvm").gr_gid
    saved: dict[str, os.stat_result] = {}
    try:
        stock = (("/dev/fuse", 0o666, 0), ("/dev/net/tun", 0o666, 0), ("/dev/kvm", 0o660, kvm_gid))
        for path, mode, gid in stock:
            info = os.stat(path)
            if not stat.S_ISCHR(info.st_mode):
                pytest.skip(f"{path} is not a character device here")
            saved[path] = info
            os.chown(path, 0, gid)
            os.chmod(path, mode)
        yield kvm_gid
    finally:
        for path, info in saved.items():
            os.chown(path, info.st_uid, info.st_gid)
            os.chmod(path, stat.S_IMODE(info.st_mode))
        if created_group:
            subprocess.run(["groupdel", "kvm"], check=True)


def _start(
    vm_factory: VmFactory,
    *,
    wsl_conf: str | None = None,
    config: VmConfig | None = None,
    **changes: Unpack[VmConfigChanges],
) -> tuple[BootedVm, CoreInstance]:
    booted = vm_factory.boot(config, **changes)
    rootfs = vm_factory.rootfs(f"rootfs{len(vm_factory.booted)}", vm=booted, wsl_conf=wsl_conf)
    instance = booted.vm.launch_instance("Dev", rootfs, default_uid=0, hostname="dev")
    return booted, instance


def _as_distribution_root(
    booted: BootedVm, instance: CoreInstance, namespaces: tuple[str, ...], action: Callable[[int], None]
) -> tuple[int, int]:
    """Fork a child that joins the distribution's namespaces as its root, then runs ``action(report_fd)``.

    Returns (pid, read end of the report pipe)."""
    init = host_pid(booted.pid, instance.pid)
    fds = {
        name: os.open(f"/proc/{init}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC) for name in ("user", *namespaces)
    }
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            signal.alarm(CHILD_TIMEOUT)
            os.close(read_end)
            syscalls.setns(fds["user"], syscalls.CLONE_NEWUSER)
            for name, flag in (("mnt", syscalls.CLONE_NEWNS), ("net", syscalls.CLONE_NEWNET)):
                if name in fds:
                    syscalls.setns(fds[name], flag)
            os.setgroups([])
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
            action(write_end)
            code = 0
        except BaseException as error:
            with contextlib.suppress(OSError):
                os.write(write_end, f"E{error!r}\n".encode())
        forking.exit_now(code)
    for fd in fds.values():
        os.close(fd)
    os.close(write_end)
    return pid, read_end


def _read_line(fd: int, timeout: float = CHILD_TIMEOUT) -> str:
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(b"\n"):
        import select

        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise TimeoutError("the helper did not report")
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").strip()


def _reap(pid: int, timeout: float = CHILD_TIMEOUT) -> int:
    assert wait_until(lambda: os.waitpid(pid, os.WNOHANG)[0] == pid, timeout), "helper did not exit"
    return 0


# -- a FUSE file system with one file, served over the distribution's /dev/fuse -----------------

HELLO = b"served over /dev/fuse\n"
_IN_HEADER = struct.Struct("<IIQQIIIHH")
_OUT_HEADER = struct.Struct("<IiQ")
_ATTR = struct.Struct("<QQQQQQIIIIIIIIII")
FUSE_LOOKUP, FUSE_FORGET, FUSE_GETATTR, FUSE_OPEN, FUSE_READ = 1, 2, 3, 14, 15
FUSE_RELEASE, FUSE_FLUSH, FUSE_INIT, FUSE_DESTROY, FUSE_BATCH_FORGET = 18, 25, 26, 38, 42


def _attr(inode: int) -> bytes:
    if inode == 1:
        return _ATTR.pack(1, 0, 0, 0, 0, 0, 0, 0, 0, stat.S_IFDIR | 0o755, 2, 0, 0, 0, 4096, 0)
    return _ATTR.pack(2, len(HELLO), 1, 0, 0, 0, 0, 0, 0, stat.S_IFREG | 0o444, 1, 0, 0, 0, 4096, 0)


def _fuse_server(report: int) -> None:
    device = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    os.makedirs("/tmp/fuse", exist_ok=True)
    syscalls.mount(
        "fuse",
        "/tmp/fuse",
        "fuse",
        syscalls.MS_NOSUID | syscalls.MS_NODEV,
        f"fd={device},rootmode=40000,user_id=0,group_id=0",
    )
    os.write(report, b"mounted\n")
    while True:
        try:
            request = os.read(device, 1 << 20)
        except OSError as error:
            if error.errno == errno.ENODEV:  # unmounted
                return
            raise
        length, opcode, unique, node, *_ = _IN_HEADER.unpack_from(request)
        body = request[_IN_HEADER.size : length]
        error_code, payload = 0, b""
        if opcode in (FUSE_FORGET, FUSE_BATCH_FORGET):
            continue
        if opcode == FUSE_INIT:
            readahead = struct.unpack_from("<IIII", body)[2]
            payload = struct.pack("<IIIIHHIIHHII", 7, 31, readahead, 0, 16, 12, 65536, 1, 0, 0, 0, 0)
            payload += bytes(24)
        elif opcode == FUSE_LOOKUP:
            if node == 1 and body.rstrip(b"\0") == b"hello":
                payload = struct.pack("<QQQQII", 2, 0, 1, 1, 0, 0) + _attr(2)
            else:
                error_code = -errno.ENOENT
        elif opcode == FUSE_GETATTR:
            payload = struct.pack("<QII", 1, 0, 0) + _attr(node)
        elif opcode == FUSE_OPEN:
            payload = struct.pack("<QIi", 0, 0, 0)
        elif opcode == FUSE_READ:
            _handle, offset, size = struct.unpack_from("<QQI", body)
            payload = HELLO[offset : offset + size]
        elif opcode in (FUSE_RELEASE, FUSE_FLUSH, FUSE_DESTROY):
            pass
        else:
            error_code = -errno.ENOSYS
        os.write(device, _OUT_HEADER.pack(_OUT_HEADER.size + len(payload), error_code, unique) + payload)
        if opcode == FUSE_DESTROY:
            return


def test_fuse_file_system_mounts_inside(vm_factory: VmFactory, stock_nodes: int) -> None:
    booted, instance = _start(vm_factory)
    listing = run_in(instance, "ls -l /dev/fuse /dev/net/tun")
    assert listing.code == 0, listing.stderr
    assert "10, 229" in listing.stdout and "10, 200" in listing.stdout
    pid, report = _as_distribution_root(booted, instance, ("mnt",), _fuse_server)
    try:
        assert _read_line(report) == "mounted"
        result = run_in(
            instance, "grep ' /tmp/fuse ' /proc/mounts && cat /tmp/fuse/hello && ls /tmp/fuse/none"
        )
        assert "fuse" in result.stdout and HELLO.decode() in result.stdout, result
        assert result.code != 0 and "No such file" in result.stderr  # answered ENOENT by the server
        unmounted = run_in(instance, "umount /tmp/fuse")
        assert unmounted.code == 0, unmounted.stderr
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _reap(pid)
        os.close(report)


def _tun_client(report: int) -> None:
    device = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    fcntl.ioctl(device, 0x400454CA, struct.pack("16sH22x", b"pywsltun0", 0x0001 | 0x1000))  # TUNSETIFF
    os.write(report, b"created\n")
    time.sleep(CHILD_TIMEOUT)  # holds the interface until the test kills this helper


def test_tun_interface_in_an_isolated_network(vm_factory: VmFactory, stock_nodes: int) -> None:
    booted, instance = _start(vm_factory, networking_mode="none")
    pid, report = _as_distribution_root(booted, instance, ("mnt", "net"), _tun_client)
    try:
        assert _read_line(report) == "created"
        result = run_in(instance, "cat /proc/net/dev; ip link show pywsltun0")
        assert result.code == 0 and "pywsltun0" in result.stdout, result
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _reap(pid)
        os.close(report)
    assert "pywsltun0" not in Path("/proc/net/dev").read_text()  # the host's network never saw it


OPEN_KVM = "exec 3<>/dev/kvm && echo opened"


def test_kvm_follows_nested_virtualization_and_the_kvm_group(vm_factory: VmFactory, stock_nodes: int) -> None:
    kvm_gid = stock_nodes
    config = vm_factory.config()
    member = vm_factory.config(gid_map=with_host_groups(config.gid_map, [kvm_gid]))
    _booted, instance = _start(vm_factory, config=member)
    joined = run_in(instance, f"echo hostkvm:x:{kvm_gid}:root >> /etc/group && stat -c '%a %g' /dev/kvm")
    assert joined.stdout.split() == ["660", str(kvm_gid)], joined
    assert run_in(instance, OPEN_KVM).stdout.strip() == "opened"
    run_in(instance, "echo 'tester:x:1234:1234::/:/bin/sh' >> /etc/passwd")
    outsider = run_in(instance, OPEN_KVM, user="tester")
    assert outsider.code != 0 and "denied" in outsider.stderr.lower()

    # The owner is not in kvm: the group stays unmapped and nobody inside opens the node.
    _booted, plain = _start(vm_factory)
    refused = run_in(plain, f"echo hostkvm:x:{kvm_gid}:root >> /etc/group; {OPEN_KVM}")
    assert refused.code != 0 and "denied" in refused.stderr.lower(), refused

    _booted, without = _start(vm_factory, nested_virtualization=False)
    absent = run_in(without, "test -e /dev/kvm || echo absent; test -c /dev/fuse && echo fuse")
    assert absent.stdout.split() == ["absent", "fuse"]


def test_processors_limit_what_nproc_shows(vm_factory: VmFactory) -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs at least two CPUs")
    _booted, instance = _start(vm_factory, processors=1)
    result = run_in(instance, "nproc; grep Cpus_allowed_list /proc/self/status")
    assert result.stdout.split()[0] == "1", result
    _booted, unlimited = _start(vm_factory)
    assert run_in(unlimited, "nproc").stdout.strip() == str(len(os.sched_getaffinity(0)))


@pytest.fixture
def shared_folder() -> Iterator[Path]:
    """A folder under /tmp that a distribution's root (an unprivileged host id) may enter."""
    folder = run_folder("automount-")
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


def test_automount_options_restrict_the_host_tree(vm_factory: VmFactory, shared_folder: Path) -> None:
    script = shared_folder / "script.sh"
    script.write_text("#!/bin/sh\necho ran\n")
    script.chmod(0o755)
    _booted, instance = _start(vm_factory, wsl_conf="[automount]\noptions = ro,noexec,metadata\n")
    inside = f"/mnt/host{script}"
    result = run_in(
        instance, f"grep ' /mnt/host ' /proc/mounts; {inside}; touch /mnt/host{shared_folder}/probe"
    )
    assert "ro," in result.stdout.split("\n")[0] and "noexec" in result.stdout.split("\n")[0], result
    assert "ran" not in result.stdout and "Permission denied" in result.stderr
    assert "Read-only file system" in result.stderr
    assert not (shared_folder / "probe").exists()
    _booted, plain = _start(vm_factory)
    assert run_in(plain, inside).stdout.strip() == "ran"


@pytest.fixture
def lxcfs_mount(tmp_path: Path) -> Iterator[str]:
    """lxcfs on a private mount point for one test (Debian's ``lxcfs`` package)."""
    program = shutil.which("lxcfs")
    if program is None:
        pytest.skip("lxcfs is not installed (apt-get install lxcfs)")
    point = Path("/run") / f"pywsl-test-lxcfs-{os.getpid()}"
    point.mkdir(mode=0o755)
    pid_file = tmp_path / "lxcfs.pid"
    process = subprocess.Popen(
        [program, "-f", "-p", str(pid_file), str(point)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_until(lambda: (point / "proc/meminfo").exists(), 10), "lxcfs did not start"
        yield str(point)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        with contextlib.suppress(OSError):
            syscalls.umount2(str(point), syscalls.MNT_DETACH)
        point.rmdir()


def test_memory_and_swap_limits_of_the_vm(vm_factory: VmFactory) -> None:
    memory, swap = 256 << 20, 128 << 20
    booted, instance = _start(vm_factory, memory_bytes=memory, swap_bytes=swap)
    groups = [group for group in booted.cgroups if (group / "memory.limit_in_bytes").exists()]
    if not groups or not (groups[0] / "memory.memsw.limit_in_bytes").exists():
        pytest.skip("the host has no v1 memory hierarchy with swap accounting")
    assert int((groups[0] / "memory.limit_in_bytes").read_text()) == memory
    assert int((groups[0] / "memory.memsw.limit_in_bytes").read_text()) == memory + swap  # memory plus swap
    assert run_in(instance, "echo up").stdout == "up\n"


def test_lxcfs_shows_the_vm_memory_limit(vm_factory: VmFactory, lxcfs_mount: str) -> None:
    from pywsl.api.session.user_vm import limits_note
    from pywsl.vm.lxcfs import find_lxcfs

    assert find_lxcfs() == lxcfs_mount
    assert limits_note() is None  # --status has no note about `free` while lxcfs runs
    limit = 512 << 20
    _booted, instance = _start(vm_factory, memory_bytes=limit, lxcfs=lxcfs_mount)
    result = run_in(instance, "grep MemTotal /proc/meminfo; free")
    total_kib = int(result.stdout.split()[1])
    assert total_kib == limit // 1024, result
    _booted, plain = _start(vm_factory, memory_bytes=limit)
    host_total = int(run_in(plain, "grep MemTotal /proc/meminfo").stdout.split()[1])
    assert host_total > limit // 1024  # without lxcfs: the host's figure
