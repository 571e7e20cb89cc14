"""The utility VM for real: boot, distributions, isolation, lifetime and shutdown (namespaces backend)."""

from __future__ import annotations

import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import VmFactory, host_pid, mount_points, pid_alive, run_in, vm_processes, wait_until
from run_folders import run_folder

from pywsl.guest import path_folder_store
from pywsl.vm import CoreVm
from pywsl.vm.idmap import host_id
from pywsl.wire import schema
from pywsl.wire.channel import MessageChannel
from pywsl.wire.constants import LX_INIT_AUTO_GENERATED_FILE_HEADER, LX_INIT_RESOLVCONF_PREFIX

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the namespaces backend needs root")


def _left_in(runtime_dir: Path) -> list[str]:
    """What a VM left in its runtime folder, but the host PATH folders it keeps for its next
    start (`path_folder_store`)."""
    return sorted(name for name in os.listdir(runtime_dir) if name != path_folder_store.STORE_NAME)


def test_boot_attach_and_capabilities(vm_factory: VmFactory) -> None:
    booted = vm_factory.boot()
    assert booted.vm.kernel_release == os.uname().release
    assert booted.vm.running_instances() == {}
    again = CoreVm.attach(booted.runtime_dir)
    assert again is not None and again.running_instances() == {}
    again.close()
    # The VM's processes are in their own cgroup, user and pid namespaces.
    assert (booted.runtime_dir / "mini_init.sock").is_socket()
    assert Path(f"/proc/{booted.pid}/uid_map").read_text().split() == [
        str(value) for line in booted.config.uid_map for value in line
    ]
    assert os.readlink(f"/proc/{booted.pid}/ns/pid") != os.readlink("/proc/self/ns/pid")
    assert Path(f"/proc/{booted.pid}/comm").read_text().strip() == "mini_init"
    assert CoreVm.attach(Path(tempfile.gettempdir()) / "no-such-vm") is None


def test_distribution_basics(vm_factory: VmFactory) -> None:
    booted = vm_factory.boot()
    rootfs = vm_factory.rootfs(vm=booted)
    instance = booted.vm.launch_instance("Box", rootfs, default_uid=0, hostname="host.Name_1")
    assert instance.state == "Running" and instance.warnings == []
    assert (instance.flavor, instance.version) == ("busybox", "1.36")
    assert booted.vm.running_instances() == {"box": instance.pid}
    result = run_in(instance, "cat /proc/1/comm; echo $$; hostname; cat /etc/hostname; id -u")
    comm, shell_pid, hostname, etc_hostname, uid = result.stdout.split()
    assert result.code == 0 and comm == "init" and int(shell_pid) > 1
    assert hostname == etc_hostname == "host.Name1"
    assert uid == "0"
    # Named as WSL names them; the interpreter's command line (host paths) is not visible inside.
    titles = run_in(
        instance,
        "tr '\\0' '|' < /proc/1/cmdline; echo; cat /proc/$PPID/comm; tr '\\0' '|' < /proc/$PPID/cmdline",
    ).stdout.splitlines()
    assert titles[0] == "/init|"
    assert titles[1] == titles[2].rstrip("|") and titles[1].startswith("Relay(")
    # The relay is called after its child before the child runs: the very first thing the
    # program can do already sees a relay name, never SpareRelay (a relay that renamed itself
    # only after the spawn could be seen so). The pid in it is the one the kernel gives next; a
    # process the distribution started in between (init's next spare leader, say) takes that one,
    # and the relay corrects the name after the spawn: then the first look sees a smaller pid.
    exact = 0
    for _ in range(10):
        seen = run_in(instance, "echo $$ $(cat /proc/$PPID/comm)").stdout.split()
        named = re.fullmatch(r"Relay\((\d+)\)", seen[1])
        assert named is not None and 1 < int(named.group(1)) <= int(seen[0]), seen
        exact += int(named.group(1)) == int(seen[0])
    assert exact > 0
    # Once the spawn has returned, the name is the child's own pid whatever happened in between.
    late = run_in(instance, "sleep 0.2; echo $$ $(cat /proc/$PPID/comm)").stdout.split()
    assert late[1] == f"Relay({late[0]})", late
    hosts = run_in(instance, "cat /etc/hosts").stdout
    assert hosts.startswith(LX_INIT_AUTO_GENERATED_FILE_HEADER + "# [network]\n# generateHosts = false\n")
    assert "127.0.0.1\tlocalhost\n127.0.1.1\thost.Name1.localdomain\thost.Name1\n" in hosts
    resolv = run_in(instance, "cat /etc/resolv.conf").stdout
    assert resolv.startswith(LX_INIT_AUTO_GENERATED_FILE_HEADER + LX_INIT_RESOLVCONF_PREFIX)
    host_nameservers = [
        line for line in Path("/etc/resolv.conf").read_text().splitlines() if line.startswith("nameserver")
    ]
    assert all(line in resolv for line in host_nameservers)
    # The pid namespace the response names is init's.
    init_host_pid = host_pid(booted.pid, instance.pid)
    assert os.stat(f"/proc/{init_host_pid}/ns/pid").st_ino == instance.pid_namespace
    # A second LaunchInit attaches to the running init.
    again = booted.vm.launch_instance("BOX", rootfs, default_uid=0, hostname="other")
    assert again.pid == instance.pid and run_in(again, "hostname").stdout.strip() == "host.Name1"
    again.close()
    instance.close()


