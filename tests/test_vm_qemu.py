"""The qemu backend: a real VM with Debian's kernel, its initramfs, the channel port and the
distributions folder, driven through the command line. One VM boots for the module (TCG where KVM
does not work); the channel port's copying loop (with an interop call from the guest to the host)
is also tested on its own, without a VM."""

from __future__ import annotations

import array
import contextlib
import errno
import gzip
import http.server
import io
import os
import pty
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
from busybox_images import BUSYBOX, busybox_archive
from coverage_report import passed_on
from qemu_guest_setup import ensure_kernel, ensure_qemu
from run_folders import run_folder

import pywsl as pywsl_package
from pywsl.api.session.wslconfig import parse_wslconfig
from pywsl.guest import interop_messages
from pywsl.guest.port_demux import PortDemux
from pywsl.guest.vm_mini_init import refuse_interop
from pywsl.vm import CoreVm
from pywsl.vm.backends.base import running_backend
from pywsl.vm.backends.qemu_bridge import MessageCursor
from pywsl.vm.backends.qemu_interop import InteropHost
from pywsl.vm.backends.qemu_monitor import HostPort
from pywsl.vm.backends.qemu_shares import VIRTIOFSD, DistributionShare, remove_share, start_virtiofsd
from pywsl.vm.errors import VmError
from pywsl.vm.initramfs import build_initramfs, resolve_modules
from pywsl.vm.kernel import find_kernel
from pywsl.wire.enums import LX_MESSAGE_TYPE
from pywsl.wire.port_mux import (
    WINDOW,
    AttachEntry,
    AttachKind,
    FrameKind,
    FrameReader,
    decode_attach,
    encode_attach,
    encode_frame,
)

vm_test = pytest.mark.slow
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounts and user namespaces need root")

# -- the channel port without a VM ---------------------------------------------------------------


@dataclass
class _Port:
    host: HostPort
    listener_path: str  # the VM's mini_init.sock
    server: socket.socket  # what pid 1 listens on in the guest
    interop: socket.socket  # pid 1's end of the socket it passes interop connections on

    def open_channel(self) -> tuple[socket.socket, socket.socket]:
        """A host connection and the guest connection it became."""
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(self.listener_path)
        accepted, _address = self.server.accept()
        return client, accepted


@pytest.fixture
def port(tmp_path: Path) -> Iterator[_Port]:
    """The monitor's loop and the guest's demultiplexer, their port a socket pair."""
    name = f"\0pywsl-test-port-{os.getpid()}-{time.monotonic_ns()}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(name)
    server.listen(8)
    server.settimeout(10)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "mini_init.sock"))
    listener.listen(8)
    listener.setblocking(False)
    host_port, guest_port = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    host_port.setblocking(False)
    guest_port.setblocking(False)
    log = os.open(tmp_path / "interop.log", os.O_WRONLY | os.O_CREAT, 0o600)
    interop = InteropHost(os.geteuid(), log)
    monitor = SimpleNamespace(share=None, forwarder=None, interop=interop, disks=None)
    host = HostPort(host_port.fileno(), listener, monitor)  # type: ignore[arg-type]
    pid1_end, demux_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    guest = PortDemux(guest_port.fileno(), name, interop_source=demux_end)
    threads = [threading.Thread(target=engine.run, daemon=True) for engine in (host, guest)]
    for thread in threads:
        thread.start()
    yield _Port(host, str(tmp_path / "mini_init.sock"), server, pid1_end)
    host_port.shutdown(socket.SHUT_RDWR)
    for thread in threads:
        thread.join(10)
        assert not thread.is_alive()
    interop.close()
    os.close(log)
    for sock in (host_port, guest_port, listener, server, pid1_end, demux_end):
        sock.close()


