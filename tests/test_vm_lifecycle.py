"""What a stopped or killed VM leaves (nothing), the boot and start timeouts, directories as descriptors."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest
from conftest import VmFactory, mount_points, pid_alive, run_in, vm_processes, wait_until

from pywsl.guest import path_folder_store
from pywsl.vm import CoreVm, VmConfig, VmError
from pywsl.vm.backends import namespaces_prestart
from pywsl.vm.backends.namespaces import NamespacesBackend, boot_arguments, cgroup_name, is_cgroup_of
from pywsl.vm.cgroups import VmCgroup, find_groups, mounted_hierarchies, own_cgroup
from pywsl.wire import schema
from pywsl.wire.channel import MessageChannel

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the namespaces backend needs root")


def groups_of(runtime_dir: Path) -> list[Path]:
    """Every cgroup named for this runtime folder, in any hierarchy and under any parent."""
    return find_groups(lambda name: is_cgroup_of(runtime_dir, name))


def leftover_files(runtime_dir: Path) -> list[str]:
    """What a VM left in its runtime folder, but its log and the host PATH folders it keeps for
    the next start (`path_folder_store`)."""
    kept = {"mini_init.log", path_folder_store.STORE_NAME}
    return sorted(name for name in os.listdir(runtime_dir) if name not in kept)


@needs_root
def test_forced_shutdown_leaves_no_cgroup(vm_factory: VmFactory) -> None:
    before = mount_points()
    booted = vm_factory.boot(memory_bytes=256 << 20)
    instance = booted.vm.launch_instance("Box", vm_factory.rootfs(vm=booted), default_uid=0, hostname="box")
    run_in(instance, "sleep 60 >/dev/null 2>&1 &")
    processes = vm_processes(booted.pid) | {booted.monitor}
    assert groups_of(booted.runtime_dir)
    booted.vm.shutdown(force=True)
    assert not any(pid_alive(pid) for pid in processes)
    assert groups_of(booted.runtime_dir) == []
    assert leftover_files(booted.runtime_dir) == []
    assert mount_points() == before


@needs_root
def test_a_killed_pid1_is_cleaned_up_by_its_monitor(vm_factory: VmFactory) -> None:
    booted = vm_factory.boot()
    booted.vm.launch_instance("Box", vm_factory.rootfs(vm=booted), default_uid=0, hostname="box").close()
    processes = vm_processes(booted.pid) | {booted.monitor}
    os.kill(booted.pid, signal.SIGKILL)
    assert wait_until(lambda: not any(pid_alive(pid) for pid in processes), timeout=10)
    assert leftover_files(booted.runtime_dir) == []
    assert groups_of(booted.runtime_dir) == []


@needs_root
def test_a_killed_monitor_stops_the_vm_and_shutdown_removes_the_rest(vm_factory: VmFactory) -> None:
    booted = vm_factory.boot()
    instance = booted.vm.launch_instance("Box", vm_factory.rootfs(vm=booted), default_uid=0, hostname="box")
    processes = vm_processes(booted.pid)
    os.kill(booted.monitor, signal.SIGKILL)
    # Without its monitor the VM stops (nobody could clone trees for it or clean up after it).
    assert wait_until(lambda: not any(pid_alive(pid) for pid in processes), timeout=10)
    assert leftover_files(booted.runtime_dir) == ["mini_init.pid", "mini_init.sock"]
    assert groups_of(booted.runtime_dir)
    instance.close()
    booted.vm.shutdown(force=True)
    assert leftover_files(booted.runtime_dir) == []
    assert groups_of(booted.runtime_dir) == []


@needs_root
def test_attach_removes_what_a_killed_vm_left(vm_factory: VmFactory) -> None:
    booted = vm_factory.boot()
    for pid in (booted.monitor, booted.pid):
        os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: not pid_alive(booted.pid) and not pid_alive(booted.monitor))
    assert leftover_files(booted.runtime_dir) == ["mini_init.pid", "mini_init.sock"]
    assert CoreVm.attach(booted.runtime_dir) is None
    assert leftover_files(booted.runtime_dir) == []
    assert groups_of(booted.runtime_dir) == []


def _stale_group_elsewhere(name: str) -> tuple[Path, Path] | None:
    """An empty group called ``name`` under another parent, as a VM booted from elsewhere leaves it."""
    v2 = next((item for item in mounted_hierarchies() if item.version == 2), None)
    if v2 is None:
        return None
    parent = v2.mount_point / own_cgroup(2, None).lstrip("/") / f"pywsl-test-{uuid.uuid4().hex[:8]}"
    try:
        parent.mkdir()
    except OSError:
        return None
    (parent / name).mkdir()
    return parent, parent / name


@needs_root
def test_a_prestarted_boot_removes_stale_groups_while_it_boots(
    vm_factory: VmFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A cold launch's boot removes what a killed VM left elsewhere after the hand-over, sparing
    the groups the interpreter started ahead is in (the new VM's, busy: no warning about them)."""
    config = vm_factory.config()
    stale = _stale_group_elsewhere(cgroup_name(config))
    if stale is None:
        pytest.skip("no cgroup v2 hierarchy to make a group in")
    try:
        namespaces_prestart.begin(str(config.runtime_dir))
        with caplog.at_level(logging.WARNING):
            booted = vm_factory.boot(config)
        assert namespaces_prestart._pending is None  # the boot took the prestarted interpreter
        assert not stale[1].exists()
        own = groups_of(booted.runtime_dir)  # the new VM's, each with the VM's processes in it
        assert own and all(VmCgroup((group,)).process_ids() & vm_processes(booted.pid) for group in own)
        assert "left in place" not in caplog.text
    finally:
        for path in (stale[1], stale[0]):
            if path.exists():
                path.rmdir()