def test_mounts_and_devices(vm_factory: VmFactory) -> None:
    before = mount_points()
    booted = vm_factory.boot()
    instance = booted.vm.launch_instance("Box", vm_factory.rootfs(vm=booted), default_uid=0, hostname="box")
    table: dict[str, tuple[str, str]] = {}
    for line in run_in(instance, "cat /proc/self/mountinfo").stdout.splitlines():
        fields = line.split()
        separator = fields.index("-")
        table[fields[4]] = (fields[separator + 1], fields[5])
    assert table["/proc"][0] == "proc"
    assert table["/sys"][0] == "sysfs" and table["/sys"][1].startswith("ro")
    assert table["/dev"][0] == "tmpfs"
    assert table["/dev/pts"][0] == "devpts"
    assert table["/dev/shm"][0] == "tmpfs" and table["/run"][0] == "tmpfs" and table["/tmp"][0] == "tmpfs"
    assert table["/mnt/host"][0] == table["/"][0]
    assert table["/mnt/host/proc"][0] == "proc"
    for name in ("null", "zero", "full", "random", "urandom", "tty"):
        assert table[f"/dev/{name}"][0] == "devtmpfs"  # a bind of the node, not a devtmpfs mount
    assert not [
        point
        for point, (fstype, _) in table.items()
        if fstype == "devtmpfs"
        and point
        not in {
            f"/dev/{n}"
            for n in ("null", "zero", "full", "random", "urandom", "tty", "fuse", "net/tun", "kvm")
        }
        and not point.startswith("/mnt/host")
    ]
    checks = run_in(
        instance,
        "echo x > /dev/null && head -c 4 /dev/zero | wc -c && readlink /dev/ptmx && "
        "ls /dev/pts && test -c /dev/urandom && echo ok; touch /sys/x 2>&1; "
        "mknod /dev/sda b 8 0 2>&1",
    )
    assert "4\npts/ptmx\nptmx\nok\n" in checks.stdout
    assert "Read-only file system" in checks.stdout
    assert "Operation not permitted" in checks.stdout
    # Nothing of this appears in the host's mount table.
    assert mount_points() == before
    instance.close()