def _pump(sock: socket.socket, payload: bytes) -> threading.Thread:
    def send() -> None:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def _read_all(sock: socket.socket) -> bytes:
    sock.settimeout(30)
    chunks = []
    while chunk := sock.recv(1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def test_frames_and_descriptor_lists_round_trip() -> None:
    entries = [
        AttachEntry(AttachKind.DIRECTORY, 0, "7"),
        AttachEntry(AttachKind.SOCKET, 1 << 31),
        AttachEntry(AttachKind.SAME, 1),
    ]
    assert decode_attach(encode_attach(entries)) == entries
    reader = FrameReader()
    data = encode_frame(3, FrameKind.DATA, b"abc") + encode_frame(3, FrameKind.EOF)
    assert [(f.channel, f.kind, f.payload) for f in reader.feed(data[:5]) + reader.feed(data[5:])] == [
        (3, FrameKind.DATA, b"abc"),
        (3, FrameKind.EOF, b""),
    ]
    with pytest.raises(Exception, match="names a later entry"):
        decode_attach(encode_attach([AttachEntry(AttachKind.SAME, 0)]))


def test_message_cursor_finds_messages_in_any_pieces() -> None:
    first = struct.pack("<IIII", 29, 20, 1, 0) + b"abcd"
    second = struct.pack("<IIII", 8, 16, 2, 0)
    stream = first + second
    cursor = MessageCursor()
    found = []
    for start in range(0, len(stream), 7):
        found += [(offset + start, kind) for offset, kind in cursor.feed(stream[start : start + 7])]
    assert found == [(0, None), (20, None)]  # a header cut in two: its type comes later
    cursor = MessageCursor()
    assert cursor.until_boundary() == 16
    assert cursor.feed(stream[:16]) == [(0, 29)] and cursor.until_boundary() == 4
    assert cursor.feed(stream[16:]) == [(4, 8)] and cursor.until_boundary() == 16
    assert MessageCursor().feed(stream) == [(0, 29), (20, 8)]


def test_channels_carry_more_than_their_window_both_ways_with_half_close(port: _Port) -> None:
    client, accepted = port.open_channel()
    up, down = os.urandom(3 * WINDOW + 12345), os.urandom(2 * WINDOW + 1)
    senders = [_pump(client, up), _pump(accepted, down)]
    assert _read_all(accepted) == up  # the host's EOF arrives after every byte
    assert _read_all(client) == down
    for sender in senders:
        sender.join(10)
    client.close()
    accepted.close()


def test_descriptors_become_streams_of_their_own(port: _Port) -> None:
    client, accepted = port.open_channel()
    stdin_read, stdin_write = os.pipe()
    stdout_read, stdout_write = os.pipe()
    control, control_far = socket.socketpair()
    exit_end, exit_far = socket.socketpair()
    message = (
        struct.pack("<IIII", LX_MESSAGE_TYPE.LxInitMessageCreateProcessUtilityVm, 24, 1, 0) + b"payload!"
    )
    fds = [stdin_read, stdout_write, stdout_write, control_far.fileno(), exit_far.fileno()]
    client.sendmsg([message], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    for fd in (stdin_read, stdout_write):
        os.close(fd)
    control_far.close()
    exit_far.close()
    data, received, _flags, _address = socket.recv_fds(accepted, 1024, 8)
    while len(data) < len(message):
        data += accepted.recv(1024)
    assert data == message and len(received) == 5
    guest_stdin, guest_stdout, guest_stderr, guest_control, guest_exit = received
    os.write(stdin_write, b"to the guest")
    os.close(stdin_write)
    with os.fdopen(guest_stdin, "rb") as reader:
        assert reader.read() == b"to the guest"  # the host's end of file is the guest's
    os.write(guest_stdout, b"out ")
    os.write(guest_stderr, b"err")
    os.close(guest_stdout)
    os.close(guest_stderr)
    with os.fdopen(stdout_read, "rb") as reader:
        assert reader.read() == b"out err"  # 2>&1: one stream, in order
    with socket.socket(fileno=guest_control) as far:
        far.sendall(b"ping")
        assert control.recv(4) == b"ping"
        control.sendall(b"pong")
        assert far.recv(4) == b"pong"
    os.close(guest_exit)
    exit_end.settimeout(10)
    assert exit_end.recv(1) == b""
    for sock in (client, accepted, control, exit_end):
        sock.close()


def test_a_descriptor_is_used_only_in_the_direction_it_was_opened_for(port: _Port) -> None:
    client, accepted = port.open_channel()
    read_only = os.open(os.devnull, os.O_RDONLY)
    others = socket.socketpair()
    try:
        # CreateProcessUtilityVm's stdout opened read-only: the monitor refuses the whole message
        header = struct.pack("<IIII", LX_MESSAGE_TYPE.LxInitMessageCreateProcessUtilityVm, 16, 2, 0)
        fds = [read_only, read_only, read_only, others[0].fileno(), others[1].fileno()]
        client.sendmsg([header], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
        accepted.settimeout(10)
        assert accepted.recv(64) == b""  # the channel is closed, nothing reached the guest
        assert _read_all(client) == b""
    finally:
        os.close(read_only)
        for sock in (*others, client, accepted):
            sock.close()


@needs_root
@needs_root
def test_an_interop_call_from_the_guest_runs_on_the_host_with_its_streams(port: _Port) -> None:
    """pid 1 passes a caller's connection on; the host's worker runs the program with the caller's
    stdin, stdout and stderr (``2>&1`` here) carried over channels the guest opened."""
    caller, connection = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    socket.send_fds(port.interop, [b"I"], [connection.fileno()])
    connection.close()
    stdin_read, stdin_write = os.pipe()
    out_read, out_write = os.pipe()
    request = interop_messages.encode_create_process(
        "/bin/sh", "/", ["-c", "tr a-z A-Z; echo err >&2; exit 5"], ["PATH=/usr/bin:/bin"]
    )
    socket.send_fds(caller, [request], [stdin_read, out_write, out_write])
    for fd in (stdin_read, out_write):
        os.close(fd)
    os.write(stdin_write, b"piped through the port\n")
    os.close(stdin_write)
    replies = _read_all(caller)  # the response, the exit status, then the end of the call
    with os.fdopen(out_read, "rb") as output:
        assert output.read() == b"PIPED THROUGH THE PORT\nerr\n"
    response_size = interop_messages.frame_size(replies[: interop_messages.HEADER.size], 1 << 16)[1]
    assert interop_messages.int32_at_16(replies[:response_size]) == 0  # started
    assert interop_messages.int32_at_16(replies[response_size:]) == 5  # its exit status
    caller.close()


@needs_root
def test_an_interop_request_the_guest_cannot_pass_on_is_refused_at_once() -> None:
    caller, connection = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    stdin_read, stdin_write = os.pipe()
    request = interop_messages.encode_create_process("/bin/true", "/", ["true"], [])
    socket.send_fds(caller, [request], [stdin_read, stdin_write, stdin_write])
    for fd in (stdin_read, stdin_write):
        os.close(fd)
    refuse_interop(connection.fileno())
    connection.close()
    caller.settimeout(10)
    reply = caller.recv(4096)
    assert interop_messages.int32_at_16(reply) == errno.EOPNOTSUPP
    assert caller.recv(4096) == b""
    caller.close()


def test_the_distributions_folder_is_attached_released_and_removed(tmp_path: Path) -> None:
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    (tmp_path / "distro").mkdir()
    (tmp_path / "distro" / "file").write_text("inside\n")
    share = DistributionShare(runtime)
    share.setup()
    try:
        fd = os.open(tmp_path / "distro", os.O_PATH | os.O_DIRECTORY)
        try:
            first, second = share.attach(fd), share.attach(fd)
        finally:
            os.close(fd)
        assert (share.folder / first / "file").read_text() == "inside\n"
        share.release(first)
        assert not (share.folder / first).exists() and (share.folder / second / "file").exists()
    except BaseException:
        share.teardown()
        raise
    # a monitor that was killed leaves the folder mounted: remove_leftovers' cleanup removes it
    remove_share(runtime)
    assert os.listdir(runtime) == [] and not _mounted_below(tmp_path)


@needs_root
def test_the_file_server_runs_with_the_vms_ids(tmp_path: Path) -> None:
    if not Path(VIRTIOFSD).is_file():
        pytest.skip(f"{VIRTIOFSD} is not installed (qemu-system-common)")
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    share = DistributionShare(runtime)
    share.setup()
    log = os.open(tmp_path / "log", os.O_WRONLY | os.O_CREAT, 0o600)
    id_map = [(0, 3_000_000_000, 65536)]
    try:
        pid = start_virtiofsd(runtime, share.folder, id_map, id_map, log)
        try:
            assert Path(f"/proc/{pid}/uid_map").read_text().split() == ["0", "3000000000", "65536"]
            status = Path(f"/proc/{pid}/status").read_text()
            uids = next(line for line in status.splitlines() if line.startswith("Uid:"))
            assert uids.split()[1:] == ["3000000000"] * 4  # never host root
        finally:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    finally:
        os.close(log)
        share.teardown()
    assert not _mounted_below(tmp_path)


def _mounted_below(folder: Path) -> list[str]:
    with open("/proc/self/mountinfo") as table:
        points = [line.split()[4] for line in table]
    return [point for point in points if point.startswith(f"{folder}/")]


# -- the VM ---------------------------------------------------------------------------------------


@dataclass
class Run:
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def out(self) -> str:
        return self.stdout.decode()


class Pywsl:
    """The command as a subprocess with this module's private environment."""

    def __init__(self, env: Mapping[str, str], runtime_dir: Path) -> None:
        self.env = dict(env)
        self.runtime_dir = runtime_dir

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "pywsl.cli.main", *args]

    def __call__(self, *args: str, input: bytes | None = None, timeout: float = 120) -> Run:
        result = subprocess.run(
            self.argv(*args),
            env=self.env,
            cwd="/",
            input=input,
            capture_output=True,
            timeout=timeout,
            check=False,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        return Run(result.returncode, result.stdout, result.stderr)


@pytest.fixture(scope="module")
def guest_kernel() -> tuple[Path, Path]:
    if ensure_qemu() is None:
        pytest.skip("qemu-system-x86 is not installed and apt-get cannot install it here")
    return ensure_kernel()


def _vm_processes(runtime_dir: Path) -> list[int]:
    """QEMU, its monitor and what the monitor started (file servers, the interop server) for the
    VM in ``runtime_dir`` (zombies aside)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()[0]
            ours = str(runtime_dir).encode() in cmdline and b"qemu" in cmdline
            if state != "Z" and (ours or _server_of(entry, runtime_dir)):  # QEMU, file and interop servers
                found.append(int(entry))
    return found


def _server_of(pid: str, runtime_dir: Path) -> bool:
    """A process the monitor of the VM in ``runtime_dir`` started (not another VM's)."""
    with contextlib.suppress(OSError):
        parent = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1]
        monitor = Path(f"/proc/{parent}/cmdline").read_bytes()
        return b"qemu_monitor" in monitor and str(runtime_dir).encode() in monitor
    return False


@pytest.fixture(scope="module")
def pywsl(guest_kernel: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pywsl]:
    if os.geteuid() != 0 or not BUSYBOX.is_file():
        pytest.skip("needs root and a static /bin/busybox")
    image, modules = guest_kernel
    workspace = run_folder("qemu-")
    config, runtime = workspace / "config", workspace / "run"
    for folder in (workspace / "home", config / "pywsl", runtime):
        folder.mkdir(parents=True)
    (config / "pywsl" / "wslconfig").write_text(
        "[general]\ninstanceIdleTimeout=120000\n"
        f"[wsl2]\nvmIdleTimeout=300000\nkernel={image}\nkernelModules={modules}\n"
        "kernelBootTimeout=150000\nmemory=512MB\nprocessors=1\nlocalhostForwarding=true\nswap=64MB\n"
        "[pywsl]\nbackend=qemu\n"
    )
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workspace / "home"),
        "XDG_DATA_HOME": str(workspace / "data"),
        "XDG_CONFIG_HOME": str(config),
        "PYWSL_RUNTIME_ROOT": str(runtime),
        "PYWSL_CACHE_ROOT": str(tmp_path_factory.mktemp("qemu-cache")),
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(Path(pywsl_package.__file__).resolve().parent.parent),
        **passed_on(),  # a coverage measurement follows the command, its VM's monitor and guest
    }
    command = Pywsl(env, runtime / str(os.geteuid()))
    try:
        yield command
    finally:
        # --shutdown (whatever order the tests ran in): nothing of the VM is left but its log
        result = command("--shutdown")
        left = _vm_processes(command.runtime_dir)
        files = sorted(os.listdir(command.runtime_dir)) if command.runtime_dir.exists() else []
        if left:
            command("--shutdown", "--force")
        shutil.rmtree(workspace, ignore_errors=True)
        assert result.returncode == 0, result.stderr
        assert left == [] and files == ["mini_init.log"]


@pytest.fixture(scope="module")
def box(pywsl: Pywsl) -> str:
    """A busybox distribution imported through the VM (its tar worker, the archive over a channel)."""
    archive = busybox_archive(pywsl.runtime_dir.parent.parent / "box.tar", usr_bin_links=True)
    started = time.monotonic()
    result = pywsl("--import", "Box", str(pywsl.runtime_dir.parent.parent / "box"), str(archive), timeout=300)
    print(f"qemu: boot and import of a busybox archive: {time.monotonic() - started:.1f} s")
    assert result.returncode == 0, result.stderr.decode()
    assert running_backend(pywsl.runtime_dir) == "qemu"
    return "Box"


@vm_test
def test_uname_inside_is_the_guest_kernel(pywsl: Pywsl, box: str, guest_kernel: tuple[Path, Path]) -> None:
    result = pywsl("-d", box, "--", "uname -r")
    assert (result.returncode, result.out) == (0, f"{guest_kernel[1].name}\n"), result.stderr
    folder = pywsl.runtime_dir.parent.parent / "box"
    # imported on the qemu backend: the root filesystem is a disk image the guest kernel mounts
    assert (folder / "ext4.img").is_file() and not (folder / "rootfs").exists()


@vm_test
def test_exit_status_and_separate_streams(pywsl: Pywsl, box: str) -> None:
    result = pywsl("-d", box, "--", "echo out; echo err >&2; exit 3")
    assert (result.returncode, result.stdout, result.stderr) == (3, b"out\n", b"err\n")
    assert pywsl("-d", box, "-e", "false").returncode == 1


@vm_test
def test_stdin_and_stdout_are_byte_exact(pywsl: Pywsl, box: str) -> None:
    payload = os.urandom(3 << 20) + b"\0\r\n"
    started = time.monotonic()
    result = pywsl("-d", box, "-e", "cat", input=payload)
    print(f"qemu: 3 MiB through cat: {time.monotonic() - started:.1f} s")
    assert result.returncode == 0 and result.stdout == payload
    assert pywsl("-d", box, "-e", "cat", input=b"").stdout == b""


@vm_test
def test_terminal_size_input_and_exit_status(pywsl: Pywsl, box: str) -> None:
    pid, fd = pty.fork()
    if pid == 0:
        os.chdir("/")
        os.execve(
            sys.executable,
            pywsl.argv("-d", box, "--", "tty; stty size; read x; echo got:$x; exit 5"),
            pywsl.env,
        )
    import fcntl
    import termios

    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 101, 0, 0))
    output, answered, deadline = b"", False, time.monotonic() + 120
    while time.monotonic() < deadline:
        if not select.select([fd], [], [], 1)[0]:
            continue
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        output += data
        if b"33 101\r\n" in output and not answered:  # the whole line first: the echo comes after it
            os.write(fd, b"abc\n")
            answered = True
    _pid, status = os.waitpid(pid, 0)
    os.close(fd)
    assert output.startswith(b"/dev/pts/") and b"33 101\r\n" in output and b"got:abc\r\n" in output
    assert os.waitstatus_to_exitcode(status) == 5


