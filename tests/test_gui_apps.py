"""GUI apps: the caller's own X11, Wayland and PulseAudio sockets reach a distribution as WSLg lays them out.

The real check starts ``Xvfb -nolisten tcp -auth <cookie file>`` on the host, shares its socket
with a busybox distribution and makes an X11 connection setup from inside: a child of the test
joins the distribution's user and mount namespaces as its root, connects to
``/tmp/.X11-unix/X<n>`` there and sends the cookie from the ``XAUTHORITY`` file written inside.
The server accepts it, and refuses the same setup without the cookie. Another user's socket and
a socket that changed since the host checked it are never shared; ``guiApplications=false``
turns sharing off. Wayland and PulseAudio: servers standing in for the compositor and the sound
server listen in the caller's ``XDG_RUNTIME_DIR`` on the host; a client inside connects through
``/mnt/wslg/runtime-dir`` with the ``WAYLAND_DISPLAY``, ``XDG_RUNTIME_DIR`` and ``PULSE_SERVER``
the launched process was given, and the server answers it. Through the service, an unprivileged
user's own sockets are shared and another user's or root's never are. With a Debian distribution
(``slow``: debootstrap with x11-utils and x11-apps), ``xdpyinfo`` inside sees the host's Xvfb
screen and ``xwd`` takes a screenshot of an ``xeyes`` window opened from inside.
"""

from __future__ import annotations

import contextlib
import functools
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from busybox_images import BUSYBOX, busybox_archive
from conftest import BootedVm, RunResult, VmFactory, host_pid, run_in
from debian_root import debootstrap
from multiuser_support import ServiceProcess, User, Workspace, created_users, service, user_env, workspace
from run_folders import run_folder

import pywsl.vm
from pywsl.api.session.gui_share import display_number, gui_host_environment, xauthority_cookie
from pywsl.api.session.wslconfig import load_wslconfig
from pywsl.guest import forking, gui, syscalls
from pywsl.vm.idmap import host_id

__all__ = ["service", "workspace"]  # module fixtures of multiuser_support

CHILD_TIMEOUT = 20
COOKIE = bytes(range(16))


def test_display_number() -> None:
    assert display_number(":0") == "0"
    assert display_number(":12.1") == "12"
    assert display_number("unix:3") == "3"
    assert display_number("remote:0") is None
    assert display_number("localhost:10.0") is None
    assert display_number(":x") is None
    assert display_number("") is None


def test_cookie_round_trip_and_request_parsing() -> None:
    data = gui.xauthority_entry("7", COOKIE) + gui.xauthority_entry("8", b"\xff" * 16)
    assert xauthority_cookie(data, "7") == COOKIE
    assert xauthority_cookie(data, "8") == b"\xff" * 16
    assert xauthority_cookie(data, "9") is None
    assert xauthority_cookie(data[:-3], "8") is None  # truncated record
    request = gui.parse_request(
        [
            "PYWSL_GUI_X11=7:1:2:/tmp/.X11-unix/X7",
            f"PYWSL_GUI_XAUTH={COOKIE.hex()}",
            "PYWSL_GUI_WAYLAND=wayland-0:3:4:/run/user/5/wayland-0",
            "PYWSL_GUI_PULSE=5:6:/run/user/5/pulse/native",
            "PYWSL_GUI_X11=x:1:2:/a",
            "PYWSL_GUI_WAYLAND=../x:1:2:/a",
            "PYWSL_GUI_X11=1:1:2:relative",
            "PYWSL_GUI_OTHER=1:2:3:/a",
            "PATH=/bin",
        ]
    )
    assert request.cookie == COOKIE
    assert [(item.kind, item.name, item.device, item.inode) for item in request.sockets] == [
        ("X11", "7", 1, 2),
        ("WAYLAND", "wayland-0", 3, 4),
        ("PULSE", "native", 5, 6),
    ]


def test_wslconfig_gui_applications(tmp_path: Path) -> None:
    from pywsl.api.credentials import UserIdentity

    config_file = tmp_path / "wslconfig"
    config_file.write_text("[wsl2]\nguiApplications=false\n")
    identity = UserIdentity.current()
    assert load_wslconfig(config_file, identity, home=tmp_path).gui_applications is False
    config_file.write_text("[wsl2]\n")
    assert load_wslconfig(config_file, identity, home=tmp_path).gui_applications is True


def _listening_socket(path: str) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    return listener


