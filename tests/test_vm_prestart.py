"""A cold quick launch starts the VM's interpreter ahead of the boot (`namespaces_prestart`).

Root's quick launch that finds no VM starts the guest's `vm_prestart` at once (`python -S -P -c`); the
full path's boot (`NamespacesBackend`) hands it the boot arguments, the listening socket and the log.
Here, on a real VM: the cold launch's results are the full path's, the VM is the prestarted
interpreter (its command line), it holds none of the caller's descriptors or its folder, the log has
everything the VM wrote, and an interpreter that no boot takes is ended.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from busybox_images import BUSYBOX, busybox_archive
from coverage_report import passed_on
from private_registry import private_environment
from run_folders import run_folder

import pywsl as pywsl_package
from pywsl.guest import vm_monitor
from pywsl.guest.vm_prestart import boot_arguments_from
from pywsl.vm import CoreVm, VmError
from pywsl.vm.backends import namespaces_prestart
from pywsl.vm.backends.namespaces import is_cgroup_of
from pywsl.vm.cgroups import find_groups

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the in-process launch runs the VM as root"),
    pytest.mark.skipif(not BUSYBOX.is_file(), reason="needs a static /bin/busybox (busybox-static)"),
]

REPO = Path(pywsl_package.__file__).resolve().parent.parent
PYWSL = [sys.executable, str(REPO / "scripts" / "pywsl")]
GUEST_START = [sys.executable, "-S", "-P", "-c", namespaces_prestart.PRESTART_CODE]


class Box:
    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder = folder
        self.env = env
        self.runtime = folder / "run" / "0"

    def run(
        self,
        *args: str,
        cwd: Path | None = None,
        pass_fds: tuple[int, ...] = (),
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [*PYWSL, *args],
            env={**self.env, **(env or {})},
            cwd=cwd or self.folder,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
            check=False,
            pass_fds=pass_fds,
        )

    def vm_pids(self) -> tuple[int, int]:
        mini_init, monitor = (self.runtime / "mini_init.pid").read_text().split()
        return int(mini_init), int(monitor)

    def shutdown(self) -> None:
        stopped = self.run("--shutdown")
        assert stopped.returncode == 0, stopped.stderr.decode()


@pytest.fixture(scope="module")
def box() -> Iterator[Box]:
    folder = run_folder("prestart-")
    folder.chmod(0o755)
    made = Box(folder, {**private_environment(folder, REPO), **passed_on()})
    try:
        archive = busybox_archive(folder / "box.tar")
        imported = made.run("--import", "Box", str(folder / "box"), str(archive))
        assert imported.returncode == 0, imported.stderr.decode()
        yield made
    finally:
        made.run("--shutdown", "--force")
        shutil.rmtree(folder, ignore_errors=True)


def _command_line(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


def _vm_groups(pid: int) -> set[str]:
    """The groups of a VM (named pywsl-<uid>-<digest>) that process `pid` is in."""
    lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    return {line for line in lines if "/pywsl-" in line.partition(":")[2].partition(":")[2]}


# The quick path boots with the interpreter; with a display in the environment the full path runs
# the launch from the start, and its boot takes the interpreter all the same.
@pytest.mark.parametrize("env", [{}, {"DISPLAY": "/nowhere:99"}], ids=["quick", "full"])
def test_a_cold_launch_boots_with_the_prestarted_interpreter(box: Box, env: dict[str, str]) -> None:
    box.shutdown()
    cold = box.run("-d", "Box", "--", "echo cold; echo err >&2; exit 4", env=env)
    assert (cold.returncode, cold.stdout, cold.stderr) == (4, b"cold\n", b"err\n")
    mini_init, monitor = box.vm_pids()
    for pid in (mini_init, monitor):
        line = _command_line(pid)
        assert line[1:5] == ["-S", "-P", "-c", namespaces_prestart.PRESTART_CODE], line
        assert line[5:7] == ["--runtime-dir", str(box.runtime)], line
        assert os.readlink(f"/proc/{pid}/cwd") == "/"
    log = (box.runtime / "mini_init.log").read_text()
    assert "utility VM ready" in log and "distribution Box started" in log, log
    # The VM is in its groups from its first process on (the host moved the interpreter before it
    # forked); its monitor, the host's side, leaves them for the groups they were made in.
    groups = _vm_groups(mini_init)
    assert any(line.startswith("0::") for line in groups), groups
    deadline = time.monotonic() + 10
    while _vm_groups(monitor) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _vm_groups(monitor) == set()
    warm = box.run("-d", "Box", "--", "echo warm")
    assert (warm.returncode, warm.stdout) == (0, b"warm\n")
    box.shutdown()  # and the groups go with the VM
    assert find_groups(lambda name: is_cgroup_of(box.runtime, name)) == []


def test_the_previous_log_is_set_aside_and_removed_once_the_vm_serves(box: Box) -> None:
    """A boot does not truncate the previous VM's log (freeing its blocks may wait for the disk):
    it is set aside, and the new VM's monitor removes it once the VM's first start is over."""
    box.shutdown()
    log = box.runtime / "mini_init.log"
    log.write_text("the previous VM's last words\n")
    cold = box.run("-d", "Box", "--", "true")
    assert cold.returncode == 0, cold.stderr.decode()
    assert "previous VM" not in log.read_text() and "utility VM ready" in log.read_text()
    previous = box.runtime / "mini_init.log.previous"
    deadline = time.monotonic() + 20
    while previous.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not previous.exists()


def test_the_host_and_the_vm_monitor_name_the_runtime_files_alike() -> None:
    """The guest may not import the VM layer (`pywsl.vm.runtime_names`): its names are kept twice."""
    from pywsl.vm import runtime_names

    assert (vm_monitor.SOCKET_NAME, vm_monitor.PID_FILE_NAME, vm_monitor.PREVIOUS_LOG_NAME) == (
        runtime_names.SOCKET_NAME,
        runtime_names.PID_FILE_NAME,
        runtime_names.PREVIOUS_LOG_NAME,
    )


def test_a_boot_sets_the_previous_log_aside(tmp_path: Path) -> None:
    from pywsl.vm.backends.namespaces import _new_log

    log, previous = tmp_path / "mini_init.log", tmp_path / "mini_init.log.previous"
    fd = _new_log(tmp_path)  # no previous log
    os.close(fd)
    assert log.read_bytes() == b"" and not previous.exists()
    log.write_text("one\n")
    os.close(_new_log(tmp_path))
    assert (log.read_bytes(), previous.read_text()) == (b"", "one\n")
    log.write_text("two\n")
    fd = _new_log(tmp_path)  # one is set aside still: this one is truncated
    os.write(fd, b"three\n")
    os.close(fd)
    assert (log.read_text(), previous.read_text()) == ("three\n", "one\n")
    assert (log.stat().st_mode & 0o777, previous.stat().st_nlink) == (0o600, 1)


def test_the_prestarted_vm_holds_none_of_the_callers_descriptors(box: Box) -> None:
    box.shutdown()
    read_end, write_end = os.pipe()  # inheritable, as a shell's extra redirections are
    try:
        held = os.fstat(write_end)
        cold = box.run("-d", "Box", "--", "true", pass_fds=(write_end,))
        assert cold.returncode == 0, cold.stderr.decode()
        for pid in box.vm_pids():
            for name in os.listdir(f"/proc/{pid}/fd"):
                with_fd = os.stat(f"/proc/{pid}/fd/{name}")
                assert (with_fd.st_dev, with_fd.st_ino) != (held.st_dev, held.st_ino)
        os.close(write_end)
        write_end = -1
        assert os.read(read_end, 1) == b""  # nobody else holds the write end: the VM does not
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


def test_a_cold_launch_from_a_folder_with_a_pywsl_package_does_not_import_it(box: Box) -> None:
    box.shutdown()
    trap = box.folder / "trap"
    (trap / "pywsl" / "guest").mkdir(parents=True, exist_ok=True)
    marker = box.folder / "trap-ran"
    for package in (trap / "pywsl", trap / "pywsl" / "guest"):
        (package / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (trap / "pywsl" / "guest" / "vm_prestart.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    try:
        cold = box.run("-d", "Box", "--", "echo ok", cwd=trap)
        assert (cold.returncode, cold.stdout) == (0, b"ok\n"), cold.stderr.decode()
        assert not marker.exists()
    finally:
        shutil.rmtree(trap)


# -- the host side without a boot -----------------------------------------------------------------

ABANDON = """
import sys
from pywsl.vm.backends import namespaces_prestart
namespaces_prestart.begin(sys.argv[1])
pending = namespaces_prestart._pending
print(pending.process.pid, len(pending.groups), flush=True)  # the VM's groups, made at once
if sys.argv[2] == "vanish-at-once":  # gone before it was even moved into them
    import os
    os._exit(0)