@vm_test
def test_mnt_host_is_the_hosts_tree_seen_with_the_vms_ids(pywsl: Pywsl, box: str) -> None:
    folder = run_folder("qemu-host-")
    try:
        folder.chmod(0o777)
        (folder / "shared").write_text("from the host\n")
        (folder / "secret").write_text("root's only\n")
        (folder / "secret").chmod(0o600)
        inside = f"/mnt/host{folder}"
        result = pywsl(
            "-d", box, "--", f"cat {inside}/shared; echo from-inside > {inside}/made; cat {inside}/secret"
        )
        assert result.stdout == b"from the host\n" and b"Permission denied" in result.stderr
        made = folder / "made"
        assert made.read_text() == "from-inside\n"
        assert made.stat().st_uid not in (0, os.getuid())  # the VM's mapped root, never host root
        listing = pywsl("-d", box, "--", "(ls -A /mnt/host/dev; ls -A /mnt/host/sys) | wc -w")
        assert listing.out.split() == ["0"]  # masked
    finally:
        shutil.rmtree(folder)


class _Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"from the host's loopback\n")

    def log_message(self, format: str, *args: object) -> None:
        pass


@vm_test
def test_nat_reaches_the_hosts_loopback_through_the_gateway(pywsl: Pywsl, box: str) -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        result = pywsl("-d", box, "--", f"wget -q -O - http://10.0.2.2:{port}/; cat /etc/resolv.conf")
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 0, result.stderr
    assert result.out.startswith("from the host's loopback\n") and "nameserver 10.0.2.3" in result.out


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@vm_test
def test_localhost_forwarding_reaches_a_server_inside(pywsl: Pywsl, box: str) -> None:
    port = _free_port()
    script = f"mkdir -p /tmp/www; echo served-inside > /tmp/www/x; exec httpd -f -p {port} -h /tmp/www"
    server = subprocess.Popen(
        pywsl.argv("-d", box, "--", script), env=pywsl.env, cwd="/", stdin=subprocess.DEVNULL
    )
    try:
        answer, deadline = b"", time.monotonic() + 60
        while time.monotonic() < deadline and not answer:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", port), timeout=5) as conn,
            ):
                conn.sendall(b"GET /x HTTP/1.0\r\n\r\n")
                answer = b"".join(iter(lambda: conn.recv(4096), b""))
            if not answer:
                time.sleep(0.5)
        assert answer.endswith(b"served-inside\n")
    finally:
        pywsl("-d", box, "--", f"pkill -f 'httpd -f -p {port}' || killall httpd")
        server.wait(60)


