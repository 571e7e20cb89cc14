"""What a distribution can see and do on the host, and configurations that would brick it.

A distribution's root is root of the VM's user namespace: it may unmount and remount whatever
was mounted inside that namespace. These tests attack as that root, in a real VM booted by an
in-process session (a private registry, configuration and runtime folder): the host's process
list, sysfs and device nodes must stay hidden behind ``/mnt/host`` whatever is unmounted, ``/sys``
must stay read-only, setuid and device files reached through ``/mnt/host`` must not work, a
hostile ``/etc/wsl.conf`` must never stop the distribution from starting, and a client whose VM
is killed under it must say so.
"""

from __future__ import annotations

import contextlib
import os
import platform
import select
import shutil
import signal
import stat
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from busybox_images import BUSYBOX, busybox_archive, os_release_text
from multiuser_support import ServiceProcess, User, Workspace, as_user, user_env
from run_folders import run_folder

import pywsl
from pywsl.api.session import user_warnings
from pywsl.api.session.user_session import UserSession
from pywsl.vm.idmap import host_id, maps_for_owner

pytestmark = pytest.mark.skipif(not BUSYBOX.is_file(), reason="needs a static /bin/busybox (busybox-static)")

DISTRO = "Guest"
ALICE_UID = 1000  # the busybox distribution's ordinary user
SETTINGS = ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "PYWSL_RUNTIME_ROOT", "PYWSL_CONFIG")


@contextlib.contextmanager
def private_session(networking: str = "mirrored") -> Iterator[tuple[UserSession, Path]]:
    """A session on its own registry, configuration and runtime folder, with one busybox distribution."""
    folder = run_folder("guest-sec-")
    saved = {name: os.environ.get(name) for name in SETTINGS}
    os.environ.update(
        XDG_DATA_HOME=str(folder / "data"),
        XDG_CONFIG_HOME=str(folder / "config"),
        PYWSL_RUNTIME_ROOT=str(folder / "run"),
    )
    os.environ.pop("PYWSL_CONFIG", None)
    (folder / "config" / "pywsl").mkdir(parents=True)
    (folder / "config" / "pywsl" / "wslconfig").write_text(
        f"[wsl2]\nvmIdleTimeout=-1\nnetworkingMode={networking}\n[general]\ninstanceIdleTimeout=-1\n"
    )
    session = UserSession()
    try:
        archive = folder / "busybox.tar.gz"
        busybox_archive(archive, compression="gz", os_release=os_release_text())
        session.register_distribution(DISTRO, archive)
        yield session, folder
    finally:
        try:
            session.shutdown(force=True)
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def session() -> Iterator[UserSession]:
    with private_session() as (opened, _folder):
        yield opened