@needs_root
def test_the_next_boot_cleans_up_after_a_killed_vm(vm_factory: VmFactory) -> None:
    config = vm_factory.config()
    booted = vm_factory.boot(config)
    rootfs = vm_factory.rootfs(vm=booted)
    booted.vm.launch_instance("Box", rootfs, default_uid=0, hostname="box").close()
    processes = vm_processes(booted.pid)
    for pid in (booted.monitor, booted.pid):
        os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: not any(pid_alive(pid) for pid in processes | {booted.monitor}))
    booted.vm.close()
    assert leftover_files(booted.runtime_dir) == ["mini_init.pid", "mini_init.sock"]
    stale = _stale_group_elsewhere(cgroup_name(config))
    try:
        again = vm_factory.boot(config)
        assert again.pid != booted.pid
        instance = again.vm.launch_instance("Box", rootfs, default_uid=0, hostname="box")
        assert run_in(instance, "echo alive").stdout == "alive\n"
        instance.close()
        assert sorted(groups_of(again.runtime_dir)) == sorted(again.cgroups)
        if stale is not None:
            assert not stale[1].exists()
    finally:
        if stale is not None:
            for path in (stale[1], stale[0]):
                if path.exists():
                    path.rmdir()


@needs_root
def test_kernel_boot_timeout_stops_a_slow_boot(vm_factory: VmFactory) -> None:
    config = vm_factory.config(kernel_boot_timeout_ms=1)
    started = time.monotonic()
    with pytest.raises(VmError, match=r"kernelBootTimeout \(1 ms\)"):
        CoreVm.boot(config)
    assert time.monotonic() - started < 10
    runtime_dir = Path(config.runtime_dir)
    assert wait_until(lambda: leftover_files(runtime_dir) == [] and groups_of(runtime_dir) == [], timeout=5)


def _config(**changes: object) -> VmConfig:
    values: dict[str, object] = dict(
        owner_uid=0,
        owner_gid=0,
        runtime_dir=Path("/run/pywsl/0"),
        uid_map=[(0, 1 << 30, 65536)],
        gid_map=[(0, 1 << 30, 65536)],
        networking_mode="mirrored",
        hostname="h",
        memory_bytes=None,
        processors=None,
        vm_idle_timeout_ms=-1,
        instance_idle_timeout_ms=-1,
    )
    values.update(changes)
    return VmConfig(**values)  # type: ignore[arg-type]


