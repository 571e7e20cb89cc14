"""Interop end to end: host programs from inside a busybox distribution, wslpath, WSLENV.

One utility VM (private runtime folder, registry and configuration) and one busybox
distribution serve every test; ``/etc/wsl.conf`` is rewritten and the distribution restarted
where a test needs other settings. The host programs are scripts in a folder that only the
caller's host PATH names. Every test runs twice: with the native client the launcher prefers,
and with the Python client (``PYWSL_INTEROP_CLIENT=python`` in the caller's environment).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import stat
import struct
import subprocess
import tempfile
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from busybox_images import BUSYBOX, busybox_archive, os_release_text
from conftest import pid_alive, wait_until
from test_interop_server import Terminal

from pywsl.api.session.user_session import UserSession
from pywsl.guest import interop_client, interop_messages, path_folder_store
from pywsl.guest.interop_paths import escape_folder

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the utility VM needs root"),
    pytest.mark.skipif(not BUSYBOX.is_file(), reason="no /bin/busybox to build a distribution from"),
]

DISTRO = "InteropBusy"
HOST_SCRIPT = """#!/bin/sh
readlink /proc/self/ns/pid
pwd
id -u
cat
exit 7
"""


class Fixture:
    def __init__(self, session: UserSession, folder: Path) -> None:
        self.session = session
        self.folder = folder
        self.bin = folder / "hostbin"
        self.work = folder / "work dir"
        self.client = "native"

    def shell(self, command: str) -> str:
        """``command`` for the distribution's shell, with the client this test runs with."""
        if self.client == "python":
            return f"export PYWSL_INTEROP_CLIENT=python; {command}"
        return command

    @property
    def host_path(self) -> str:
        return f"/usr/bin:/bin:{self.bin}"

    def run(
        self,
        command: str,
        *,
        stdin: bytes = b"",
        source: dict[str, str] | None = None,
        cwd: str = "",
        user: str = "",
    ) -> tuple[int, str, str]:
        process = self.session.create_lx_process(
            DISTRO,
            [self.shell(command)],
            cwd=cwd,
            username=user,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            wslenv_source={"PATH": self.host_path, **(source or {})},
        )
        out, err = process.communicate(stdin, timeout=60)
        return process.wait(), (out or b"").decode(), (err or b"").decode()

    def configure(self, wsl_conf: str) -> None:
        code, _out, err = self.run(f"printf '%b' '{wsl_conf}' > /etc/wsl.conf", user="root")
        assert code == 0, err
        self.session.terminate_distribution(DISTRO)


@pytest.fixture(scope="module")
def interop() -> Iterator[Fixture]:
    folder = Path(tempfile.mkdtemp(prefix="pywsl-interop-"))
    folder.chmod(0o755)  # the distribution's root is an unprivileged host id: the host programs
    saved = {
        name: os.environ.get(name)
        for name in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "PYWSL_RUNTIME_ROOT", "PYWSL_CONFIG")
    }
    os.environ["XDG_DATA_HOME"] = str(folder / "data")
    os.environ["XDG_CONFIG_HOME"] = str(folder / "config")
    os.environ["PYWSL_RUNTIME_ROOT"] = str(folder / "run")
    os.environ.pop("PYWSL_CONFIG", None)
    (folder / "config" / "pywsl").mkdir(parents=True)
    (folder / "config" / "pywsl" / "wslconfig").write_text(
        "[wsl2]\nvmIdleTimeout=-1\n[general]\ninstanceIdleTimeout=-1\n"
    )
    session = UserSession()
    fixture = Fixture(session, folder)
    try:
        fixture.bin.mkdir(mode=0o755)
        fixture.work.mkdir(mode=0o755)
        script = fixture.bin / "hostonly"
        script.write_text(HOST_SCRIPT)
        script.chmod(0o755)
        archive = folder / "busybox.tar.gz"
        busybox_archive(archive, compression="gz", os_release=os_release_text())
        session.register_distribution(DISTRO, archive)
        yield fixture
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


@pytest.fixture(autouse=True, params=["native", "python"])
def client(request: pytest.FixtureRequest, interop: Fixture) -> Iterator[str]:
    interop.client = request.param
    yield request.param
    interop.client = "native"