def test_uid_map_and_host_files(vm_factory: VmFactory, tmp_path: Path) -> None:
    booted = vm_factory.boot()
    instance = booted.vm.launch_instance("Box", vm_factory.rootfs(vm=booted), default_uid=0, hostname="box")
    inside = run_in(instance, "cat /proc/self/uid_map /proc/self/gid_map").stdout.split()
    root_uid = host_id(booted.config.uid_map, 0)
    assert inside == ["0", str(root_uid), "65536", "0", str(host_id(booted.config.gid_map, 0)), "65536"]
    init_host_pid = host_pid(booted.pid, instance.pid)
    assert Path(f"/proc/{init_host_pid}/uid_map").read_text().split() == ["0", str(root_uid), "65536"]
    shared = run_folder("host-")
    shared.chmod(0o755)
    try:
        (shared / "host-owned").write_text("host\n")
        mine = shared / "vm-owned"
        mine.mkdir()
        os.chown(mine, root_uid, host_id(booted.config.gid_map, 0))
        result = run_in(
            instance,
            f"echo x >> /mnt/host{shared}/host-owned; echo $?; touch /mnt/host{shared}/new; "
            f"echo $?; echo y > /mnt/host{mine}/file && echo written; "
            "echo z > /mnt/host/etc/pywsl-probe; echo $?",
        )
        assert result.stdout.split() == ["1", "1", "written", "1"]
        assert (shared / "host-owned").read_text() == "host\n"
        assert not (shared / "new").exists() and not Path("/etc/pywsl-probe").exists()
        assert (mine / "file").stat().st_uid == root_uid
    finally:
        import shutil

        shutil.rmtree(shared)
    instance.close()


def test_owner_uid_1000_maps_to_the_owner(vm_factory: VmFactory) -> None:
    booted = vm_factory.boot(owner=(4242, 4343))
    assert (1000, 4242, 1) in booted.config.uid_map and (1000, 4343, 1) in booted.config.gid_map
    instance = booted.vm.launch_instance(
        "Box", vm_factory.rootfs(vm=booted), default_uid=1000, hostname="box"
    )
    shared = run_folder("owner-")
    try:
        os.chown(shared, 4242, 4343)
        result = run_in(instance, f"touch /mnt/host{shared}/by-alice && id -u", user="alice")
        assert result.code == 0, result.stderr
        assert result.stdout.strip() == "1000"
        info = (shared / "by-alice").stat()
        assert (info.st_uid, info.st_gid) == (4242, 4343)
    finally:
        import shutil

        shutil.rmtree(shared)
    instance.close()


def test_two_distributions_are_isolated(vm_factory: VmFactory) -> None:
    booted = vm_factory.boot()
    first = booted.vm.launch_instance(
        "One",
        vm_factory.rootfs("one", vm=booted, wsl_conf="[network]\nhostname = first\n"),
        default_uid=0,
        hostname="box",
    )
    second = booted.vm.launch_instance(
        "Two", vm_factory.rootfs("two", vm=booted), default_uid=0, hostname="box"
    )
    assert first.pid != second.pid and first.pid_namespace != second.pid_namespace
    assert booted.vm.running_instances() == {"one": first.pid, "two": second.pid}
    background = run_in(first, "sleep 30 >/dev/null 2>&1 & echo $!")
    assert background.stdout.strip() in run_in(first, "ls /proc").stdout.split()
    assert "sleep 30" in run_in(first, "ps").stdout
    assert "sleep" not in run_in(second, "ps").stdout
    # init keeps its host channels out of reach: it is not dumpable, so not even root inside can open them.
    assert run_in(first, "ls /proc/1/fd 2>&1; cat /proc/1/comm").stdout.endswith("Permission denied\ninit\n")
    assert run_in(first, "hostname").stdout.strip() == "first"
    assert run_in(second, "hostname").stdout.strip() == "box"
    run_in(first, "echo secret > /tmp/marker; echo shm > /dev/shm/marker")
    assert run_in(second, "cat /tmp/marker /dev/shm/marker 2>&1").code != 0
    mounts_second = run_in(second, "cat /proc/self/mountinfo").stdout
    assert "/one" not in mounts_second.replace("/mnt/host", "")
    first.close()
    second.close()