if sys.argv[2] == "killed-with-its-group":  # as a terminal's ^C or a supervisor ends a job
    import os, signal
    os.killpg(0, signal.SIGKILL)
assert pending.grouped()  # ... and it moved into them
if sys.argv[2] == "other-folder":
    assert namespaces_prestart.take(sys.argv[1] + "-other", namespaces_prestart.vm_environment()) is None
if sys.argv[2] == "vanish":  # gone without ending it: the interpreter leaves its groups itself
    import os
    os._exit(0)
"""


@pytest.mark.parametrize("how", ["exit", "other-folder", "vanish", "vanish-at-once", "killed-with-its-group"])
def test_an_interpreter_no_boot_takes_is_ended(tmp_path: Path, how: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", ABANDON, str(tmp_path / "run"), how],
        env=env,
        capture_output=True,
        timeout=60,
        start_new_session=True,  # (its own process group, which one case kills)
    )
    assert done.returncode == (-signal.SIGKILL if how == "killed-with-its-group" else 0), done.stderr
    pid, groups = (int(item) for item in done.stdout.split())
    assert groups > 0
    deadline = time.monotonic() + 20  # (a vanished launch: until the interpreter sees it and leaves)
    while find_groups(lambda name: is_cgroup_of(tmp_path / "run", name)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert find_groups(lambda name: is_cgroup_of(tmp_path / "run", name)) == []  # gone with it
    # Once ended and reaped, the pid is gone (or someone else's); a vanished launch's interpreter
    # removes its groups just before it exits.
    while _still_prestarted(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _still_prestarted(pid)


def _still_prestarted(pid: int) -> bool:
    try:
        return "pywsl.guest.vm_prestart" in _command_line(pid)
    except OSError:
        return False


def test_the_guest_side_ends_quietly_without_arguments() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, theirs:
        env = {**namespaces_prestart.vm_environment()}
        process = subprocess.Popen(
            [*GUEST_START, "--runtime-dir", "/nonexistent", "--handoff-fd", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            env=env,
            cwd="/",
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        theirs.close()
        ours.close()  # the host went away
        stdout, stderr = process.communicate(timeout=60)
    assert (process.returncode, stdout, stderr) == (0, b"", b"")


def test_no_interpreter_is_started_while_the_vm_runs(box: Box) -> None:
    assert box.run("-d", "Box", "--", "true").returncode == 0  # running now
    probe = (
        "from pywsl.api.session import cold_start\n"
        "from pywsl.vm.backends import namespaces_prestart\n"
        "cold_start.prestart_if_no_vm()\n"
        "print(namespaces_prestart._pending is None)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], env=box.env, capture_output=True, timeout=60, check=True
    )
    assert done.stdout == b"True\n"
    box.shutdown()
    done = subprocess.run(
        [sys.executable, "-c", probe], env=box.env, capture_output=True, timeout=60, check=True
    )
    assert done.stdout == b"False\n"  # and ended as that process exits


def test_a_hand_over_to_an_ended_interpreter_says_so(tmp_path: Path) -> None:
    namespaces_prestart.begin(str(tmp_path / "run"))
    pending = namespaces_prestart.take(str(tmp_path / "run"), namespaces_prestart.vm_environment())
    assert pending is not None
    os.kill(pending.process.pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while pending.process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    read_end, write_end = os.pipe()
    try:
        assert not pending.hand_over(
            ["--runtime-dir", str(tmp_path / "run"), "--listen-fd", "3"], read_end, write_end
        )
    finally:
        os.close(read_end)
        os.close(write_end)
    assert pending.process.returncode == -signal.SIGKILL
    pending.end()  # no boot comes: the groups made for it go
    assert find_groups(lambda name: is_cgroup_of(tmp_path / "run", name)) == []


# -- the VM's word that it serves -------------------------------------------------------------------


def _prestarted(handoff: socket.socket) -> namespaces_prestart.Prestarted:
    """A handed-over interpreter stand-in: a real child (it exits at once) and the host's socket."""
    pid = os.posix_spawn("/bin/true", ["/bin/true"], {})  # (a Popen object would reap it itself)
    process = namespaces_prestart.PrestartedProcess(pid, ["/bin/true"])
    return namespaces_prestart.Prestarted(process, "/run/x", {}, handoff)