@pytest.mark.skipif(os.geteuid() != 0, reason="owners of other users' sockets need root")
def test_only_the_callers_own_sockets(tmp_path: Path) -> None:
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    os.chmod(tmp_path, 0o755)
    mine = _listening_socket(str(runtime / "wayland-0"))
    theirs = _listening_socket(str(runtime / "pulse-other"))
    (runtime / "pulse").mkdir()
    os.symlink(runtime / "wayland-0", runtime / "pulse" / "native")  # a link is never followed
    (tmp_path / "xauth").write_bytes(gui.xauthority_entry("0", COOKIE))
    try:
        os.chown(runtime / "pulse-other", 65533, 65533)
        source = {"WAYLAND_DISPLAY": "wayland-0", "XDG_RUNTIME_DIR": str(runtime)}
        entries = gui_host_environment(source, 0, "/root")
        info = os.stat(runtime / "wayland-0")
        assert entries == [f"PYWSL_GUI_WAYLAND=wayland-0:{info.st_dev}:{info.st_ino}:{runtime}/wayland-0"]
        with_pulse = {**source, "PULSE_SERVER": f"unix:{runtime}/pulse-other"}
        assert gui_host_environment(with_pulse, 0, "/") == entries
        # The same sockets for another caller: none is theirs.
        assert gui_host_environment(source, 65533, "/") == []
        assert gui_host_environment({"WAYLAND_DISPLAY": f"{runtime}/pulse-other"}, 65533, "/") != []
    finally:
        mine.close()
        theirs.close()


def _free_x_display() -> str:
    for number in range(900, 1000):
        if not os.path.exists(f"/tmp/.X11-unix/X{number}") and not os.path.exists(f"/tmp/.X{number}-lock"):
            return str(number)
    raise RuntimeError("no free display number")