def test_terminate_and_exit_notifications(vm_factory: VmFactory) -> None:
    booted = vm_factory.boot()
    watch = booted.vm.open_exit_watch()
    first = booted.vm.launch_instance(
        "One", vm_factory.rootfs("one", vm=booted), default_uid=0, hostname="box"
    )
    second = booted.vm.launch_instance(
        "Two", vm_factory.rootfs("two", vm=booted), default_uid=0, hostname="box"
    )
    run_in(first, "sleep 60 >/dev/null 2>&1 &")
    processes = {host_pid(booted.pid, first.pid)} | {
        pid for pid in vm_processes(booted.pid) if Path(f"/proc/{pid}/comm").read_text().strip() == "sleep"
    }
    first.terminate()
    assert first.state == "Stopped"
    assert watch.receive(timeout=10) == first.pid
    assert wait_until(lambda: not any(pid_alive(pid) for pid in processes))
    assert booted.vm.running_instances() == {"two": second.pid}
    # An init that dies on its own is reported too, and its channel says so.
    os.kill(host_pid(booted.pid, second.pid), signal.SIGKILL)
    assert watch.receive(timeout=10) == second.pid
    assert wait_until(lambda: second.state == "Stopped")
    assert booted.vm.running_instances() == {}
    watch.close()


def test_instance_idle_timeout(vm_factory: VmFactory) -> None:
    rootfs = vm_factory.rootfs()
    booted = vm_factory.boot(instance_idle_timeout_ms=1500)
    instance = booted.vm.launch_instance("Box", rootfs, default_uid=0, hostname="box")
    background = run_in(instance, "sleep 600 >/dev/null 2>&1 & echo $!").stdout.strip()
    time.sleep(3.0)  # twice the idle timeout: a background process keeps the instance running
    assert instance.state == "Running"
    assert run_in(instance, f"kill {background}").code == 0
    assert wait_until(lambda: instance.state == "Stopped", timeout=15)  # idle again: it stops
    assert wait_until(lambda: booted.vm.running_instances() == {})


def test_vm_idle_timeout(vm_factory: VmFactory) -> None:
    rootfs = vm_factory.rootfs()  # ready before the boot: the VM starts idling as soon as it serves
    booted = vm_factory.boot(vm_idle_timeout_ms=1500)
    instance = booted.vm.launch_instance("Box", rootfs, default_uid=0, hostname="box")
    time.sleep(3.0)  # twice the idle timeout: a VM with a running instance never idles out
    assert booted.vm.running_instances() == {"box": instance.pid}
    instance.terminate()
    assert wait_until(lambda: not pid_alive(booted.pid), timeout=5)
    assert wait_until(lambda: not (booted.runtime_dir / "mini_init.sock").exists(), timeout=5)
    assert CoreVm.attach(booted.runtime_dir) is None


def test_vm_outlives_the_process_that_booted_it(vm_factory: VmFactory) -> None:
    config = vm_factory.config()
    rootfs = vm_factory.rootfs()
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from pywsl.vm import CoreVm, VmConfig\n"
        "from pywsl.vm.idmap import maps_for_owner\n"
        "uid_map, gid_map = maps_for_owner(0, 0)\n"
        f"config = VmConfig(0, 0, Path({str(config.runtime_dir)!r}), uid_map, gid_map, 'mirrored', 'box',"
        " None, None, -1, -1)\n"
        "vm = CoreVm.boot(config)\n"
        f"instance = vm.launch_instance('Box', Path({str(rootfs)!r}), default_uid=0, hostname='box')\n"
        "print(instance.pid, flush=True)\n"
        "os._exit(0)\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True, timeout=30
    ).stdout
    booted = vm_factory.boot(config)  # attaches: the VM is still there
    assert booted.vm.running_instances() == {"box": int(output)}
    instance = booted.vm.launch_instance("Box", rootfs, default_uid=0, hostname="box")
    assert instance.pid == int(output)
    assert run_in(instance, "echo alive").stdout == "alive\n"
    instance.close()


