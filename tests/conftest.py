"""Shared fixtures: a busybox root filesystem and utility VMs that always shut down and clean up.

The VM tests run the real thing: Linux namespaces, cgroups and the host's static busybox
(Debian's ``busybox-static``). Every VM gets its own runtime folder and short idle timeouts; the
``vm_factory`` fixture shuts each one down (forced) at the end and checks that nothing of it is
left: no process, no runtime file, no cgroup named for its runtime folder in any hierarchy.
"""

from __future__ import annotations

import contextlib
import functools
import os
import select
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict, Unpack

import pytest
from busybox_images import BUSYBOX, build_busybox_rootfs, own_tree
from run_folders import run_folder

# Line coverage per package, every process the tests start included (--no-coverage to skip).
pytest_plugins = ("coverage_report",)

if TYPE_CHECKING:
    from pywsl.vm import CoreInstance, CoreVm, VmConfig
    from pywsl.vm.idmap import IdMap

# Every process the tests start (the CLI, the service, the VM's host side) runs this checkout,
# whatever copy of pywsl is installed in the environment running the tests.
REPOSITORY = Path(__file__).resolve().parents[1]
os.environ["PYTHONPATH"] = os.pathsep.join(
    [
        str(REPOSITORY),
        *(
            item
            for item in os.environ.get("PYTHONPATH", "").split(os.pathsep)
            if item and item != str(REPOSITORY)
        ),
    ]
)


