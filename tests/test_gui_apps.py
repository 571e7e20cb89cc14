"""GUI apps: the caller's own X11 socket and cookie reach a distribution as WSLg lays them out.

The real check starts ``Xvfb -nolisten tcp -auth <cookie file>`` on the host, shares its socket
with a busybox distribution and makes an X11 connection setup from inside: a child of the test
joins the distribution's user and mount namespaces as its root, connects to
``/tmp/.X11-unix/X<n>`` there and sends the cookie from the ``XAUTHORITY`` file written inside.
The server accepts it, and refuses the same setup without the cookie. Another user's socket and
a socket that changed since the host checked it are never shared; ``guiApplications=false``
turns sharing off.
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
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import BootedVm, VmFactory, host_pid, run_in

import pywsl.vm
from pywsl.api.session.gui_share import display_number, gui_host_environment, xauthority_cookie
from pywsl.api.session.wslconfig import load_wslconfig
from pywsl.guest import forking, gui, syscalls

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