@pytest.mark.parametrize("force", [False, True])
def test_shutdown_leaves_nothing(vm_factory: VmFactory, force: bool) -> None:
    before = mount_points()
    booted = vm_factory.boot(memory_bytes=512 << 20, processors=1)
    for path in booted.cgroups:
        if (path / "memory.limit_in_bytes").exists():
            assert int((path / "memory.limit_in_bytes").read_text()) == 512 << 20
        if (path / "cpu.cfs_quota_us").exists():
            assert int((path / "cpu.cfs_quota_us").read_text()) == 100_000
    first = booted.vm.launch_instance(
        "One", vm_factory.rootfs("one", vm=booted), default_uid=0, hostname="box"
    )
    booted.vm.launch_instance(
        "Two", vm_factory.rootfs("two", vm=booted), default_uid=0, hostname="box"
    ).close()
    run_in(first, "sleep 60 >/dev/null 2>&1 &")
    processes = vm_processes(booted.pid) | {booted.monitor}
    assert len(processes) >= 6
    booted.vm.shutdown(force=force)
    assert wait_until(lambda: not any(pid_alive(pid) for pid in processes), timeout=5)
    assert _left_in(booted.runtime_dir) == ["mini_init.log"]
    assert not any(path.exists() for path in booted.cgroups)
    assert mount_points() == before
    assert CoreVm.attach(booted.runtime_dir) is None


def _raw_connection(runtime_dir: Path) -> MessageChannel:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(runtime_dir / "mini_init.sock"))
    channel = MessageChannel(sock, name="test")
    channel.receive(schema("LX_INIT_GUEST_CAPABILITIES"), timeout=5)
    return channel


def _closed(channel: MessageChannel) -> bool:
    sock = socket.socket(fileno=os.dup(channel.fileno()))
    sock.settimeout(5)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    finally:
        sock.close()


def test_wrong_messages_close_only_their_channel(vm_factory: VmFactory) -> None:
    booted = vm_factory.boot()
    instance = booted.vm.launch_instance("Box", vm_factory.rootfs(vm=booted), default_uid=0, hostname="box")
    # A message mini_init does not serve.
    bad = _raw_connection(booted.runtime_dir)
    with bad.start_transaction(5) as transaction:
        transaction.send(schema("LX_INIT_CREATE_SESSION"), ConsoleId=0)
    assert _closed(bad)
    # A message that is not a transaction request.
    stray = _raw_connection(booted.runtime_dir)
    stray.send(schema("PYWSL_QUERY_INSTANCES"))
    assert _closed(stray)
    # A frame that is not a WSL message at all.
    garbage = _raw_connection(booted.runtime_dir)
    garbage.send_raw(struct.pack("<IIII", 29, 8, 0, 1))
    assert _closed(garbage)
    # LaunchInit without its file descriptors.
    missing = _raw_connection(booted.runtime_dir)
    with missing.start_transaction(5) as transaction:
        transaction.send(
            schema("LX_MINI_INIT_MESSAGE"),
            MountDeviceType=0,
            DeviceId=0,
            FsType="",
            MountOptions="",
            VmId="",
            DistributionName="x",
            SharedMemoryRoot="",
            InstallPath="",
            UserProfile="",
            Flags=0,
            ConnectPort=0,
        )
    assert _closed(missing)
    # A wrong message on the init channel closes that channel; the instance runs on.
    with instance._channel.start_transaction(5) as transaction:
        transaction.send(
            schema("LX_MINI_INIT_EARLY_CONFIG_MESSAGE"),
            SwapLun=0,
            SystemDistroDeviceType=0,
            SystemDistroDeviceId=0,
            MemoryReclaimMode=0,
            DnsTunnelingIpAddress=0,
            EnableDebugShell=False,
            EnableDnsTunneling=False,
            EnableSafeMode=False,
            DefaultKernel=False,
            IsolateDistroCgroup=False,
            KernelModulesDeviceId=0,
            Hostname="x",
            KernelModulesList="",
        )
    assert wait_until(lambda: instance.state == "Stopped")
    assert booted.vm.running_instances() == {"box": instance.pid}
    again = booted.vm.launch_instance(
        "Box", vm_factory.rootfs("unused", vm=booted), default_uid=0, hostname="box"
    )
    assert run_in(again, "echo fine").stdout == "fine\n"
    again.close()
    for channel in (bad, stray, garbage, missing):
        channel.close()