def test_the_host_hears_from_the_monitor_that_the_vm_serves() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with theirs:
        pending = _prestarted(ours)
        vm_monitor._notify_ready(os.dup(theirs.fileno()))
        assert pending.serving_within(5.0)
        assert ours.fileno() == -1  # closed once heard
    # The interpreter exits by itself; it is reaped as this process leaves (`discard`).
    assert pending.process in namespaces_prestart._handed_over
    deadline = time.monotonic() + 10
    while pending.process in namespaces_prestart._handed_over and time.monotonic() < deadline:
        namespaces_prestart.discard()
        time.sleep(0.01)
    assert pending.process.returncode == 0


@pytest.mark.parametrize("peer", ["closes", "stays silent"])
def test_no_word_from_the_monitor_is_no_vm(peer: str) -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with theirs:
        pending = _prestarted(ours)
        if peer == "closes":
            vm_monitor._notify_ready(-1)  # nothing to tell
            theirs.close()
        assert not pending.serving_within(0.2)
    assert pending.process not in namespaces_prestart._handed_over
    assert pending.process.wait(10) == 0


def test_a_host_that_went_away_does_not_stop_the_monitor() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.close()
    with theirs:
        vm_monitor._notify_ready(theirs.detach())  # EPIPE (SIGPIPE is ignored): quietly dropped