def pid_alive(pid: int) -> bool:
    """True while ``pid`` is a live process (a zombie awaiting its parent counts as gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return text.rpartition(")")[2].split()[0] != "Z"


def pid_gone(pid: int) -> bool:
    return not pid_alive(pid)


def wait_until(condition: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def vm_processes(vm_pid: int) -> set[int]:
    """Host pids of every process whose ancestry leads to ``vm_pid`` (the VM's pid 1), itself included."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                text = Path(f"/proc/{entry}/stat").read_text()
                parents[int(entry)] = int(text.rpartition(")")[2].split()[1])
    found = {vm_pid} if vm_pid in parents else set()
    changed = True
    while changed:
        changed = False
        for pid, parent in parents.items():
            if parent in found and pid not in found:
                found.add(pid)
                changed = True
    return found


def host_pid(vm_pid1: int, pid_in_vm: int) -> int:
    """The host pid of the VM process ``pid_in_vm`` (NSpid of a descendant of the VM's pid 1)."""
    for pid in vm_processes(vm_pid1):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("NSpid:"):
                    numbers = [int(item) for item in line.split()[1:]]
                    if len(numbers) >= 2 and numbers[1] == pid_in_vm:
                        return pid
    raise LookupError(f"no VM process {pid_in_vm}")


def mount_points() -> set[str]:
    return {line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()}


@dataclass
class RunResult:
    code: int
    stdout: str
    stderr: str


def run_in(
    instance: CoreInstance,
    command: str,
    *,
    user: str = "",
    stdin: bytes = b"",
    timeout: float = 20.0,
    default_uid: int = 0,
) -> RunResult:
    """Run ``/bin/sh -c command`` in a distribution (through its session leader) and collect its
    output; `default_uid` is the request's DefaultUid (the registration's default user)."""
    from pywsl.vm import ProcessRequest
    from pywsl.wire import schema
    from pywsl.wire.channel import MessageChannel

    exit_schema = schema("LX_INIT_PROCESS_EXIT_STATUS")
    stdin_read, stdin_write = os.pipe()
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    control_ours, control_theirs = socket.socketpair()
    exit_ours, exit_theirs = socket.socketpair()
    request = ProcessRequest(
        filename="/bin/sh",
        command_line=["sh", "-c", command],
        cwd="/",
        environment=["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
        username=user,
        default_uid=default_uid,
        login_shell=False,
        console=(False, False, False),
        rows=0,
        columns=0,
    )
    try:
        instance.create_process(
            request,
            (stdin_read, out_write, err_write),
            control_theirs.fileno(),
            exit_theirs.fileno(),
        )
    finally:
        for fd in (stdin_read, out_write, err_write):
            os.close(fd)
        control_theirs.close()
        exit_theirs.close()
    with contextlib.suppress(BrokenPipeError):
        os.write(stdin_write, stdin)
    os.close(stdin_write)
    outputs = {out_read: bytearray(), err_read: bytearray()}
    deadline = time.monotonic() + timeout
    open_fds = set(outputs)
    channel = MessageChannel(exit_ours, name="exit")
    code: int | None = None
    try:
        while open_fds or code is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{command!r} did not finish")
            watched = [*open_fds, *([channel.fileno()] if code is None else [])]
            ready, _, _ = select.select(watched, [], [], remaining)
            for fd in ready:
                if fd == channel.fileno():
                    message, _fds = channel.receive(exit_schema, timeout=remaining)
                    code = int(message.ExitCode)
                    channel.send(exit_schema, ExitCode=code)
                    continue
                chunk = os.read(fd, 65536)
                if chunk:
                    outputs[fd] += chunk
                else:
                    open_fds.discard(fd)
    finally:
        channel.close()
        control_ours.close()
        os.close(out_read)
        os.close(err_read)
    return RunResult(
        code, outputs[out_read].decode(errors="replace"), outputs[err_read].decode(errors="replace")
    )


@pytest.fixture(scope="session")
def busybox_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An unowned busybox tree, copied by the rootfs fixtures (building one takes a few ms)."""
    if not BUSYBOX.is_file():
        pytest.skip("needs a static /bin/busybox (busybox-static)")
    return build_busybox_rootfs(tmp_path_factory.mktemp("template") / "rootfs")


def _default_config(runtime_dir: Path, owner: tuple[int, int] = (0, 0)) -> VmConfig:
    from pywsl.vm import VmConfig
    from pywsl.vm.idmap import maps_for_owner

    uid_map, gid_map = maps_for_owner(*owner)
    return VmConfig(
        owner_uid=owner[0],
        owner_gid=owner[1],
        runtime_dir=runtime_dir,
        uid_map=uid_map,
        gid_map=gid_map,
        networking_mode="mirrored",
        hostname="pywsl-test",
        memory_bytes=None,
        processors=None,
        vm_idle_timeout_ms=-1,
        instance_idle_timeout_ms=-1,
    )


class VmConfigChanges(TypedDict, total=False):
    """Fields of ``VmConfig`` a test sets differently from the test defaults (the same names and types)."""

    owner_uid: int
    owner_gid: int
    runtime_dir: Path
    uid_map: IdMap
    gid_map: IdMap
    networking_mode: str
    hostname: str
    memory_bytes: int | None
    processors: int | None
    vm_idle_timeout_ms: int
    instance_idle_timeout_ms: int
    backend: str
    kernel_boot_timeout_ms: int
    distribution_start_timeout_ms: int
    swap_bytes: int | None
    nested_virtualization: bool
    gpu_support: bool
    gpu_libraries: tuple[tuple[str, str], ...]
    lxcfs: str | None


@dataclass
class BootedVm:
    vm: CoreVm
    config: VmConfig
    pid: int  # host pid of the VM's pid 1
    monitor: int
    cgroups: list[Path]

    @property
    def runtime_dir(self) -> Path:
        return Path(self.config.runtime_dir)


class VmFactory:
    """Boots VMs with test settings and tears every one of them down."""

    def __init__(self, tmp_path: Path, template: Path) -> None:
        self.tmp_path = tmp_path
        self.template = template
        self.booted: list[BootedVm] = []
        self.runtime_roots: list[Path] = []

    def config(self, *, owner: tuple[int, int] = (0, 0), **changes: Unpack[VmConfigChanges]) -> VmConfig:
        root = run_folder("t-")
        self.runtime_roots.append(root)
        return replace(_default_config(root / "vm", owner), **changes)

    def boot(
        self,
        config: VmConfig | None = None,
        *,
        owner: tuple[int, int] = (0, 0),
        **changes: Unpack[VmConfigChanges],
    ) -> BootedVm:
        from pywsl.vm import CoreVm
        from pywsl.vm.backends.namespaces import read_pid_file

        config = config or self.config(owner=owner, **changes)
        vm = CoreVm.boot(config)
        pids = read_pid_file(Path(config.runtime_dir))
        assert pids is not None
        booted = BootedVm(vm, config, pids[0], pids[1], self._cgroups(pids[0]))
        self.booted.append(booted)
        return booted

    @staticmethod
    def _cmdline(pid: int) -> list[str]:
        with contextlib.suppress(OSError):
            return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        return []

    def _cgroups(self, pid: int) -> list[Path]:
        arguments = self._cmdline(pid)
        return [Path(arguments[index + 1]) for index, item in enumerate(arguments[:-1]) if item == "--cgroup"]

    def rootfs(
        self,
        name: str = "rootfs",
        *,
        vm: BootedVm | None = None,
        os_release: str | None = None,
        wsl_conf: str | None = None,
    ) -> Path:
        """A copy of the busybox tree owned by the VM's root (of ``vm``, or of the default maps)."""
        from pywsl.vm.idmap import host_id

        config = vm.config if vm is not None else _default_config(Path("/nonexistent"))
        path = self.tmp_path / name
        shutil.copytree(self.template, path, symlinks=True)
        if os_release is not None:
            (path / "etc/os-release").write_text(os_release)
        if wsl_conf is not None:
            (path / "etc/wsl.conf").write_text(wsl_conf)
        uid_map, gid_map = config.uid_map, config.gid_map
        own_tree(path, lambda inside: (host_id(uid_map, inside), host_id(gid_map, inside)))
        return path

    def teardown(self) -> list[str]:
        from pywsl.vm.backends.namespaces import NamespacesBackend, is_cgroup_of
        from pywsl.vm.cgroups import find_groups

        problems: list[str] = []
        backend = NamespacesBackend()
        for booted in self.booted:
            with contextlib.suppress(Exception):
                booted.vm.close()
            backend.kill(booted.runtime_dir)
            if not backend.wait_stopped(booted.runtime_dir, 10):
                problems.append(f"VM {booted.pid} did not stop")
            wait_until(functools.partial(pid_gone, booted.monitor), 10)  # it removes the cgroups last
            leftovers = [pid for pid in vm_processes(booted.pid) if pid_alive(pid)]
            if leftovers or pid_alive(booted.monitor):
                problems.append(f"processes left behind: {leftovers} (monitor {booted.monitor})")
            for name in ("mini_init.sock", "mini_init.pid"):
                if (booted.runtime_dir / name).exists():
                    problems.append(f"{name} left behind")
            for path in booted.cgroups:
                if path.exists():
                    problems.append(f"cgroup {path} left behind")
            for path in find_groups(functools.partial(is_cgroup_of, booted.runtime_dir)):
                problems.append(f"cgroup {path} left behind")
        for root in self.runtime_roots:
            shutil.rmtree(root, ignore_errors=True)
        return problems


@pytest.fixture
def vm_factory(tmp_path: Path, busybox_template: Path) -> Iterator[VmFactory]:
    factory = VmFactory(tmp_path, busybox_template)
    try:
        yield factory
    finally:
        problems = factory.teardown()
    assert not problems, problems


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """The random order's seed, also under -q, so that a failing order can be replayed."""
    seed = getattr(config.option, "randomly_seed", None)
    if isinstance(seed, int) and getattr(config.option, "randomly_reorganize", True):
        terminalreporter.write_line(f"random order seed {seed}: --randomly-seed={seed} replays this order")