def test_wsl_conf_settings_and_warnings(vm_factory: VmFactory) -> None:
    booted = vm_factory.boot()
    conf = (
        "[user]\ndefault = alice\n[boot]\ncommand = echo booted > /run/boot-marker\n"
        "[network]\ngenerateHosts = false\ngenerateResolvConf = maybe\n"
        "[automount]\nroot = /windows\n[unknown]\nkey = 1\nthis is not a line\n"
    )
    rootfs = vm_factory.rootfs(vm=booted, wsl_conf=conf)
    (rootfs / "etc/hosts").write_text("# mine\n")
    instance = booted.vm.launch_instance("Box", rootfs, default_uid=0, hostname="box")
    assert instance.default_uid == 1000
    assert any("unknown.key" in warning for warning in instance.warnings)
    assert any("generateResolvConf" in warning for warning in instance.warnings)
    assert instance.warnings[-1] == "Expected '=' in /etc/wsl.conf:12"  # WSL stops reading there
    assert run_in(instance, "cat /etc/hosts").stdout == "# mine\n"
    assert run_in(instance, "cat /etc/resolv.conf").stdout.startswith(LX_INIT_AUTO_GENERATED_FILE_HEADER)
    assert wait_until(lambda: run_in(instance, "cat /run/boot-marker 2>/dev/null").stdout == "booted\n", 5)
    assert (
        run_in(instance, "test -d /windows/host/proc && test ! -e /mnt/host && echo moved").stdout
        == "moved\n"
    )
    instance.close()


def test_the_first_session_uses_the_default_user_that_initialize_decided(vm_factory: VmFactory) -> None:
    """The first session's leader (and its first relay) are forked as the distribution starts,
    before Initialize decides the distribution's default user (its DrvFsDefaultOwner here, tried
    when the request's DefaultUid is nobody in /etc/passwd): that user comes with the session's
    channel, and with each request handed to a relay forked ahead."""
    booted = vm_factory.boot()
    rootfs = vm_factory.rootfs(vm=booted)
    instance = booted.vm.launch_instance("Box", rootfs, default_uid=1000, hostname="box")
    assert instance.default_uid == 1000
    first = run_in(instance, "id -u", default_uid=4242)
    assert (first.code, first.stdout) == (0, "1000\n"), first.stderr
    again = run_in(instance, "id -u", default_uid=4242)  # the leader's next relay, the same user
    assert (again.code, again.stdout) == (0, "1000\n"), again.stderr
    assert run_in(instance, "id -u").stdout == "0\n"  # the request's own DefaultUid comes first
    instance.close()
    second = booted.vm.launch_instance("Box", rootfs, default_uid=1000, hostname="box")
    later = run_in(second, "id -u", default_uid=4242)  # a spare leader forked after Initialize
    assert (later.code, later.stdout) == (0, "1000\n"), later.stderr
    second.close()


def test_automount_disabled_and_networking_none(vm_factory: VmFactory) -> None:
    booted = vm_factory.boot(networking_mode="none")
    rootfs = vm_factory.rootfs(vm=booted, wsl_conf="[automount]\nenabled = false\n")
    instance = booted.vm.launch_instance("Box", rootfs, default_uid=0, hostname="box")
    result = run_in(
        instance,
        "ls /sys/class/net; test -e /mnt/host || echo no-host; grep -c ':' /proc/net/dev; "
        "cat /sys/class/net/lo/flags",
    )
    assert result.stdout.split() == ["lo", "no-host", "1", "0x9"]  # lo: IFF_UP | IFF_LOOPBACK
    instance.close()


def test_unusable_root_filesystem_fails_cleanly(vm_factory: VmFactory, tmp_path: Path) -> None:
    booted = vm_factory.boot()
    missing = tmp_path / "missing"
    with pytest.raises(OSError):
        booted.vm.launch_instance("Gone", missing, default_uid=0, hostname="box")
    unwritable = tmp_path / "host-root-owned"
    unwritable.mkdir(mode=0o700)
    from pywsl.vm import VmError

    with pytest.raises(VmError) as failure:
        booted.vm.launch_instance("Locked", unwritable, default_uid=0, hostname="box")
    assert failure.value.errno
    assert wait_until(lambda: booted.vm.running_instances() == {})