@pytest.mark.parametrize(
    ("uid_map", "reason"),
    [
        ([(0, 0xFFFFFFF0, 65536)], "not a valid id range"),  # the interpreter refuses the arguments
        ([(0, 1 << 30, 65536), (100, 1 << 29, 10)], "uid_map"),  # the kernel refuses the monitor's map
    ],
)
def test_a_prestarted_boot_that_fails_says_why_at_once(
    vm_factory: object, uid_map: list[tuple[int, int, int]], reason: str
) -> None:
    """The handoff socket ends without the monitor's word: the interpreter's exit status and the
    log say why, long before the boot's time limit."""
    from conftest import VmFactory

    assert isinstance(vm_factory, VmFactory)
    config = vm_factory.config(uid_map=uid_map, kernel_boot_timeout_ms=60_000)
    namespaces_prestart.begin(str(config.runtime_dir))
    assert namespaces_prestart._pending is not None
    started = time.monotonic()
    with pytest.raises(VmError, match="did not start") as failure:
        CoreVm.boot(config)
    assert time.monotonic() - started < 30
    assert reason in str(failure.value)
    assert namespaces_prestart._pending is None  # the boot took the prestarted interpreter
    # What the failed VM left goes (the monitor's cleaning child waits for the boot's lock).
    deadline = time.monotonic() + 20
    runtime = Path(config.runtime_dir)
    while time.monotonic() < deadline and (
        (runtime / "mini_init.sock").exists() or find_groups(lambda name: is_cgroup_of(runtime, name))
    ):
        time.sleep(0.05)
    assert not (runtime / "mini_init.sock").exists()
    assert find_groups(lambda name: is_cgroup_of(runtime, name)) == []


def test_the_interpreter_started_ahead_becomes_the_vms_monitor(vm_factory: object) -> None:
    """No fork of the loaded interpreter on the cold launch's way: the process the launch started
    ahead is the VM's monitor (second line of the pid file), a child of this process that lives
    as long as the VM, and the VM stops as any other."""
    from conftest import VmFactory

    assert isinstance(vm_factory, VmFactory)
    config = vm_factory.config()
    namespaces_prestart.begin(str(config.runtime_dir))
    pending = namespaces_prestart._pending
    assert pending is not None
    booted = vm_factory.boot(config)
    assert booted.monitor == pending.process.pid
    assert pending.process.poll() is None  # still running: the VM's monitor
    assert Path(f"/proc/{booted.monitor}/comm").read_text().strip() == "pywsl-vm"
    booted.vm.shutdown()
    assert pending.process.wait(20) == 0  # it ends with the VM
    assert not (Path(config.runtime_dir) / "mini_init.pid").exists()


def test_the_vm_finds_construct_where_the_import_system_does() -> None:
    spec = importlib.util.find_spec("construct")
    assert spec is not None and spec.origin is not None
    expected = os.path.dirname(os.path.dirname(os.path.realpath(spec.origin)))
    assert namespaces_prestart.vm_environment()["PYTHONPATH"].split(os.pathsep) == [str(REPO), expected]


# -- the boot arguments handed over ---------------------------------------------------------------


def test_the_listening_socket_is_named_by_its_number_on_the_guest_side() -> None:
    payload = b"--runtime-dir\0/run/x\0--listen-fd\0009\0--hostname\0h"
    assert boot_arguments_from(payload, 4, "/run/x") == [
        "--runtime-dir",
        "/run/x",
        "--listen-fd",
        "4",
        "--hostname",
        "h",
    ]


@pytest.mark.parametrize(
    "payload",
    [
        b"--runtime-dir\0/run/y\0--listen-fd\0009",  # another VM's folder
        b"--listen-fd\0009",  # no folder
        b"--runtime-dir\0/run/x",  # no socket
        b"--runtime-dir\0/run/x\0--listen-fd",  # no value
        b"--runtime-dir\0/run/x\0--listen-fd\0009\0--runtime-dir\0/run/y",  # repeated
    ],
)
def test_boot_arguments_for_another_vm_are_refused(payload: bytes) -> None:
    assert boot_arguments_from(payload, 4, "/run/x") is None