@vm_test
def test_export_streams_the_archive_out(pywsl: Pywsl, box: str) -> None:
    result = pywsl("--export", box, "-", "--format", "tar.gz", timeout=300)
    assert result.returncode == 0, result.stderr
    with gzip.open(io.BytesIO(result.stdout)) as compressed, tarfile.open(fileobj=compressed) as tar:
        assert any(name.endswith("bin/busybox") for name in tar.getnames())


@vm_test
def test_terminate_and_the_core_vm_interface(pywsl: Pywsl, box: str, guest_kernel: tuple[Path, Path]) -> None:
    assert pywsl("-d", box, "true").returncode == 0
    vm = CoreVm.attach(pywsl.runtime_dir, "qemu")
    others = [CoreVm.attach(pywsl.runtime_dir, "qemu") for _ in range(2)]
    try:
        assert vm is not None and vm.kernel_release == guest_kernel[1].name
        assert list(vm.running_instances()) == ["box"]
        for other in others:
            assert other is not None and other.running_instances() == vm.running_instances()
    finally:
        for item in (vm, *others):
            if item is not None:
                item.close()
    result = pywsl("-t", box)
    assert result.returncode == 0, result.stderr
    assert pywsl("-l", "--running").returncode == 255
    assert pywsl("-d", box, "-e", "true").returncode == 0  # starts again