def test_the_launcher_prefers_the_native_client(interop: Fixture, client: str) -> None:
    if shutil.which("cc") is None:
        pytest.skip("no C compiler on the host: the Python client serves every call")
    # Static: the launcher is a link to the client; else a script runs it with the host's loader.
    code, out, err = interop.run(
        "readlink /run/WSL/interop/launch || tail -1 /run/WSL/interop/launch; "
        "test -x /run/WSL/interop/launch-python && echo python-client"
    )
    assert code == 0, err
    native, python = out.splitlines()
    assert "/run/WSL/interop/host/" in native and "/interop-native-" in native
    assert python == "python-client"


def test_host_program_by_name_runs_on_the_host(interop: Fixture) -> None:
    host_namespace = os.readlink("/proc/self/ns/pid")
    code, out, err = interop.run(
        f"cd '/mnt/host{interop.work}' && hostonly; echo status=$?", stdin=b"piped in\n"
    )
    assert code == 0, err
    namespace, cwd, uid, piped, status = out.splitlines()
    assert namespace == host_namespace
    assert cwd == str(interop.work)
    assert uid == "0"  # the distribution's owner: root here
    assert piped == "piped in"
    assert status == "status=7"


def test_own_names_and_host_files_by_path_stay_inside(interop: Fixture) -> None:
    host_namespace = os.readlink("/proc/self/ns/pid")
    code, out, err = interop.run(
        f"command -v ls; command -v hostonly; /mnt/host{interop.bin}/hostonly", stdin=b""
    )
    assert code == 7, err
    lines = out.splitlines()
    assert not lines[0].startswith(interop_client.PATH_FOLDER)
    assert lines[1].startswith(interop_client.PATH_FOLDER + "/")
    assert lines[2] != host_namespace  # run by path: the distribution's own sh ran it


def test_environment_inside_and_program_failures(interop: Fixture) -> None:
    code, out, _err = interop.run("echo $WSL_INTEROP; /run/WSL/interop/launch /nonexistent/program; echo $?")
    assert out.splitlines() == ["/run/WSL/1_interop", "127"]
    assert code == 0


def test_signals_reach_the_host_program(interop: Fixture) -> None:
    marker = interop.folder / "trapped"
    marker.unlink(missing_ok=True)
    script = interop.bin / "trapper"
    script.write_text(
        f"#!/bin/sh\ntrap 'echo INT > {marker}; exit 3' INT\necho ready\nwhile :; do sleep 0.05; done\n"
    )
    script.chmod(0o755)
    process = interop.session.create_lx_process(
        DISTRO,
        [interop.shell("exec trapper")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        wslenv_source={"PATH": interop.host_path},
    )
    assert process.stdout is not None
    assert process.stdout.readline() == b"ready\n"
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=30)
    assert wait_until(marker.exists, 10)
    assert marker.read_text() == "INT\n"