def test_timeouts_in_the_config_and_the_boot_arguments() -> None:
    from pywsl.guest.boot import parse_boot_arguments

    default = _config()
    assert (default.kernel_boot_timeout_ms, default.distribution_start_timeout_ms) == (30000, 60000)
    arguments = boot_arguments(_config(kernel_boot_timeout_ms=1234), 3, ())
    assert arguments[arguments.index("--boot-timeout") + 1] == "1234"
    assert parse_boot_arguments(arguments).boot_timeout_ms == 1234
    for bad in (0, -5, True, "10"):
        with pytest.raises(ValueError, match="positive number of milliseconds"):
            _config(distribution_start_timeout_ms=bad)
        with pytest.raises(ValueError, match="kernel_boot_timeout_ms"):
            _config(kernel_boot_timeout_ms=bad)


class _SilentGuest:
    """Plays mini_init on a socket pair: takes LaunchInit, then answers only as far as it is told."""

    def __init__(self, *, send_result: bool) -> None:
        ours, theirs = socket.socketpair()
        self.host_channel = MessageChannel(ours, name="test mini_init channel")
        self.guest = MessageChannel(theirs, name="test guest")
        self.send_result = send_result
        self.kept: list[int] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        transaction = self.guest.receive_transaction(timeout=10)
        _data, fds = transaction.receive()
        self.kept.extend(fds)
        if self.send_result:
            init = MessageChannel(socket.socket(fileno=os.dup(fds[1])), name="test init")
            init.send(
                schema("LX_MINI_INIT_CREATE_INSTANCE_RESULT"),
                Result=0,
                FailureStep=0,
                Pid=7,
                ConnectPort=0,
                Warnings=None,
            )
            init.close()

    def close(self) -> None:
        self.thread.join(10)
        for fd in self.kept:
            os.close(fd)
        self.guest.close()


@pytest.mark.parametrize("send_result", [False, True], ids=["no-result", "no-initialize-response"])
def test_distribution_start_timeout_bounds_the_wait(tmp_path: Path, send_result: bool) -> None:
    guest = _SilentGuest(send_result=send_result)
    vm = CoreVm(NamespacesBackend(), tmp_path, guest.host_channel, "test", start_timeout_ms=300)
    directory = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    try:
        started = time.monotonic()
        with pytest.raises(VmError, match=r"did not start within distributionStartTimeout \(300 ms\)"):
            vm.launch_instance("Slow", directory, default_uid=0, hostname="h", timezone="")
        assert 0.25 < time.monotonic() - started < 5
    finally:
        os.close(directory)
        vm.close()
        guest.close()


@needs_root
def test_directories_may_be_descriptors(vm_factory: VmFactory, tmp_path: Path) -> None:
    booted = vm_factory.boot()
    rootfs = vm_factory.rootfs(vm=booted)
    directory = os.open(rootfs, os.O_PATH | os.O_DIRECTORY)
    try:
        instance = booted.vm.launch_instance("Box", directory, default_uid=0, hostname="box")
        assert run_in(instance, "cat /etc/os-release").stdout.startswith("NAME=")
        instance.close()
        archive = tmp_path / "out.tar"
        with open(archive, "wb") as output, open(os.devnull, "wb") as errors:
            booted.vm.export_rootfs(directory, output.fileno(), errors.fileno(), "")
        assert archive.read_bytes()[257:262] == b"ustar"
    finally:
        os.close(directory)
    plain = tmp_path / "plain-file"
    plain.write_text("x")
    not_a_directory = os.open(plain, os.O_RDONLY)
    try:
        with pytest.raises(NotADirectoryError):
            booted.vm.launch_instance("File", not_a_directory, default_uid=0, hostname="box")
    finally:
        os.close(not_a_directory)
    with pytest.raises(TypeError):
        booted.vm.launch_instance("Bool", True, default_uid=0, hostname="box")
