"""``[boot] systemd=true``: a real Debian with systemd as pid 1 of its instance (debootstrap once per run)."""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import BootedVm, VmFactory, pid_alive, run_in, vm_processes, wait_until
from debian_root import debootstrap
from run_folders import run_folder

import pywsl as pywsl_package
import pywsl.vm
from pywsl.api.session.gui_share import gui_host_environment
from pywsl.vm import CoreInstance
from pywsl.vm.backends.namespaces import is_cgroup_of
from pywsl.vm.cgroups import find_groups
from pywsl.vm.idmap import host_id

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the namespaces backend needs root"),
    pytest.mark.skipif(shutil.which("debootstrap") is None, reason="needs debootstrap"),
]

SYSTEMD_CONF = "[boot]\nsystemd = true\n"
USER, USER_UID = "alice", 1000
PROBE_UNIT = (
    "[Unit]\nDescription=enabled in the root filesystem\n[Service]\nExecStart=/bin/sleep infinity\n"
    "[Install]\nWantedBy=multi-user.target\n"
)


@pytest.fixture(scope="session")
def systemd_archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A Debian bookworm minbase with systemd, systemd-sysv and dbus, as a tar without ``./dev/*``."""
    folder = tmp_path_factory.mktemp("systemd-debian")
    root = folder / "root"
    result = debootstrap(root, include=("systemd", "systemd-sysv", "dbus"))
    assert result.returncode == 0, result.stderr[-2000:]
    (root / "etc/systemd/system/pywsl-enabled.service").write_text(PROBE_UNIT)
    added = subprocess.run(
        ["chroot", str(root), "useradd", "-m", "-u", str(USER_UID), "-s", "/bin/sh", USER],
        capture_output=True,
        text=True,
        check=False,
    )
    assert added.returncode == 0, added.stderr
    (root / "etc/systemd/system/multi-user.target.wants/pywsl-enabled.service").symlink_to(
        "/etc/systemd/system/pywsl-enabled.service"
    )
    archive = folder / "debian-systemd.tar"
    subprocess.run(["tar", "-C", str(root), "--exclude=./dev/*", "-cf", str(archive), "."], check=True)
    shutil.rmtree(root)
    yield archive
    shutil.rmtree(folder, ignore_errors=True)


def _import(booted: BootedVm, archive: Path, target: Path, wsl_conf: str) -> Path:
    target.mkdir()
    os.chown(target, host_id(booted.config.uid_map, 0), host_id(booted.config.gid_map, 0))
    error_read, error_write = os.pipe()
    with open(archive, "rb") as source:
        outcome = booted.vm.import_rootfs(target, source.fileno(), error_write)
    os.close(error_write)
    os.close(error_read)
    assert outcome.valid
    conf = target / "etc/wsl.conf"
    conf.write_text(wsl_conf)
    os.chown(conf, host_id(booted.config.uid_map, 0), host_id(booted.config.gid_map, 0))
    return target


def _instance_groups(booted: BootedVm) -> list[Path]:
    return [
        path
        for group in booted.cgroups
        if (group / "cgroup.controllers").exists()
        for path in group.iterdir()
        if path.is_dir()
    ]


def test_systemd_is_pid_1_and_units_run(vm_factory: VmFactory, systemd_archive: Path, tmp_path: Path) -> None:
    booted = vm_factory.boot()
    rootfs = _import(booted, systemd_archive, tmp_path / "debian", SYSTEMD_CONF)
    started = time.monotonic()
    instance = booted.vm.launch_instance("SystemdDebian", rootfs, default_uid=0, hostname="sd")
    assert time.monotonic() - started < 30
    first = run_in(
        instance,
        "cat /proc/1/comm; systemctl is-system-running; echo $container; "
        "cat /proc/$$/status | grep -c '^PPid'",
    )
    lines = first.stdout.splitlines()
    assert lines[0] == "systemd", first
    # Not degraded: what cannot work in an instance is masked before systemd starts.
    failed = run_in(instance, "systemctl --failed --no-legend --plain").stdout
    assert lines[1] == "running", (first, failed)
    started_unit = run_in(
        instance,
        "systemd-run --unit=probe sleep 300 && systemctl is-active probe; "
        "systemctl is-active pywsl-enabled; journalctl -u probe --no-pager -q; "
        "echo journal=$?; stat -c %T -f /sys/fs/cgroup; readlink /proc/1/exe",
    )
    out = started_unit.stdout.splitlines()
    assert out[0] == "active" and out[1] == "active", started_unit
    assert "journal=0" in out and "cgroup2fs" in out, started_unit
    assert out[-1].endswith("systemd"), started_unit
    # The instance's sub-group of the VM's delegated cgroup2 tree holds systemd's slices.
    groups = _instance_groups(booted)
    assert len(groups) == 1 and (groups[0] / "system.slice/probe.service").is_dir()
    # pywsl's init beside systemd idles: no loop on the console once systemd has closed it.
    init_pid = _pywsl_init(groups[0])
    reads_before = _read_calls(init_pid)
    time.sleep(2)  # a span to count in, not a synchronisation
    assert _read_calls(init_pid) - reads_before < 2000
    vm_pid = instance.pid
    instance.terminate(force=False)
    # The channel closes in systemd's last stage (units stopped); pid 1 exits right after.
    assert wait_until(lambda: vm_pid not in booted.vm.running_instances().values(), 10)
    assert wait_until(lambda: not _instance_groups(booted), 10), _instance_groups(booted)


def _pywsl_init(group: Path) -> int:
    """The host pid of pywsl's init in an instance's cgroup (``/init`` beside systemd)."""
    for path in group.rglob("cgroup.procs"):
        for pid in path.read_text().split():
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                if handle.read().split(b"\0")[0] == b"/init":
                    return int(pid)
    raise AssertionError(f"no /init process in {group}")


def _read_calls(pid: int) -> int:
    """How many read system calls a process has made (``syscr`` of ``/proc/PID/io``)."""
    fields = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    return int(fields["syscr"])


MASKED = (
    "console-getty.service",
    "systemd-networkd-wait-online.service",
    "NetworkManager-wait-online.service",
    "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount",
)


def _listening(path: Path) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    return listener


def test_masked_units_and_user_sessions(
    vm_factory: VmFactory, systemd_archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    booted = vm_factory.boot()
    rootfs = _import(booted, systemd_archive, tmp_path / "debian", SYSTEMD_CONF)
    instance = booted.vm.launch_instance("UserSessions", rootfs, default_uid=0, hostname="users")
    try:
        # WSL's generator masks, and the kernel file systems a user namespace cannot mount.
        masks = run_in(instance, "for unit in " + " ".join(MASKED) + "; do systemctl is-enabled $unit; done")
        assert masks.stdout.split() == ["masked-runtime"] * len(MASKED), masks
        # Each user's manager (user@<uid>.service) runs before the user's first process does.
        session = run_in(
            instance,
            'echo $XDG_RUNTIME_DIR; echo $DBUS_SESSION_BUS_ADDRESS; stat -c "%U %a" "$XDG_RUNTIME_DIR"; '
            "systemctl --user is-system-running --wait; "
            "systemd-run --user --unit=user-probe sleep 300 >/dev/null 2>&1 && "
            "systemctl --user is-active user-probe",
            user=USER,
        )
        assert session.stdout.splitlines() == [
            f"/run/user/{USER_UID}",
            f"unix:path=/run/user/{USER_UID}/bus",
            f"{USER} 700",
            "running",
            "active",
        ], session
        assert session.stderr == "", session
        root = run_in(instance, "echo $XDG_RUNTIME_DIR; systemctl is-active user@0.service user@1000.service")
        assert root.stdout.split() == ["/run/user/0", "active", "active"], root
        # The caller's Wayland and Pulse sockets are linked into the user's runtime folder (WSLg's layout).
        # The caller is the host user whose id is the distribution's 1000 (as for a non-root owner).
        caller_uid, caller_gid = (
            host_id(booted.config.uid_map, USER_UID),
            host_id(booted.config.gid_map, USER_UID),
        )
        folder = run_folder("sd-gui-")
        folder.chmod(0o755)
        runtime = folder / "runtime"
        (runtime / "pulse").mkdir(parents=True)
        wayland, pulse = _listening(runtime / "wayland-0"), _listening(runtime / "pulse" / "native")
        for path in (runtime, runtime / "pulse", runtime / "wayland-0", runtime / "pulse" / "native"):
            os.chown(path, caller_uid, caller_gid)
        runtime.chmod(0o700)
        try:
            entries = gui_host_environment(
                {"WAYLAND_DISPLAY": "wayland-0", "XDG_RUNTIME_DIR": str(runtime)}, caller_uid, "/"
            )
            assert [entry.partition("=")[0] for entry in entries] == ["PYWSL_GUI_WAYLAND", "PYWSL_GUI_PULSE"]
            with monkeypatch.context() as patch:
                patch.setattr(
                    pywsl.vm,
                    "ProcessRequest",
                    functools.partial(pywsl.vm.ProcessRequest, host_environment=tuple(entries)),
                )
                shown = run_in(
                    instance,
                    'echo $XDG_RUNTIME_DIR $WAYLAND_DISPLAY; cd "$XDG_RUNTIME_DIR"; '
                    'test -S "$WAYLAND_DISPLAY" && readlink "$WAYLAND_DISPLAY"; '
                    "test -S pulse/native && readlink pulse/native",
                    user=USER,
                )
            assert shown.stdout.splitlines() == [
                f"/run/user/{USER_UID} wayland-0",
                "/mnt/wslg/runtime-dir/wayland-0",
                "/mnt/wslg/runtime-dir/pulse/native",
            ], shown
        finally:
            wayland.close()
            pulse.close()
            shutil.rmtree(folder)
    finally:
        instance.terminate(force=True)
    assert wait_until(lambda: not booted.vm.running_instances(), 10)
    assert wait_until(lambda: not _instance_groups(booted), 10)


def test_idle_timeout_counts_only_pywsl_processes(
    vm_factory: VmFactory, systemd_archive: Path, tmp_path: Path
) -> None:
    booted = vm_factory.boot(instance_idle_timeout_ms=1500)
    rootfs = _import(booted, systemd_archive, tmp_path / "debian", SYSTEMD_CONF)
    instance: CoreInstance = booted.vm.launch_instance("IdleSystemd", rootfs, default_uid=0, hostname="idle")
    unit = run_in(instance, "systemd-run --unit=idle-probe sleep 600 && cat /proc/1/comm")
    assert unit.stdout == "systemd\n", unit
    # Only a unit is left: the instance stops after instanceIdleTimeout, systemd with it.
    assert wait_until(lambda: instance.state == "Stopped", 30)
    assert wait_until(lambda: not booted.vm.running_instances(), 15)
    assert wait_until(lambda: not _instance_groups(booted), 10)


def test_systemd_off_keeps_pywsl_init_as_pid_1(
    vm_factory: VmFactory, systemd_archive: Path, tmp_path: Path
) -> None:
    booted = vm_factory.boot()
    rootfs = _import(booted, systemd_archive, tmp_path / "debian", "[boot]\nsystemd = false\n")
    instance = booted.vm.launch_instance("PlainDebian", rootfs, default_uid=0, hostname="plain")
    result = run_in(instance, "cat /proc/1/comm; systemctl is-system-running")
    assert result.stdout.splitlines()[:2] == ["init", "offline"], result
    assert not _instance_groups(booted)
    instance.terminate()


def test_init_timeout_warns_and_goes_on(vm_factory: VmFactory, systemd_archive: Path, tmp_path: Path) -> None:
    booted = vm_factory.boot()
    rootfs = _import(booted, systemd_archive, tmp_path / "debian", SYSTEMD_CONF + "initTimeout = 1\n")
    instance = booted.vm.launch_instance("SlowSystemd", rootfs, default_uid=0, hostname="slow")
    assert any("initTimeout (1 ms" in warning for warning in instance.warnings), instance.warnings
    # Its bus may not listen yet: ask again (bounded) until systemd answers.
    result = run_in(
        instance,
        "cat /proc/1/comm; i=0; until s=$(systemctl is-system-running --wait); "
        '[ "$s" = running ] || [ "$s" = degraded ] || [ $i -ge 100 ]; '
        "do sleep 0.1; i=$((i+1)); done; echo $s",
    )
    assert result.stdout.splitlines()[0] == "systemd"
    assert result.stdout.splitlines()[1] in ("running", "degraded"), result
    instance.terminate(force=True)
    assert wait_until(lambda: not booted.vm.running_instances(), 10)
    assert wait_until(lambda: not _instance_groups(booted), 10)


# --- Through the command line: `pywsl` as root, in-process, with a private registry and runtime. ---


class _Pywsl:
    """``python -m pywsl.cli.main`` with a private home, registry, configuration and runtime folder."""

    def __init__(self, workspace: Path) -> None:
        config = workspace / "config"
        self.runtime = workspace / "run"
        for folder in (workspace / "home", config / "pywsl", self.runtime):
            folder.mkdir(parents=True)
        os.chmod(self.runtime, 0o700)
        (config / "pywsl" / "wslconfig").write_text(
            "[general]\ninstanceIdleTimeout=120000\n[wsl2]\nvmIdleTimeout=120000\n"
        )
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(workspace / "home"),
            "XDG_DATA_HOME": str(workspace / "data"),
            "XDG_CONFIG_HOME": str(config),
            "PYWSL_RUNTIME_ROOT": str(self.runtime),
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(Path(pywsl_package.__file__).resolve().parent.parent),
        }

    def __call__(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pywsl.cli.main", *args],
            env=self.env,
            cwd="/",
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    @property
    def vm_runtime(self) -> Path:
        return self.runtime / str(os.geteuid())


def _pid_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def _instance_processes(pywsl: _Pywsl) -> list[int]:
    """Live processes of the VM outside the VM's own pid namespace: those of its instances."""
    vm_pid = int((pywsl.vm_runtime / "mini_init.pid").read_text().split()[0])
    own = _pid_namespace(vm_pid)
    return [pid for pid in vm_processes(vm_pid) if pid_alive(pid) and _pid_namespace(pid) not in (own, None)]


def _vm_instance_groups(pywsl: _Pywsl) -> list[Path]:
    return [
        path
        for group in find_groups(functools.partial(is_cgroup_of, pywsl.vm_runtime))
        if (group / "cgroup.controllers").exists()
        for path in group.iterdir()
        if path.is_dir()
    ]


BOOT_PROBE = "/var/tmp/pywsl-boot-command"
AS_ROOT = ("-d", "SdCli", "-u", "root", "--")
CLI_CONF = (
    f"[boot]\nsystemd = true\ncommand = cat /proc/1/comm > {BOOT_PROBE}.part && "
    f"mv {BOOT_PROBE}.part {BOOT_PROBE}\n"
)


def test_systemd_through_the_command_line(systemd_archive: Path, tmp_path: Path) -> None:
    pywsl = _Pywsl(tmp_path)
    try:
        imported = pywsl("--import", "SdCli", str(tmp_path / "sdcli"), str(systemd_archive), timeout=600)
        assert imported.returncode == 0, imported.stderr
        # Written from inside (systemd still off: pywsl's init is pid 1), then a cold start with it on.
        first = pywsl(
            *AS_ROOT,
            f"cat /proc/1/comm; printf %s {shlex.quote(CLI_CONF)} > /etc/wsl.conf; rm -f {BOOT_PROBE}",
        )
        assert first.returncode == 0 and first.stdout == "init\n", first
        assert pywsl(*AS_ROOT, "cat", "/etc/wsl.conf").stdout == CLI_CONF
        assert pywsl("-t", "SdCli").returncode == 0
        assert wait_until(lambda: not _instance_processes(pywsl), 15), _instance_processes(pywsl)

        state = pywsl(*AS_ROOT, "cat /proc/1/comm; systemctl is-system-running")  # 1 when degraded
        assert state.stdout.splitlines()[0] == "systemd", state
        assert state.stdout.splitlines()[1] in ("running", "degraded"), state
        unit = pywsl(
            *AS_ROOT,
            "printf '[Service]\\nExecStart=/bin/sleep 600\\n' "
            "> /run/systemd/system/cli-probe.service && systemctl daemon-reload "
            "&& systemctl start cli-probe && systemctl is-active cli-probe pywsl-enabled",
        )
        assert (unit.returncode, unit.stdout) == (0, "active\nactive\n"), unit
        journal = pywsl(*AS_ROOT, "journalctl", "-u", "cli-probe", "--no-pager", "-q", "-o", "cat")
        assert journal.returncode == 0 and "Started cli-probe.service" in journal.stdout, journal
        # systemd-logind runs (dbus is there); launches open no logind session (no pam_systemd).
        login = pywsl(
            *AS_ROOT, "loginctl --no-legend list-sessions; echo rc=$?; systemctl is-active systemd-logind"
        )
        assert login.stdout.splitlines()[-2:] == ["rc=0", "active"], login
        # [boot] command ran in systemd's world (pid 1 was systemd when it ran); bounded wait for it.
        boot = pywsl(
            *AS_ROOT,
            f"i=0; until [ -f {BOOT_PROBE} ] || [ $i -ge 100 ]; do sleep 0.1; i=$((i+1)); done; "
            f"cat {BOOT_PROBE}",
        )
        assert boot.stdout == "systemd\n", boot
        assert _instance_processes(pywsl) and _vm_instance_groups(pywsl)

        stopped = pywsl("-t", "SdCli")
        assert stopped.returncode == 0, stopped
        # Nothing of the instance is left: no process in its pid namespace, no cgroup of it.
        assert wait_until(lambda: not _instance_processes(pywsl), 15), _instance_processes(pywsl)
        assert wait_until(lambda: not _vm_instance_groups(pywsl), 10), _vm_instance_groups(pywsl)
        listing = pywsl("--list", "--running", "--quiet")
        assert "SdCli" not in listing.stdout, listing
    finally:
        pywsl("--shutdown", "--force")
        pywsl("--unregister", "SdCli")
    assert wait_until(lambda: not find_groups(functools.partial(is_cgroup_of, pywsl.vm_runtime)), 10)
