"""The qemu backend's ``.wslconfig`` keys of its own: ``debugConsole`` (the guest console on the
booting terminal, through the relay of ``qemu_console``), ``swapFile`` (the swap disk's file, made
with the owner's rights) and ``wslpath -w`` of the distribution's own files. One VM boots for the
module, from a command whose standard error is a pseudo-terminal; the pieces are also tested on
their own, without a VM."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import select
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from busybox_images import BUSYBOX, busybox_archive
from qemu_guest_setup import ensure_kernel, ensure_qemu
from run_folders import run_folder

import pywsl as pywsl_package
from pywsl.api.session.wslconfig import parse_wslconfig
from pywsl.vm.backends.qemu_console import relay
from pywsl.vm.backends.qemu_process import QemuIdentity, named_swap_file, remove_swap_file
from pywsl.vm.errors import VmError

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="changes ids")
NOBODY = QemuIdentity(65534, 65534)
SWAP = 64 << 20
TIMEOUT = 30.0

# -- without a VM ---------------------------------------------------------------------------------


def test_debug_console_and_swap_file_are_honoured_by_the_qemu_backend_only() -> None:
    text = "[wsl2]\ndebugConsole = true\nswapFile = ~/swap.img\nswap = 64MB\n"
    qemu = parse_wslconfig(text + "[pywsl]\nbackend = qemu\n", home=Path("/home/u"))
    assert (qemu.debug_console, qemu.swap_file, qemu.swap_bytes) == (True, Path("/home/u/swap.img"), SWAP)
    assert qemu.ignored == () and qemu.warnings == ()
    namespaces = parse_wslconfig(text, home=Path("/home/u"))
    assert [line.split("'")[1] for line in namespaces.ignored] == ["wsl2.debugConsole", "wsl2.swapFile"]
    assert parse_wslconfig("").debug_console is False and parse_wslconfig("").swap_file is None


@pytest.fixture
def nobody_folder() -> Iterator[Path]:
    """A folder of nobody's that every user can reach (``tmp_path`` is root's only)."""
    folder = Path(tempfile.mkdtemp(prefix="pywsl-swap-"))
    try:
        os.chmod(folder, 0o755)
        mine = folder / "nobody"
        mine.mkdir()
        os.chown(mine, NOBODY.uid, NOBODY.gid)
        yield mine
    finally:
        shutil.rmtree(folder)


@needs_root
def test_the_swap_file_is_made_by_the_owner_sparse_and_removed_as_the_owner(nobody_folder: Path) -> None:
    path = nobody_folder / "swap.img"
    fd = named_swap_file(str(path), SWAP, NOBODY)
    try:
        info = os.fstat(fd)
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (NOBODY.uid, NOBODY.gid, 0o600)
        assert (info.st_size, info.st_blocks) == (SWAP, 0)
        assert os.stat(path).st_ino == info.st_ino
        os.pwrite(fd, b"swapped", 4096)
    finally:
        os.close(fd)
    fd = named_swap_file(str(path), SWAP, NOBODY)  # what an earlier VM left: emptied and reused
    try:
        assert os.pread(fd, 7, 4096) == b"\0" * 7 and os.fstat(fd).st_size == SWAP
    finally:
        os.close(fd)
    remove_swap_file(str(path), SWAP, NOBODY)
    assert not path.exists()


@needs_root
def test_a_swap_file_the_owner_may_not_use_is_refused_and_left_as_it_is(nobody_folder: Path) -> None:
    roots = nobody_folder.parent / "root-only"
    roots.mkdir(mode=0o755)
    with pytest.raises(VmError, match=r"swapFile .* cannot be used by the VM's owner: Permission denied"):
        named_swap_file(str(roots / "swap.img"), SWAP, NOBODY)
    with pytest.raises(VmError, match="No such file or directory"):
        named_swap_file(str(nobody_folder / "missing" / "swap.img"), SWAP, NOBODY)
    target = nobody_folder / "data"
    target.write_bytes(b"the owner's data")
    os.chown(target, NOBODY.uid, NOBODY.gid)
    (nobody_folder / "link").symlink_to(target)
    with pytest.raises(VmError, match="link"):
        named_swap_file(str(nobody_folder / "link"), SWAP, NOBODY)
    with pytest.raises(VmError, match="is not a swap disk of"):
        named_swap_file(str(target), SWAP, NOBODY)
    assert target.read_bytes() == b"the owner's data"
    remove_swap_file(str(target), SWAP, NOBODY)  # not a swap disk of that size: stays
    assert target.exists()
    others = nobody_folder / "others"
    others.write_bytes(b"")
    os.chmod(others, 0o666)
    with pytest.raises(VmError, match="not a regular file of the VM's owner"):
        named_swap_file(str(others), SWAP, NOBODY)
    assert not (roots / "swap.img").exists()


def test_the_relay_lets_go_of_a_terminal_that_hangs_up_and_drains_to_the_end() -> None:
    read_end, write_end = os.pipe()
    primary, secondary = pty.openpty()
    thread = threading.Thread(target=relay, args=(read_end, secondary), daemon=True)
    thread.start()
    try:
        os.write(write_end, b"console line\n")
        assert _read_until(primary, b"console line") != b""
        os.close(primary)  # the terminal closes: the secondary end hangs up
        deadline = time.monotonic() + TIMEOUT
        while _is_open(secondary) and time.monotonic() < deadline:
            select.select([], [], [], 0.01)
        assert not _is_open(secondary)
        os.write(write_end, b"after the hang-up\n" * 1000)  # read and dropped, never blocks QEMU
    finally:
        os.close(write_end)
        thread.join(TIMEOUT)
    assert not thread.is_alive()
    os.close(read_end)


def _is_open(fd: int) -> bool:
    try:
        fcntl.fcntl(fd, fcntl.F_GETFD)
    except OSError:
        return False
    return True


def _read_until(fd: int, marker: bytes, timeout: float = TIMEOUT) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while marker not in data and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if ready:
            try:
                data += os.read(fd, 65536)
            except OSError:
                break
    return data if marker in data else b""


def test_only_the_owners_own_terminal_is_taken_and_opened_anew() -> None:
    script = (
        "import fcntl, os; from pywsl.vm.backends.qemu_console import terminal_for_console as t; "
        "fd = t(os.geteuid()); fcntl.fcntl(fd, fcntl.F_SETFL, os.O_NONBLOCK); "
        "print(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_WRONLY, "
        "fcntl.fcntl(2, fcntl.F_GETFL) & os.O_NONBLOCK, t(os.geteuid() + 1))"
    )
    primary, secondary = pty.openpty()
    try:
        result = subprocess.run(
            [sys.executable, "-c", script],
            stderr=secondary,
            capture_output=False,
            stdout=subprocess.PIPE,
            timeout=TIMEOUT,
            check=True,
            env=_env(),
        )
    finally:
        os.close(secondary)
        os.close(primary)
    assert result.stdout == b"True 0 None\n"  # write-only, its own file (the caller's flags stay)
    script = "import os; from pywsl.vm.backends import qemu_console as c; print(c.terminal_for_console(0))"
    piped = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, timeout=TIMEOUT, check=True, env=_env()
    )
    assert piped.stdout == b"None\n"  # not a terminal: the console stays in the log


def _env() -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(Path(pywsl_package.__file__).resolve().parent.parent),
    }


# -- one VM, booted from a terminal ---------------------------------------------------------------


@dataclass
class Booted:
    env: dict[str, str]
    workspace: Path
    runtime_dir: Path
    swap_file: Path
    terminal: bytes  # what reached the booting command's terminal
    primary: int  # the terminal's primary end, open until the hang-up test closes it
    relay: int  # the relay's pid
    closed: list[bool] = field(default_factory=lambda: [False])

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "pywsl.cli.main", *args],
            env=self.env,
            cwd="/",
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )

    def log(self) -> str:
        return (self.runtime_dir / "mini_init.log").read_text(errors="replace")


def _relay_of(runtime_dir: Path) -> int | None:
    for entry in os.listdir("/proc"):
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            if b"qemu_console" in cmdline and str(runtime_dir).encode() in cmdline:
                return int(entry)
    return None


@pytest.fixture(scope="module")
def booted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Booted]:
    if os.geteuid() != 0 or not BUSYBOX.is_file():
        pytest.skip("needs root and a static /bin/busybox")
    if ensure_qemu() is None:
        pytest.skip("qemu-system-x86 is not installed and apt-get cannot install it here")
    image, modules = ensure_kernel()
    workspace = Path(os.path.realpath(run_folder("qemu-config-")))
    config, runtime = workspace / "config", workspace / "run"
    for folder in (workspace / "home", config / "pywsl", runtime, workspace / "swap"):
        folder.mkdir(parents=True)
    swap_file = workspace / "swap" / "swap.img"
    (config / "pywsl" / "wslconfig").write_text(
        "[general]\ninstanceIdleTimeout=120000\n"
        f"[wsl2]\nvmIdleTimeout=300000\nkernel={image}\nkernelModules={modules}\n"
        "kernelBootTimeout=150000\nmemory=512MB\nprocessors=1\nlocalhostForwarding=false\n"
        f"swap=64MB\nswapFile={swap_file}\ndebugConsole=true\nkernelCommandLine=loglevel=6\n"
        "[pywsl]\nbackend=qemu\n"
    )
    env = {
        **_env(),
        "HOME": str(workspace / "home"),
        "XDG_DATA_HOME": str(workspace / "data"),
        "XDG_CONFIG_HOME": str(config),
        "PYWSL_RUNTIME_ROOT": str(runtime),
        "PYWSL_CACHE_ROOT": str(tmp_path_factory.mktemp("qemu-cache")),
        "LANG": "C.UTF-8",
    }
    runtime_dir = runtime / str(os.geteuid())
    archive = busybox_archive(workspace / "box.tar", usr_bin_links=True)
    primary, secondary = pty.openpty()
    booted: Booted | None = None
    try:
        importing = subprocess.Popen(  # the booting command: its standard error is the terminal
            [sys.executable, "-m", "pywsl.cli.main", "--import", "Box", str(workspace / "box"), str(archive)],
            env=env,
            cwd="/",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=secondary,
        )
        os.close(secondary)
        secondary = -1
        terminal = _read_until(primary, b"Linux version", timeout=300)
        assert importing.wait(300) == 0, terminal.decode(errors="replace")
        relay_pid = _relay_of(runtime_dir)
        assert relay_pid is not None
        booted = Booted(env, workspace, runtime_dir, swap_file, terminal, primary, relay_pid)
        yield booted
    finally:
        if secondary >= 0:
            os.close(secondary)
        with contextlib.suppress(OSError):
            os.close(primary)
        _shut_down(env, runtime_dir, workspace, swap_file)


def _shut_down(env: dict[str, str], runtime_dir: Path, workspace: Path, swap_file: Path) -> None:
    """--shutdown: the console's last words reach the log after the terminal hung up, and neither
    the relay nor the swap file is left."""
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pywsl.cli.main", "--shutdown"],
            env=env,
            capture_output=True,
            timeout=120,
            check=False,
        )
        deadline = time.monotonic() + TIMEOUT
        while _relay_of(runtime_dir) is not None and time.monotonic() < deadline:
            select.select([], [], [], 0.05)
        assert result.returncode == 0, result.stderr
        assert _relay_of(runtime_dir) is None
        assert not swap_file.exists()
        log = (runtime_dir / "mini_init.log").read_text(errors="replace")
        assert "reboot: Restarting system" in log
    finally:
        if _relay_of(runtime_dir) is not None:
            subprocess.run(
                [sys.executable, "-m", "pywsl.cli.main", "--shutdown", "--force"],
                env=env,
                capture_output=True,
                timeout=120,
                check=False,
            )
        shutil.rmtree(workspace, ignore_errors=True)


@pytest.mark.slow
def test_the_console_reaches_the_booting_terminal_and_the_log(booted: Booted) -> None:
    assert b"Linux version" in booted.terminal
    assert "Linux version" in booted.log()  # the log keeps the whole console as well
    relay_fds = [
        os.readlink(f"/proc/{booted.relay}/fd/{fd}") for fd in os.listdir(f"/proc/{booted.relay}/fd")
    ]
    assert [path for path in relay_fds if path.startswith("/dev/pts/")] != [] or booted.closed[0]


@pytest.mark.slow
def test_the_swap_disk_is_the_swap_file_of_the_owner(booted: Booted) -> None:
    result = booted.run("-d", "Box", "--", "cat /proc/swaps")
    assert result.returncode == 0, result.stderr
    device = result.stdout.decode().splitlines()[1].split()
    assert device[:3] == ["/dev/vda", "partition", str(64 * 1024 - 4)]  # KiB, less mkswap's header page
    info = os.stat(booted.swap_file)
    assert (info.st_uid, stat.S_IMODE(info.st_mode), info.st_size) == (os.geteuid(), 0o600, SWAP)
    assert info.st_blocks * 512 < SWAP  # sparse: only what the guest wrote


@pytest.mark.slow
def test_wslpath_of_a_distribution_on_a_disk(booted: Booted) -> None:
    """Its own files are on a disk only the VM mounts: no host path (WSL's would be
    \\\\wsl.localhost\\<distro>, which a Linux host has not); the host's files translate back."""
    result = booted.run("-d", "Box", "--", "wslpath -w /etc/passwd")
    assert result.returncode == 1
    assert result.stderr == b"wslpath: /etc/passwd: Invalid argument\n"
    result = booted.run("-d", "Box", "--", "wslpath -w /mnt/host/tmp")
    assert (result.returncode, result.stdout) == (0, b"/tmp\n"), result.stderr


@pytest.mark.slow
def test_the_vm_runs_on_and_lets_go_of_its_terminal_when_it_hangs_up(booted: Booted) -> None:
    os.close(booted.primary)  # the booting terminal closes
    booted.closed[0] = True
    deadline = time.monotonic() + TIMEOUT
    while _terminals_of(booted.relay) and time.monotonic() < deadline:
        select.select([], [], [], 0.05)
    assert _terminals_of(booted.relay) == []
    result = booted.run("-d", "Box", "--", "echo still running")
    assert (result.returncode, result.stdout) == (0, b"still running\n"), result.stderr


def _terminals_of(pid: int) -> list[str]:
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            path = os.readlink(f"/proc/{pid}/fd/{fd}")
            if path.startswith("/dev/pts/"):
                found.append(path)
    return found
