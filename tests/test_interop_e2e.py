"""Interop end to end: host programs from inside a busybox distribution, wslpath, WSLENV.

One utility VM (private runtime folder, registry and configuration) and one busybox
distribution serve every test; ``/etc/wsl.conf`` is rewritten and the distribution restarted
where a test needs other settings. The host programs are scripts in a folder that only the
caller's host PATH names.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from busybox_images import BUSYBOX, busybox_archive, os_release_text
from conftest import pid_alive, wait_until

from pywsl.api.session.user_session import UserSession
from pywsl.guest import interop_client
from pywsl.wire import schema

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
            [command],
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


def test_client_encoding_matches_the_wire_schema() -> None:
    arguments, environment = ["a", "", "b c"], ["A=1", "PATH=/usr/bin"]
    built = schema("LX_INIT_CREATE_NT_PROCESS_UTILITY_VM").build(
        Port=0,
        Common={
            "StdFdIds": [0, 0, 0],
            "Filename": "/usr/bin/x",
            "CurrentWorkingDirectory": "/srv",
            "Environment": environment,
            "CommandLine": arguments,
            "Rows": 24,
            "Columns": 80,
            "CreatePseudoconsole": False,
        },
    )
    assert interop_client.encode_create_process("/usr/bin/x", "/srv", arguments, environment, 24, 80) == built
    empty = schema("LX_INIT_CREATE_NT_PROCESS_UTILITY_VM").build(
        Port=0,
        Common={
            "StdFdIds": [0, 0, 0],
            "Filename": "",
            "CurrentWorkingDirectory": "",
            "Environment": [],
            "CommandLine": [],
            "Rows": 0,
            "Columns": 0,
            "CreatePseudoconsole": False,
        },
    )
    assert interop_client.encode_create_process("", "", [], []) == empty
    assert interop_client.encode_signal(2) == schema("PYWSL_SIGNAL_PROCESS").build(Signal=2)


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
    script = interop.bin / "trapper"
    script.write_text(
        f"#!/bin/sh\ntrap 'echo INT > {marker}; exit 3' INT\necho ready\nwhile :; do sleep 0.05; done\n"
    )
    script.chmod(0o755)
    process = interop.session.create_lx_process(
        DISTRO,
        ["trapper"],
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
    script = interop.bin / "sleeper"
    script.write_text(
        f"#!/bin/sh\necho $$ > {pid_file}.new && mv {pid_file}.new {pid_file}\nexec sleep 600\n"
    )
    script.chmod(0o755)
    process = interop.session.create_lx_process(
        DISTRO,
        ["sleeper"],
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
    code, _out, _err = interop.run("late-arrival")
    assert code == 127
    time.sleep(0.01)  # a distinct modification time for the folder
    late.write_text("#!/bin/sh\necho late\n")
    late.chmod(0o755)
    code, out, err = interop.run("late-arrival")
    assert (code, out) == (0, "late\n"), err