# -- the guest's kernel and initramfs --------------------------------------------------------------


@vm_test
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
    wanted = ("virtio_mmio", "virtio_console", "9pnet_virtio", "9p")
    assert resolve_modules(tree, wanted) == [
        "kernel/a/virtio_ring.ko",
        "kernel/a/virtio.ko",
        "kernel/a/virtio_mmio.ko",
        "kernel/b/9p.ko",
    ]
    (tree / "modules.builtin").write_text("kernel/c/virtio_console.ko\n")
    with pytest.raises(VmError, match="9pnet_virtio is neither built into the kernel"):
        resolve_modules(tree, wanted)


def test_modules_only_every_user_may_read_go_into_the_initramfs(tmp_path: Path) -> None:
    """A modules tree names its files (modules.dep): one of root's private files is refused."""
    private = tmp_path / "private"
    tree = private / "6.0-test"
    (tree / "kernel").mkdir(parents=True)
    os.chmod(private, 0o700)  # only its owner (root) may enter
    (tree / "kernel" / "virtio_mmio.ko").write_bytes(b"\x7fELF")
    with pytest.raises(VmError, match="not every user may enter"):
        resolve_modules(tree, ("virtio_mmio",))


@vm_test
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
    assert {"init", "busybox", "modules.list", "modules/virtio_console.ko", "modules/virtiofs.ko"} <= set(
        listing
    )
    # modules from .modinfo (Debian's package has no modules.dep): virtio_ring before virtio_mmio
    names = [Path(item).name for item in resolve_modules(kernel.modules)]
    assert names.index("virtio_ring.ko") < names.index("virtio_mmio.ko") < names.index("virtio_console.ko")
    assert names.index("fuse.ko") < names.index("virtiofs.ko")


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