def test_terminating_the_distribution_ends_host_programs(interop: Fixture) -> None:
    pid_file = interop.folder / "sleeper.pid"
    pid_file.unlink(missing_ok=True)  # the run with the other client left one
    script = interop.bin / "sleeper"
    script.write_text(
        f"#!/bin/sh\necho $$ > {pid_file}.new && mv {pid_file}.new {pid_file}\nexec sleep 600\n"
    )
    script.chmod(0o755)
    process = interop.session.create_lx_process(
        DISTRO,
        [interop.shell("exec sleeper")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        wslenv_source={"PATH": interop.host_path},
    )
    assert wait_until(pid_file.exists, 20)
    pid = int(pid_file.read_text())
    assert pid_alive(pid)
    interop.session.terminate_distribution(DISTRO)
    process.wait()
    assert wait_until(lambda: not pid_alive(pid), 10)


def test_wslpath_both_ways_with_automount_root(interop: Fixture) -> None:
    interop.configure("[automount]\\nroot=/hostfs/\\n")
    try:
        code, out, err = interop.run(
            "wslpath /srv/x; wslpath -u /; wslpath -w /hostfs/host/srv/x; wslpath -m /hostfs/host; "
            "cd /hostfs/host/srv && wslpath -a -w y; wslpath -w /etc/passwd; wslpath -w rel; "
            "wslpath -x 2>/dev/null; echo bad=$?"
        )
        assert code == 0, err
        lines = out.splitlines()
        assert lines[:5] == ["/hostfs/host/srv/x", "/hostfs/host", "/srv/x", "/", "/srv/y"]
        assert lines[5].endswith("/rootfs/etc/passwd") and lines[5].startswith(str(interop.folder))
        assert lines[6:] == ["rel", "bad=1"]
    finally:
        interop.configure("")


def test_wslenv_flags_both_ways(interop: Fixture) -> None:
    printer = interop.bin / "printenv-host"
    printer.write_text(
        "#!/bin/sh\nfor n in PLAIN PATHVAR LISTVAR INONLY OUTONLY WSLENV; do "
        'eval "echo $n=\\${$n-unset}"; done\n'
    )
    printer.chmod(0o755)
    source = {
        "WSLENV": "PLAIN:PATHVAR/p:LISTVAR/l:INONLY/up:OUTONLY/wp",
        "PLAIN": "/srv/a",
        "PATHVAR": "/srv/b",
        "LISTVAR": "/srv/c:/srv/d",
        "INONLY": "/srv/e",
        "OUTONLY": "/srv/f",
    }
    code, out, err = interop.run(
        'for n in PLAIN PATHVAR LISTVAR INONLY OUTONLY WSLENV; do eval "echo $n=\\${$n-unset}"; done; '
        "export PATHVAR=/mnt/host/opt/p LISTVAR=/mnt/host/opt/l:/etc INONLY=/mnt/host/u OUTONLY=/mnt/host/w; "
        "printenv-host",
        source=source,
    )
    assert code == 0, err
    inside, outside = out.splitlines()[:6], out.splitlines()[6:]
    assert inside == [
        "PLAIN=/srv/a",
        "PATHVAR=/mnt/host/srv/b",
        "LISTVAR=/mnt/host/srv/c:/mnt/host/srv/d",
        "INONLY=/mnt/host/srv/e",
        "OUTONLY=unset",
        f"WSLENV={source['WSLENV']}",
    ]
    rootfs_etc = next(line for line in outside if line.startswith("LISTVAR=")).split(":")[1]
    assert rootfs_etc.endswith("/rootfs/etc")
    assert outside == [
        "PLAIN=/srv/a",
        "PATHVAR=/opt/p",
        f"LISTVAR=/opt/l:{rootfs_etc}",
        "INONLY=unset",
        "OUTONLY=/w",
        f"WSLENV={source['WSLENV']}",
    ]


def test_append_windows_path_false_keeps_the_host_path_out(interop: Fixture) -> None:
    interop.configure("[interop]\\nappendWindowsPath=false\\n")
    try:
        code, out, _err = interop.run(
            f"echo $PATH; hostonly; echo $?; /run/WSL/interop/launch {interop.bin}/hostonly"
        )
        lines = out.splitlines()
        assert interop_client.PATH_FOLDER not in lines[0]
        assert lines[1] == "127"
        assert lines[2] == os.readlink("/proc/self/ns/pid")  # by absolute host path it still works
        assert code == 7
    finally:
        interop.configure("")


def test_interop_disabled(interop: Fixture) -> None:
    interop.configure("[interop]\\nenabled=false\\n")
    try:
        code, out, err = interop.run(
            f"echo $PATH; echo WSL_INTEROP=$WSL_INTEROP; hostonly; echo $?; "
            f"/run/WSL/interop/launch {interop.bin}/hostonly; echo $?; wslpath /srv"
        )
        lines = out.splitlines()
        assert interop_client.PATH_FOLDER not in lines[0]
        assert lines[1:] == ["WSL_INTEROP=", "127", "1", "/mnt/host/srv"]
        assert "interop with the host is disabled" in err
        assert code == 0
    finally:
        interop.configure("")


def test_host_path_folder_follows_changes(interop: Fixture) -> None:
    late = interop.bin / "late-arrival"
    late.unlink(missing_ok=True)  # the run with the other client made it
    code, _out, _err = interop.run("late-arrival")
    assert code == 127
    time.sleep(0.01)  # a distinct modification time for the folder
    late.write_text("#!/bin/sh\necho late\n")
    late.chmod(0o755)
    code, out, err = interop.run("late-arrival")
    assert (code, out) == (0, "late\n"), err


def test_the_booting_callers_folders_are_the_vms_read_only(interop: Fixture) -> None:
    """The folders of the PATH the VM booted with (this process's) are made once for the VM and
    shared read-only; a folder only a launch has is made by the distribution."""
    assert "/usr/bin" in os.environ["PATH"].split(":")
    usr_bin = f"{interop_client.PATH_FOLDER}/{escape_folder('/usr/bin')}"
    own = f"{interop_client.PATH_FOLDER}/{escape_folder(str(interop.bin))}"
    code, out, err = interop.run(
        f"hostonly >/dev/null; readlink {usr_bin}; readlink {own}; "
        "touch /run/WSL/interop/vm-path/x 2>/dev/null; echo $?"
    )
    assert code == 0, err
    shared, made_here, touched = out.splitlines()[-3:]
    assert shared.startswith("/run/WSL/interop/vm-path/%2Fusr%2Fbin@"), out
    assert made_here.startswith(f"{interop_client.PATH_FOLDER}/.generations/"), out
    assert touched != "0"  # read-only
    # Kept on the host (`path_folder_store`): the distribution's root cannot make them writable.
    code, out, err = interop.run(
        "mount -o remount,rw /run/WSL/interop/vm-path 2>/dev/null; echo $?; "
        "touch /run/WSL/interop/vm-path/x 2>/dev/null; echo $?",
        user="root",
    )
    results = out.split()
    assert code == 0 and len(results) == 2 and "0" not in results, (out, err)


def test_the_vms_host_path_folders_are_kept_for_its_next_start(interop: Fixture) -> None:
    """A VM started again uses the host PATH folders its last run made (kept in its runtime
    folder, the VM's root's), rather than making them again."""
    code, _out, err = interop.run("true")
    assert code == 0, err
    store = interop.folder / "run" / "0" / path_folder_store.STORE_NAME
    info = store.stat()
    assert info.st_uid != 0 and stat.S_IMODE(info.st_mode) == 0o755  # the VM's root's, not root's
    (generation,) = (entry for entry in store.iterdir() if entry.name.startswith("%2Fusr%2Fbin@"))
    marker = generation / "marker-of-this-run"
    marker.symlink_to("/nowhere")  # gone if the next start made the generation again
    interop.session.shutdown()
    code, out, err = interop.run(f"readlink {interop_client.PATH_FOLDER}/{escape_folder('/usr/bin')}")
    assert code == 0, err
    assert out.strip() == f"/run/WSL/interop/vm-path/{generation.name}"
    assert marker.is_symlink()
    marker.unlink()


def test_host_program_on_the_callers_terminal_has_a_terminal_of_its_own(interop: Fixture) -> None:
    probe = interop.bin / "ttyprobe"
    probe.write_text(
        "#!/bin/sh\necho tty=$(tty)\necho pg=$(ps -o pgid= -p $$) fg=$(ps -o tpgid= -p $$)\n"
        "echo size=$(stty size)\nread line\necho got=$line\nexit 5\n"
    )
    probe.chmod(0o755)
    terminal = Terminal()
    fcntl.ioctl(terminal.slave, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 101, 0, 0))
    seen: dict[str, bytes] = {}

    def drive() -> None:  # the user at the terminal, while the process is relayed (wait)
        seen["inside"] = terminal.expect(r"inside=(\S+)\r\n").group(1)
        seen["tty"] = terminal.expect(r"tty=(\S+)\r\n").group(1)
        group = terminal.expect(r"pg= *(\d+) fg= *(\d+)\r\n")  # ps pads short pids
        seen["group"], seen["foreground"] = group.group(1), group.group(2)
        seen["size"] = terminal.expect(r"size=(\d+ \d+)\r\n").group(1)
        os.write(terminal.master, b"typed\r")
        seen["got"] = terminal.expect(r"got=(\S+)\r\n").group(1)
        seen["status"] = terminal.expect(r"status=(\d+)\r\n").group(1)

    driver = threading.Thread(target=drive, daemon=True)
    try:
        process = interop.session.create_lx_process(
            DISTRO,
            [interop.shell("echo inside=$(tty); ttyprobe; echo status=$?")],
            stdin=terminal.slave,
            stdout=terminal.slave,
            stderr=terminal.slave,
            wslenv_source={"PATH": interop.host_path},
        )
        driver.start()
        assert process.wait(timeout=120) == 0
        driver.join(timeout=60)
    finally:
        terminal.close()
    assert seen["tty"].startswith(b"/dev/pts/") and seen["tty"] != seen["inside"], seen
    assert seen["group"] == seen["foreground"]  # its controlling terminal, its group in the foreground
    assert (seen["size"], seen["got"], seen["status"]) == (b"33 101", b"typed", b"5")