def run(session: UserSession, command: str, *, user: str = "", stdin: bytes = b"") -> tuple[int, str]:
    """``sh -c command`` in the distribution: (exit status, stdout and stderr together)."""
    process = session.create_lx_process(
        DISTRO,
        [command],
        username=user,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    output, _ = process.communicate(stdin, timeout=60)
    return process.wait(), (output or b"").decode(errors="replace")


def start_with_warnings(session: UserSession) -> tuple[int, str, list[str]]:
    """Stop the distribution, start it again with ``echo started``: (status, output, warnings)."""
    session.terminate_distribution(DISTRO)
    warnings: list[str] = []
    with user_warnings.collecting(warnings.append):
        code, output = run(session, "echo started")
    return code, output, warnings


def restore(session: UserSession, command: str) -> None:
    """Undo a test's change to the root filesystem and stop the instance that started with it, so
    that the next test (in any order) gets an instance started from the restored files."""
    code, output = run(session, command)
    assert code == 0, output
    session.terminate_distribution(DISTRO)


# -- 1. the host's state behind /mnt/host -------------------------------------------------------------

HOST_TREE_TARGETS = (
    "/mnt/host/proc",
    "/mnt/host/sys",
    "/mnt/host/dev",
    "/mnt/host/sys/fs/cgroup",
    "/mnt/host/dev/pts",
    "/mnt/host/dev/shm",
    "/mnt/host/proc/sys/fs/binfmt_misc",
)
# The distribution's own filesystems: launching anything new needs them, so they are all attacked in
# one shell, which then looks for the host.
OWN_TARGETS = ("/sys/fs/cgroup", "/sys", "/dev/pts", "/dev", "/proc")
UNMOUNT_FORMS = ("umount {0}", "umount {0}", "umount -l {0}", "umount -f {0}", "umount -l {0}")
# Prints the pids of every proc in sight, '#', what the host tree's sys and dev masks hold, '#',
# every command line in sight.
PROBE = (
    "ls -1 /mnt/host/proc /proc; echo '#'; ls -A /mnt/host/sys; ls -A /mnt/host/dev; echo '#'; "
    "cat /mnt/host/proc/*/cmdline /proc/*/cmdline | tr '\\0' ' '"
)


def _host_traces(output: str) -> list[str]:
    """What of the host the PROBE's output shows: this test's pid or the VM's pid 1 in any proc
    listing, anything at all in the masked ``sys`` and ``dev`` of the host tree."""
    pids, masked, command_lines = output.split("#\n", 2)
    traces = [f"host pid {os.getpid()}"] if str(os.getpid()) in pids.split() else []
    if masked.strip():
        traces.append(f"host files: {masked.strip()[:200]}")
    traces += [word for word in ("pytest", "pywsl.guest.mini_init") if word in command_lines]
    return traces


def test_unmounting_never_reveals_the_host(session: UserSession) -> None:
    assert _host_traces(run(session, PROBE)[1]) == []
    code, table = run(session, "cat /proc/self/mountinfo")
    assert code == 0
    points = {line.split()[4] for line in table.splitlines()}
    assert {"/mnt/host/proc", "/mnt/host/sys", "/mnt/host/dev"} <= points  # the masks to attack
    for target in HOST_TREE_TARGETS:
        for form in UNMOUNT_FORMS:
            command = form.format(target)
            assert _host_traces(run(session, f"{command}; {PROBE}")[1]) == [], command
    # The masks cannot be moved away, nor bound elsewhere without them.
    attempts = (
        "mkdir -p /run/x && mount --move /mnt/host/proc /run/x",
        "mkdir -p /run/x && mount --move /mnt/host/sys /run/x",
        "mkdir -p /run/y && mount --bind /mnt/host /run/y",
        "mkdir -p /run/z && mount --rbind /mnt/host /run/z && umount /run/z/proc && umount /run/z/proc",
    )
    for attempt in attempts:
        assert run(session, attempt)[0] != 0, attempt
    listing = run(session, "ls -A /run/z/proc /run/z/sys /run/z/dev; umount -l /run/z")[1]
    assert str(os.getpid()) not in listing.split() and "block" not in listing.split()
    # A new mount namespace (and a new user namespace inside it) keeps them locked too.
    for prefix in ("unshare -m", "unshare -m -U -r"):
        command = "; ".join(form.format("/mnt/host/proc") for form in UNMOUNT_FORMS)
        output = run(session, f'{prefix} sh -c "{command}; {PROBE}"')[1]
        assert _host_traces(output) == [], (prefix, output)
    own = "; ".join(form.format(target) for target in OWN_TARGETS for form in UNMOUNT_FORMS)
    output = run(session, f"{own}; {PROBE}")[1]
    assert _host_traces(output) == [], output
    session.terminate_distribution(DISTRO)  # its own /proc, /sys and /dev are gone


# -- 2. /sys stays read-only ----------------------------------------------------------------------------

REMOUNTS = (
    "mount -o remount,bind,rw /sys",
    "mount -o remount,rw /sys",
    "mount -o remount,bind,rw /proc/sys",
    "mount -o remount,rw /proc/sys",
    "mount -o remount,bind,rw /sys/fs/cgroup",
    "mount -o remount,rw /sys/fs/cgroup",
    "mount -o remount,bind,rw /mnt/host/sys",
    "mount -o remount,rw /mnt/host/dev",
)


def _sys_stays_read_only(session: UserSession, with_cgroup: bool) -> None:
    for command in REMOUNTS:
        if "cgroup" in command and not with_cgroup:
            continue
        code, output = run(session, command)
        assert code != 0, (command, output)
    code, output = run(session, "touch /sys/pywsl-probe; grep ' /sys ' /proc/self/mountinfo")
    assert "Read-only file system" in output and " /sys ro" in output, output
    # Binding /proc/sys again and making that rw gives no write access to the host's settings.
    code, output = run(
        session,
        "mount --bind /proc/sys /proc/sys; mount -o remount,bind,rw /proc/sys; "
        "echo 1 > /proc/sys/vm/drop_caches && echo wrote",
    )
    assert "wrote" not in output
    # A fresh sysfs, read-only or not, cannot be had either once /sys is gone.
    code, output = run(
        session,
        "umount /sys; mount -t sysfs sysfs /sys && echo mounted-rw; mount -t sysfs "
        "-o ro sysfs /sys && mount -o remount,rw /sys && echo remounted",
    )
    assert "mounted-rw" not in output and "remounted" not in output, output


def test_sys_cannot_be_made_writable(session: UserSession) -> None:
    _sys_stays_read_only(session, with_cgroup=True)
    session.terminate_distribution(DISTRO)


def test_sys_cannot_be_made_writable_without_the_host_network() -> None:
    with private_session("none") as (isolated, _folder):
        assert run(isolated, "ls /sys/class/net")[1].split() == ["lo"]  # its own sysfs instance
        _sys_stays_read_only(isolated, with_cgroup=False)


# -- 3. setuid and device files reached through /mnt/host ------------------------------------------------


def _euid_program() -> bytes:
    """A static ELF that exits with its effective uid (mod 256): geteuid(), then exit()."""
    machine = platform.machine()
    if machine == "x86_64":
        e_machine, code = 0x3E, bytes.fromhex("b86b0000000f0589c7b83c0000000f05")
    elif machine == "aarch64":
        e_machine, code = 0xB7, struct.pack("<4I", 0xD28015E8, 0xD4000001, 0xD2800BA8, 0xD4000001)
    else:
        pytest.skip(f"no euid probe program for {machine}")
    base, header_size = 0x400000, 64 + 56
    size = header_size + len(code)
    elf = struct.pack(
        "<4sBBBB8xHHIQQQIHHHHHH",
        b"\x7fELF",
        2,
        1,
        1,
        0,
        2,
        e_machine,
        1,
        base + header_size,
        64,
        0,
        0,
        64,
        56,
        1,
        0,
        0,
        0,
    )
    program = struct.pack("<IIQQQQQQ", 1, 5, 0, base, base, size, size, 0x1000)
    return elf + program + code


def test_setuid_and_devices_on_the_host_tree_do_nothing(session: UserSession) -> None:
    uid_map, gid_map = maps_for_owner(0, 0)
    vm_root = (host_id(uid_map, 0), host_id(gid_map, 0))
    program = _euid_program()
    # The control: the same program, setuid root in the distribution's own files, works.
    code, output = run(session, "cat > /bin/euid-probe && chmod 4755 /bin/euid-probe", stdin=program)
    assert code == 0, output
    assert run(session, "/bin/euid-probe", user="alice")[0] == 0
    shared = run_folder("setuid-")
    try:
        shared.chmod(0o755)
        probe = shared / "euid"
        probe.write_bytes(program)
        os.chown(probe, *vm_root)
        probe.chmod(0o4755)
        os.mknod(shared / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        inside = f"/mnt/host{shared}"
        assert run(session, f"{inside}/euid", user="alice")[0] == ALICE_UID % 256
        for attempt in (
            "mount -o remount,suid /mnt/host",
            "mount -o remount,bind,suid /mnt/host",
            "mount -o remount,dev /mnt/host",
            "mount -o remount,bind,dev /mnt/host",
        ):
            assert run(session, attempt)[0] != 0, attempt
        assert run(session, f"{inside}/euid", user="alice")[0] == ALICE_UID % 256
        code, output = run(session, f"echo x > {inside}/null && echo wrote")
        assert "wrote" not in output and "denied" in output, output
        table = run(session, "grep ' /mnt/host ' /proc/self/mountinfo")[1].split()
        assert {"nosuid", "nodev"} <= set(table[5].split(","))
    finally:
        shutil.rmtree(shared)
        run(session, "rm -f /bin/euid-probe")


# -- 6. configuration that would brick the distribution ---------------------------------------------------

HOSTILE_ROOTS = (
    "/proc",
    "/sys",
    "/dev",
    "/",
    "/etc",
    "/usr",
    "relative/path",
    "/mnt/../proc",
    "/proc/self",
    "/sys/fs/cgroup",
    '""',
    "/" + "a" * 5000,
    "/mnt\\x01",
)


@pytest.mark.parametrize("value", HOSTILE_ROOTS)
def test_hostile_automount_root_still_starts(session: UserSession, value: str) -> None:
    text = value.replace("\\x01", "\x01")
    code, output = run(session, "cat > /etc/wsl.conf", stdin=f"[automount]\nroot = {text}\n".encode())
    assert code == 0, output
    try:
        code, output, warnings = start_with_warnings(session)
        assert (code, output) == (0, "started\n")
        assert any("automount.root" in item for item in warnings), warnings
        assert run(session, "test -d /mnt/host/etc && echo host")[1] == "host\n"  # the default is used
    finally:
        restore(session, "rm -f /etc/wsl.conf")


BRICKING_FILES = {
    "fifo": "rm -f /etc/wsl.conf && mkfifo /etc/wsl.conf",
    "dev-zero": "rm -f /etc/wsl.conf && ln -s /dev/zero /etc/wsl.conf",
    "huge": "rm -f /etc/wsl.conf && dd if=/dev/zero of=/etc/wsl.conf bs=1 count=0 seek=2000000 2>/dev/null",
    "directory": "rm -f /etc/wsl.conf && mkdir /etc/wsl.conf",
    "mount-point-in-proc": "mv /mnt /mnt.saved && ln -s /proc /mnt",
    "missing-user": "printf '[user]\\ndefault = nobody-here\\n' > /etc/wsl.conf",
    "odd-hostname": "printf '[network]\\nhostname = -..$(reboot)\\\\n;x\\n' > /etc/wsl.conf",
    "boot-command-stops-init": "echo '[boot]' > /etc/wsl.conf && echo 'command = \"kill 1; kill -TERM 1; "
    "kill -INT 1; kill -HUP 1; kill -QUIT 1; touch /run/boot-ran\"' "
    ">> /etc/wsl.conf",
}


@pytest.mark.parametrize("name", sorted(BRICKING_FILES))
def test_hostile_wsl_conf_still_starts(session: UserSession, name: str) -> None:
    code, output = run(session, BRICKING_FILES[name])
    assert code == 0, output
    try:
        code, output, warnings = start_with_warnings(session)
        assert (code, output) == (0, "started\n"), (name, output)
        if name == "boot-command-stops-init":
            deadline = time.monotonic() + 10
            while run(session, "test -e /run/boot-ran")[0] != 0:
                assert time.monotonic() < deadline, "the boot command did not run"
            assert run(session, "echo still")[1] == "still\n"
            assert run(session, "cat /proc/1/comm")[1] == "init\n"
        elif name != "odd-hostname":
            assert warnings, name
            assert all("\n" not in item for item in warnings)
    finally:
        restore(session, "rm -rf /etc/wsl.conf; if test -L /mnt; then rm /mnt && mv /mnt.saved /mnt; fi")


# -- a client whose VM is killed -------------------------------------------------------------------------


@pytest.mark.parametrize("victim", ["mini_init", "monitor"])
def test_a_killed_vm_ends_the_client_with_a_message(victim: str) -> None:
    with private_session() as (opened, folder):
        environment = {
            **os.environ,
            "PYTHONPATH": str(Path(pywsl.__file__).resolve().parent.parent),
            "WSL_DISABLE_WARNINGS": "1",
        }
        client = subprocess.Popen(
            [sys.executable, "-m", "pywsl.cli.main", "-d", DISTRO, "--", "echo started; exec sleep 100"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=environment,
            cwd="/",
        )
        try:
            assert client.stdout is not None and client.stderr is not None
            ready, _, _ = select.select([client.stdout], [], [], 60)
            assert ready and client.stdout.readline() == b"started\n"
            pid_file = folder / "run" / str(os.getuid()) / "mini_init.pid"
            vm_pid, monitor = (int(item) for item in pid_file.read_text().split())
            os.kill(vm_pid if victim == "mini_init" else monitor, signal.SIGKILL)
            assert client.wait(timeout=60) == 1
            error = client.stderr.read().decode()
            assert error == (
                "The Windows Subsystem for Linux instance has terminated.\n"
                "Error code: Wsl/Service/CreateLxProcess/HCS_E_TERMINATED\n"
            )
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()
            for stream in (client.stdout, client.stderr):
                if stream is not None:
                    stream.close()
        # The session starts a new VM afterwards.
        assert run(opened, "echo again") == (0, "again\n")


# -- the same through the service, as an unprivileged owner ------------------------------------------------


@pytest.fixture(scope="module")
def owned_distro(workspace: Workspace, users: tuple[User, User]) -> str:
    """A busybox distribution of the first user, imported through the service."""
    archive = workspace.folder / "guest-busybox.tar.gz"
    busybox_archive(archive, compression="gz", os_release=os_release_text())
    archive.chmod(0o644)
    answer = as_user(
        workspace,
        users[0],
        {"op": "import", "name": DISTRO, "archive": str(archive), "location": str(users[0].home / "guest")},
    )
    assert "result" in answer, answer
    return DISTRO


def test_through_the_service_the_host_stays_hidden(
    workspace: Workspace, service: ServiceProcess, users: tuple[User, User], owned_distro: str
) -> None:
    assert service.process is not None
    attacks = "; ".join(form.format(target) for target in HOST_TREE_TARGETS for form in UNMOUNT_FORMS)
    command = (
        f"{{ {attacks}; }} >/dev/null 2>&1; mount -o remount,bind,rw /sys 2>/dev/null; echo sys=$?; "
        f"mount -o remount,bind,suid /mnt/host 2>/dev/null; echo suid=$?; {PROBE}"
    )
    answer = as_user(workspace, users[0], {"op": "run", "distro": owned_distro, "command": [command]})
    assert answer["result"]["code"] == 0, answer
    sys_line, suid_line, output = answer["result"]["stdout"].split("\n", 2)
    assert sys_line.startswith("sys=") and sys_line != "sys=0", sys_line
    assert suid_line.startswith("suid=") and suid_line != "suid=0", suid_line
    pids = output.split("#\n", 1)[0].split()
    assert str(service.process.pid) not in pids
    assert _host_traces(output) == [] and "pywsl.api.service.server" not in output, output


def test_through_the_service_a_killed_vm_is_reported(
    workspace: Workspace, users: tuple[User, User], owned_distro: str
) -> None:
    owner = users[0]
    client = subprocess.Popen(
        [
            str(workspace.python),
            "-m",
            "pywsl.cli.main",
            "-d",
            owned_distro,
            "--",
            "echo started; exec sleep 100",
        ],
        user=owner.uid,
        group=owner.gid,
        extra_groups=[],
        cwd=owner.home,
        env={**user_env(workspace, owner), "WSL_DISABLE_WARNINGS": "1"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert client.stdout is not None and client.stderr is not None
        ready, _, _ = select.select([client.stdout], [], [], 60)
        assert ready and client.stdout.readline() == b"started\n"
        vm_pid = int((workspace.runtime / str(owner.uid) / "mini_init.pid").read_text().split()[0])
        os.kill(vm_pid, signal.SIGKILL)
        assert client.wait(timeout=60) == 1
        assert client.stderr.read().decode() == (
            "The Windows Subsystem for Linux instance has terminated.\n"
            "Error code: Wsl/Service/CreateLxProcess/HCS_E_TERMINATED\n"
        )
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
        for stream in (client.stdout, client.stderr):
            if stream is not None:
                stream.close()