@vm_test
def test_host_programs_run_on_the_host_with_the_callers_streams(pywsl: Pywsl, box: str) -> None:
    script = (
        "import os, sys; data = sys.stdin.read(); "
        'print(data.strip(), os.getuid(), os.readlink("/proc/self/ns/pid")); '
        'print("to stderr", file=sys.stderr); sys.exit(7)'
    )
    program = Path(os.path.realpath(sys.executable)).name  # on the host's PATH, not in busybox
    result = pywsl("-d", box, "--", f"echo piped | {program} -c '{script}'; echo status=$?")
    assert result.returncode == 0, result
    host_namespace = os.readlink("/proc/self/ns/pid")
    assert result.out == f"piped 0 {host_namespace}\nstatus=7\n", result
    assert result.stderr == b"to stderr\n"


@vm_test
def test_swap_is_a_disk_of_the_configured_size_with_no_file_on_the_host(pywsl: Pywsl, box: str) -> None:
    result = pywsl("-d", box, "--", "cat /proc/swaps")
    assert result.returncode == 0, result.stderr
    device = result.out.splitlines()[1].split()
    assert device[:3] == ["/dev/vda", "partition", str(64 * 1024 - 4)]  # KiB, less mkswap's header page
    cache = Path(pywsl.env["PYWSL_CACHE_ROOT"])
    assert all(entry.name.startswith("initramfs-") or entry.is_dir() for entry in cache.iterdir())