def test_a_host_program_that_never_exits_keeps_only_its_caller_waiting(interop: Fixture) -> None:
    pid_file = interop.folder / "forever.pid"
    pid_file.unlink(missing_ok=True)  # the run with the other client left one
    script = interop.bin / "forever"
    script.write_text(
        f"#!/bin/sh\necho $$ > {pid_file}.new && mv {pid_file}.new {pid_file}\nexec sleep 600\n"
    )
    script.chmod(0o755)
    waiting = interop.session.create_lx_process(
        DISTRO,
        [interop.shell("exec forever")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        wslenv_source={"PATH": interop.host_path},
    )
    try:
        assert wait_until(pid_file.exists, 30)
        pid = int(pid_file.read_text())
        code, out, err = interop.run("hostonly </dev/null; echo status=$?")
        assert (code, out.splitlines()[-1]) == (0, "status=7"), err
        assert waiting.poll() is None and pid_alive(pid)
        waiting.send_signal(signal.SIGKILL)  # the caller inside goes: so does its host program
        waiting.wait(timeout=60)
        assert wait_until(lambda: not pid_alive(pid), 20)
    finally:
        if waiting.poll() is None:
            waiting.send_signal(signal.SIGKILL)
            waiting.wait(timeout=60)


def test_oversize_argument_lists_are_refused_with_a_clear_error(interop: Fixture) -> None:
    # 1100 arguments of 1004 bytes: more than the interop bounds, well within execve's.
    code, out, err = interop.run(
        'a=$(printf %01000d 0); set -- $(seq 1000 2099 | sed "s/$/$a/"); '
        '/run/WSL/interop/launch /bin/true "$@"; echo status=$?'
    )
    assert (code, out) == (0, "status=126\n")
    assert "Argument list too long" in err and f"at most {interop_messages.MAX_STRINGS_BYTES} bytes" in err


def _instance_socket(interop: Fixture) -> str:
    """The path, from the host, of the distribution's interop socket (through a process's root)."""
    code, out, err = interop.run("stat -c '%d %i' /run/WSL/1_interop")
    assert code == 0, err
    device, inode = (int(word) for word in out.split())
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        path = f"/proc/{entry}/root/run/WSL/1_interop"
        try:
            info = os.stat(path)
        except OSError:
            continue
        if (info.st_dev, info.st_ino) == (device, inode):
            return path
    raise AssertionError("no process of the distribution shows its interop socket")


def test_a_process_outside_the_distribution_cannot_use_its_interop_socket(interop: Fixture) -> None:
    marker = interop.folder / "ran-from-outside"
    path = _instance_socket(interop)
    request = interop_messages.encode_create_process(
        "/bin/sh", "/", ["-c", f"echo ran > {marker}"], ["PATH=/usr/bin:/bin"]
    )
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(path)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # refused before it was read
            socket.send_fds(sock, [request], [0, 1, 2])
        try:
            answer = sock.recv(64)
        except ConnectionResetError:
            answer = b""  # closed with the request unread
        assert answer == b""  # no answer: the connection was refused
    _code, out, _err = interop.run("hostonly </dev/null; echo status=$?")
    assert out.splitlines()[-1] == "status=7"  # served from inside all along
    assert not marker.exists()