@pytest.fixture
def xvfb(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A running Xvfb that accepts only COOKIE: (display number, the caller's Xauthority file)."""
    program = shutil.which("Xvfb")
    if program is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb)")
    server_auth = tmp_path / "server-auth"
    server_auth.write_bytes(gui.xauthority_entry("0", COOKIE))
    read_end, write_end = os.pipe()
    process = subprocess.Popen(
        [program, "-displayfd", str(write_end), "-nolisten", "tcp", "-auth", str(server_auth)],
        pass_fds=(write_end,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], CHILD_TIMEOUT)
        assert ready, "Xvfb did not report its display"
        number = os.read(read_end, 64).decode().strip()
        assert number.isdigit()
        client_auth = tmp_path / "client-auth"
        client_auth.write_bytes(gui.xauthority_entry(number, COOKIE))
        yield number, client_auth
    finally:
        os.close(read_end)
        process.terminate()
        try:
            process.wait(CHILD_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _setup_request(cookie: bytes | None) -> bytes:
    name, data = (gui.COOKIE_NAME, cookie) if cookie is not None else (b"", b"")

    def padded(value: bytes) -> bytes:
        return value + b"\0" * (-len(value) % 4)

    return struct.pack("<cxHHHHxx", b"l", 11, 0, len(name), len(data)) + padded(name) + padded(data)


def _x11_setup_inside(
    booted: BootedVm, instance: pywsl.vm.CoreInstance, socket_path: str, xauthority: str | None
) -> int:
    """From inside the distribution (its root, its mounts): the X11 setup's first reply byte."""
    init = host_pid(booted.pid, instance.pid)
    fds = [os.open(f"/proc/{init}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC) for name in ("user", "mnt")]
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            signal.alarm(CHILD_TIMEOUT)
            syscalls.setns(fds[0], syscalls.CLONE_NEWUSER)
            syscalls.setns(fds[1], syscalls.CLONE_NEWNS)
            os.setgroups([])
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
            cookie = None
            if xauthority is not None:
                with open(xauthority, "rb") as file:
                    entry = file.read()
                cookie = xauthority_cookie(entry, display_number(":" + socket_path.rpartition("X")[2]) or "")
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                client.settimeout(CHILD_TIMEOUT)
                client.connect(socket_path)
                client.sendall(_setup_request(cookie))
                os.write(write_end, client.recv(1))
        finally:
            forking.exit_now(0)
    for fd in (*fds, write_end):
        os.close(fd)
    try:
        ready, _, _ = select.select([read_end], [], [], CHILD_TIMEOUT)
        reply = os.read(read_end, 1) if ready else b""
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    assert reply, "no X11 reply from inside"
    return reply[0]


def _run_with_host_environment(
    monkeypatch: pytest.MonkeyPatch,
    instance: pywsl.vm.CoreInstance,
    command: str,
    host_environment: list[str],
) -> str:
    with monkeypatch.context() as patch:
        patch.setattr(
            pywsl.vm,
            "ProcessRequest",
            functools.partial(pywsl.vm.ProcessRequest, host_environment=tuple(host_environment)),
        )
        result = run_in(instance, command)
    assert result.code == 0, result.stderr
    return result.stdout


def _variables(output: str) -> dict[str, str]:
    return dict(line.partition("=")[::2] for line in output.splitlines() if "=" in line)


@pytest.mark.skipif(os.geteuid() != 0, reason="VMs need root")
def test_x11_client_inside_is_accepted_with_the_carried_cookie(
    vm_factory: VmFactory, xvfb: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    number, client_auth = xvfb
    entries = gui_host_environment({"DISPLAY": f":{number}", "XAUTHORITY": str(client_auth)}, 0, "/root")
    assert entries[0].startswith(f"PYWSL_GUI_X11={number}:")
    assert entries[1] == f"PYWSL_GUI_XAUTH={COOKIE.hex()}"
    booted = vm_factory.boot()
    rootfs = vm_factory.rootfs("gui", vm=booted)
    instance = booted.vm.launch_instance("Gui", rootfs, default_uid=0, hostname="gui")
    try:
        shown = _variables(_run_with_host_environment(monkeypatch, instance, "env", entries))
        assert shown["DISPLAY"] == f":{number}"
        assert shown["XAUTHORITY"] == "/mnt/wslg/xauth/0"
        listing = run_in(instance, f"ls -l /tmp/.X11-unix/X{number}; ls -ld /mnt/wslg/runtime-dir")
        assert listing.stdout.startswith("s"), listing
        path = f"/tmp/.X11-unix/X{number}"
        assert _x11_setup_inside(booted, instance, path, shown["XAUTHORITY"]) == 1  # Success
        assert _x11_setup_inside(booted, instance, path, None) == 0  # Failed: no cookie
        # A launch whose entry names another socket than the one checked: nothing is shared.
        other = Path(f"/tmp/.X11-unix/X{_free_x_display()}")
        forged_listener = _listening_socket(str(other))
        try:
            forged = entries[0].rsplit(":", 1)[0] + f":{other}"
            shown = _variables(_run_with_host_environment(monkeypatch, instance, "env", [forged]))
            assert "DISPLAY" not in shown
            # Another user's socket is never offered by the host.
            os.chown(other, 65533, 65533)
            assert gui_host_environment({"DISPLAY": f":{other.name[1:]}"}, 0, "/root") == []
        finally:
            forged_listener.close()
            with contextlib.suppress(FileNotFoundError):
                other.unlink()
    finally:
        instance.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="VMs need root")
def test_gui_applications_false_shares_nothing(
    vm_factory: VmFactory, xvfb: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    number, client_auth = xvfb
    entries = gui_host_environment({"DISPLAY": f":{number}", "XAUTHORITY": str(client_auth)}, 0, "/root")
    booted = vm_factory.boot()
    rootfs = vm_factory.rootfs("nogui", vm=booted, wsl_conf="[general]\nguiApplications=false\n")
    instance = booted.vm.launch_instance("NoGui", rootfs, default_uid=0, hostname="nogui")
    try:
        shown = _variables(_run_with_host_environment(monkeypatch, instance, "env", entries))
        assert "DISPLAY" not in shown and "XAUTHORITY" not in shown
        assert run_in(instance, f"test -e /tmp/.X11-unix/X{number}").code != 0
    finally:
        instance.close()


class _AnsweringServer:
    """A Unix socket server on the host standing in for a compositor or a sound server: it answers
    each connection with its name and what it read."""

    def __init__(self, path: Path, name: bytes) -> None:
        self.name = name
        self.listener = _listening_socket(str(path))
        self.listener.settimeout(CHILD_TIMEOUT)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, _ = self.listener.accept()
                with connection:
                    connection.settimeout(CHILD_TIMEOUT)
                    connection.sendall(self.name + b":" + connection.recv(256))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.thread.join(CHILD_TIMEOUT)


def _exchange_inside(booted: BootedVm, instance: pywsl.vm.CoreInstance, path: str, message: bytes) -> bytes:
    """From inside the distribution (its root, its mounts): connect to ``path``, send, read the answer."""
    init = host_pid(booted.pid, instance.pid)
    fds = [os.open(f"/proc/{init}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC) for name in ("user", "mnt")]
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            signal.alarm(CHILD_TIMEOUT)
            syscalls.setns(fds[0], syscalls.CLONE_NEWUSER)
            syscalls.setns(fds[1], syscalls.CLONE_NEWNS)
            os.setgroups([])
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                client.settimeout(CHILD_TIMEOUT)
                client.connect(path)
                client.sendall(message)
                os.write(write_end, client.recv(256))
        finally:
            forking.exit_now(0)
    for fd in (*fds, write_end):
        os.close(fd)
    try:
        ready, _, _ = select.select([read_end], [], [], CHILD_TIMEOUT)
        answer = os.read(read_end, 256) if ready else b""
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    return answer


@pytest.fixture
def caller_folder() -> Iterator[Path]:
    """A folder on the host a distribution's root (an unprivileged host id) may enter."""
    folder = run_folder("gui-")
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


@pytest.mark.skipif(os.geteuid() != 0, reason="VMs need root")
def test_wayland_and_pulse_clients_inside_reach_the_callers_servers(
    vm_factory: VmFactory, caller_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    booted = vm_factory.boot()
    # The caller is the host user whose id is the distribution's 1000 (as for a VM of a non-root
    # owner); their XDG_RUNTIME_DIR is theirs alone (0700), as a login's /run/user/<uid> is.
    caller_uid, caller_gid = host_id(booted.config.uid_map, 1000), host_id(booted.config.gid_map, 1000)
    runtime = caller_folder / "runtime"
    runtime.mkdir(0o700)
    compositor = _AnsweringServer(runtime / "wayland-1", b"compositor")
    sound = _AnsweringServer(runtime / "pulse-server", b"sound")
    for path in (runtime, runtime / "wayland-1", runtime / "pulse-server"):
        os.chown(path, caller_uid, caller_gid)
    try:
        caller = {
            "WAYLAND_DISPLAY": "wayland-1",
            "XDG_RUNTIME_DIR": str(runtime),
            "PULSE_SERVER": f"unix:{runtime}/pulse-server",
        }
        assert gui_host_environment(caller, os.geteuid(), "/root") == []  # not root's sockets
        entries = gui_host_environment(caller, caller_uid, "/")
        assert [entry.partition("=")[0] for entry in entries] == ["PYWSL_GUI_WAYLAND", "PYWSL_GUI_PULSE"]
        rootfs = vm_factory.rootfs("wayland", vm=booted)
        instance = booted.vm.launch_instance("Wayland", rootfs, default_uid=0, hostname="wayland")
        try:
            shown = _variables(_run_with_host_environment(monkeypatch, instance, "env", entries))
            assert shown["WAYLAND_DISPLAY"] == "wayland-1"
            assert shown["XDG_RUNTIME_DIR"] == "/mnt/wslg/runtime-dir"
            assert shown["PULSE_SERVER"] == "unix:/mnt/wslg/runtime-dir/pulse/native"
            wayland = f"{shown['XDG_RUNTIME_DIR']}/{shown['WAYLAND_DISPLAY']}"
            pulse = shown["PULSE_SERVER"].removeprefix("unix:")
            assert _exchange_inside(booted, instance, wayland, b"hello") == b"compositor:hello"
            assert _exchange_inside(booted, instance, pulse, b"hello") == b"sound:hello"
            listing = run_in(instance, "stat -c '%F %a' /mnt/wslg/runtime-dir /mnt/wslg/runtime-dir/pulse")
            assert listing.stdout.splitlines() == ["directory 700", "directory 700"], listing
        finally:
            instance.close()
    finally:
        compositor.close()
        sound.close()


def _cli_as(space: Workspace, user: User, *args: str, env: dict[str, str] | None = None) -> RunResult:
    """``pywsl ARGS`` run by ``user`` through the service."""
    result = subprocess.run(
        [str(space.python), "-m", "pywsl.cli.main", *args],
        user=user.uid,
        group=user.gid,
        extra_groups=[],
        env={**user_env(space, user), **(env or {})},
        cwd=user.home,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return RunResult(result.returncode, result.stdout, result.stderr)


def _owned_listener(path: Path, owner: User | None) -> socket.socket:
    listener = _listening_socket(str(path))
    if owner is not None:
        os.chown(path, owner.uid, owner.gid)
    return listener


SHOW_GUI = (
    'echo "[$DISPLAY][$WAYLAND_DISPLAY][$XDG_RUNTIME_DIR][$PULSE_SERVER]"; '
    'for p in "$XDG_RUNTIME_DIR/$WAYLAND_DISPLAY" "${PULSE_SERVER#unix:}" "/tmp/.X11-unix/X${DISPLAY#:}"; do '
    '[ -S "$p" ] && stat -c "%i %u" "$p"; done; true'
)


@pytest.mark.skipif(os.geteuid() != 0, reason="creates users and runs the service as root")
@pytest.mark.skipif(not BUSYBOX.is_file(), reason="needs a static /bin/busybox (busybox-static)")
def test_through_the_service_only_the_callers_own_sockets_are_shared(
    workspace: Workspace, service: ServiceProcess
) -> None:
    with created_users(workspace, service, "pwgui", "pwguo") as (caller, other):
        archive = busybox_archive(workspace.folder / f"gui-{caller.name}.tar", usr_bin_links=True)
        imported = _cli_as(workspace, caller, "--import", "Gui", str(caller.home / "gui"), str(archive))
        assert imported.code == 0, imported.stderr
        folders = {user.name: workspace.folder / f"runtime-{user.name}" for user in (caller, other)}
        listeners: list[socket.socket] = []
        displays = [_free_x_display()]
        x11 = [Path(f"/tmp/.X11-unix/X{displays[0]}")]
        try:
            for user in (caller, other):
                folder = folders[user.name]
                (folder / "pulse").mkdir(parents=True)
                for path in (folder, folder / "pulse"):
                    os.chown(path, user.uid, user.gid)
                    path.chmod(0o700)
                listeners.append(_owned_listener(folder / "wayland-0", user))
                listeners.append(_owned_listener(folder / "pulse" / "native", user))
            listeners.append(_owned_listener(x11[0], caller))
            displays.append(_free_x_display())
            x11.append(Path(f"/tmp/.X11-unix/X{displays[1]}"))
            listeners.append(_owned_listener(x11[1], other))
            listeners.append(_owned_listener(workspace.folder / f"root-pulse-{caller.name}", None))
            own = folders[caller.name]
            shown = _cli_as(
                workspace,
                caller,
                "-d",
                "Gui",
                "--",
                SHOW_GUI,
                env={
                    "DISPLAY": f":{displays[0]}",
                    "WAYLAND_DISPLAY": "wayland-0",
                    "XDG_RUNTIME_DIR": str(own),
                },
            )
            assert shown.code == 0, shown.stderr
            lines = shown.stdout.splitlines()
            assert lines[0] == (
                f"[:{displays[0]}][wayland-0][/mnt/wslg/runtime-dir][unix:/mnt/wslg/runtime-dir/pulse/native]"
            ), shown
            # The very sockets the caller owns, bound inside (same inodes; the caller is uid 1000 there).
            inodes = [os.stat(path).st_ino for path in (own / "wayland-0", own / "pulse" / "native", x11[0])]
            assert lines[1:] == [f"{inode} 1000" for inode in inodes], shown
            # Another user's sockets and root's, whatever the caller names: nothing is shared.
            refused = _cli_as(
                workspace,
                caller,
                "-d",
                "Gui",
                "--",
                SHOW_GUI,
                env={
                    "DISPLAY": f":{displays[1]}",
                    "WAYLAND_DISPLAY": str(folders[other.name] / "wayland-0"),
                    "XDG_RUNTIME_DIR": str(folders[other.name]),
                    "PULSE_SERVER": f"unix:{workspace.folder}/root-pulse-{caller.name}",
                },
            )
            assert refused.code == 0, refused.stderr
            assert refused.stdout.splitlines() == ["[][][][]"], refused
        finally:
            for listener in listeners:
                listener.close()
            for path in x11:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            for folder in folders.values():
                shutil.rmtree(folder, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                (workspace.folder / f"root-pulse-{caller.name}").unlink()


@pytest.fixture(scope="module")
def x11_debian_archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A Debian bookworm minbase with x11-utils (xdpyinfo, xwininfo) and x11-apps (xeyes, xwd)."""
    if shutil.which("debootstrap") is None:
        pytest.skip("needs debootstrap")
    folder = tmp_path_factory.mktemp("x11-debian")
    root = folder / "root"
    result = debootstrap(root, include=("x11-utils", "x11-apps"))
    assert result.returncode == 0, result.stderr[-2000:]
    archive = folder / "debian-x11.tar"
    subprocess.run(["tar", "-C", str(root), "--exclude=./dev/*", "-cf", str(archive), "."], check=True)
    shutil.rmtree(root)
    yield archive
    shutil.rmtree(folder, ignore_errors=True)


def _import_archive(booted: BootedVm, archive: Path, target: Path) -> Path:
    target.mkdir()
    os.chown(target, host_id(booted.config.uid_map, 0), host_id(booted.config.gid_map, 0))
    error_read, error_write = os.pipe()
    with open(archive, "rb") as source:
        outcome = booted.vm.import_rootfs(target, source.fileno(), error_write)
    os.close(error_write)
    os.close(error_read)
    assert outcome.valid
    return target


def _xwd_image(data: bytes) -> tuple[int, int, int]:
    """An XWD file's (width, height, distinct pixel values in its image)."""
    header_size, version, _format, depth, width, height = struct.unpack(">6I", data[:24])
    assert version == 7 and depth > 0, (version, depth)
    bytes_per_line, colours = struct.unpack(">I", data[48:52])[0], struct.unpack(">I", data[76:80])[0]
    image = data[header_size + 12 * colours :]
    assert len(image) >= bytes_per_line * height
    return width, height, len({image[index : index + 4] for index in range(0, bytes_per_line * height, 4)})


XEYES = (
    "xdpyinfo | grep -E '^name of display|dimensions'; "
    "xeyes -geometry 120x90+10+10 2>/root/xeyes.err & "
    # Its window, within 30 s (a loaded machine late in a full test run took more than 10 s once);
    # no longer once xeyes has gone.
    "i=0; until xwininfo -name xeyes >/dev/null 2>&1 || [ $i -ge 300 ]; do "
    "kill -0 $! 2>/dev/null || break; sleep 0.1; i=$((i+1)); done; w=$i; "
    # Mapped is not yet drawn: capture again until the picture changes from the first capture (or
    # stays the same for 3 s: then the first one was already drawn).
    "xwd -silent -nobdrs -name xeyes -out /root/first.xwd; i=0; "
    "while xwd -silent -nobdrs -name xeyes -out /root/xeyes.xwd; s=$?; "
    "cmp -s /root/xeyes.xwd /root/first.xwd && [ $i -lt 30 ]; do sleep 0.1; i=$((i+1)); done; "
    "echo xwd=$s; "
    # What the assertion shows when there was no window: how long it was waited for, whether
    # xeyes still ran, and what it said.
    'if [ $s -ne 0 ]; then echo "waited $w"; kill -0 $! 2>/dev/null && echo running || echo gone; '
    "cat /root/xeyes.err; fi; kill $!; wait"
)


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="VMs need root")
def test_x11_apps_from_a_debian_distribution(
    vm_factory: VmFactory,
    xvfb: tuple[str, Path],
    x11_debian_archive: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if shutil.which("xdpyinfo") is None:
        pytest.skip("needs xdpyinfo on the host (x11-utils)")
    number, client_auth = xvfb
    entries = gui_host_environment({"DISPLAY": f":{number}", "XAUTHORITY": str(client_auth)}, 0, "/root")
    booted = vm_factory.boot()
    rootfs = _import_archive(booted, x11_debian_archive, tmp_path / "debian")
    instance = booted.vm.launch_instance("X11Debian", rootfs, default_uid=0, hostname="x11")
    try:
        shown = _run_with_host_environment(monkeypatch, instance, XEYES, entries)
        lines = shown.splitlines()
        # xdpyinfo connects with the carried cookie and sees the host's Xvfb screen.
        assert lines[0].split() == ["name", "of", "display:", f":{number}"], shown
        host = subprocess.run(
            ["xdpyinfo", "-display", f":{number}"],
            env={"XAUTHORITY": str(client_auth), "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT,
            check=True,
        ).stdout
        dimensions = next(line for line in host.splitlines() if "dimensions:" in line)
        assert lines[1] == dimensions, (shown, dimensions)
        assert lines[2] == "xwd=0", shown
        # A screenshot of the window opened from inside: its size, and more than one colour (the eyes).
        width, height, colours = _xwd_image((rootfs / "root/xeyes.xwd").read_bytes())
        assert (width, height) == (120, 90)
        assert colours > 1
    finally:
        instance.terminate(force=True)