@pytest.mark.parametrize(
    ("uid_map", "reason"),
    [
        ([(0, 0xFFFFFFF0, 65536)], "not a valid id range"),  # refused by the boot argument parser
        ([(0, 1 << 30, 65536), (100, 1 << 29, 10)], "uid_map"),
    ],  # refused by the kernel: overlapping
)
def test_a_failed_boot_leaves_nothing(
    vm_factory: VmFactory, uid_map: list[tuple[int, int, int]], reason: str
) -> None:
    from pywsl.vm import VmError
    from pywsl.vm.backends.namespaces import cgroup_name

    config = vm_factory.config(uid_map=uid_map)
    with pytest.raises(VmError, match="did not start") as failure:
        CoreVm.boot(config)
    assert reason in str(failure.value)
    runtime_dir = Path(config.runtime_dir)
    assert wait_until(lambda: _left_in(runtime_dir) == ["mini_init.log"], timeout=5)
    name = cgroup_name(config)
    assert not [path for path in Path("/sys/fs/cgroup").glob(f"**/{name}")]


IPV6_HOSTS = (
    "# The following lines are desirable for IPv6 capable hosts\n"
    "::1     ip6-localhost ip6-loopback\nfe00::0 ip6-localnet\nff00::0 ip6-mcastprefix\n"
    "ff02::1 ip6-allnodes\nff02::2 ip6-allrouters\n"
)


def test_wsl_conf_hostname_hosts_umask_and_lang_as_wsl_init(vm_factory: VmFactory) -> None:
    booted = vm_factory.boot()
    conf_lines = [
        "# as WSL's init reads it",
        "[network]",
        "hostname = my_box.example.org--",
        "[filesystem]",
        "umask = 077",
        "[boot]",
        "command = echo $0 $NAME > /run/boot-args; \\",
        "    umask > /run/boot-umask",
        "[interop]",
        "appendWindowsPath = false ; not a comment",
        "this line stops the reading",
        "[network]",
        "generateHosts = false",
    ]
    rootfs = vm_factory.rootfs("first", vm=booted, wsl_conf="\n".join(conf_lines) + "\n")
    (rootfs / "etc/default").mkdir(exist_ok=True)
    (rootfs / "etc/default/locale").write_text('# set by hand\nLANG="de_DE.UTF-8"\n')
    (rootfs / "etc/locale.conf").write_text("LANG=not_this_one\n")
    instance = booted.vm.launch_instance("First", rootfs, default_uid=0, hostname="ignored")
    assert instance.warnings == [
        "Invalid boolean value 'false ; not a comment' for key 'interop.appendWindowsPath' "
        "in /etc/wsl.conf:10",
        "Expected '=' in /etc/wsl.conf:11",
    ]
    result = run_in(instance, "hostname; cat /etc/hostname /proc/sys/kernel/domainname; umask; echo $LANG")
    assert result.stdout.split() == [
        "mybox.exampleorg",
        "mybox.exampleorg",
        "localdomain",
        "0077",
        "de_DE.UTF-8",
    ]
    # generateHosts = false came after the syntax error: the file is generated, laid out as WSL's.
    assert run_in(instance, "cat /etc/hosts").stdout == (
        LX_INIT_AUTO_GENERATED_FILE_HEADER + "# [network]\n# generateHosts = false\n127.0.0.1\tlocalhost\n"
        "127.0.1.1\tmybox.exampleorg.localdomain\tmybox.exampleorg\n\n" + IPV6_HOSTS
    )
    # [boot] command: "sh -c", init's umask 0, NAME set; the continued line is part of it.
    assert wait_until(lambda: run_in(instance, "cat /run/boot-umask 2>/dev/null").stdout == "0000\n", 5)
    assert run_in(instance, "cat /run/boot-args").stdout == "sh mybox.exampleorg\n"
    # Without /etc/default/locale, /etc/locale.conf names LANG; an empty hostname is "localhost".
    second = vm_factory.rootfs("second", vm=booted, wsl_conf="[network]\nhostname =\n")
    (second / "etc/locale.conf").write_text("export LANG='fr_FR.UTF-8' # comment\n")
    other = booted.vm.launch_instance("Second", second, default_uid=0, hostname="ignored")
    assert other.warnings == []
    assert run_in(other, "hostname; umask; echo $LANG").stdout.split() == ["localhost", "0022", "fr_FR.UTF-8"]
    other.close()
    instance.close()
