"""`pywsl` run by unprivileged users: the command line reaches the root service over its socket.

Real subprocesses (argument lists, no host shell) run as users created for the module, with an
interpreter every user can run; the service runs as root on a private socket. The workspace,
service and users come from ``test_service_multiuser``; everything is removed at the end.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gzip
import io
import json
import os
import pty
import re
import select
import struct
import subprocess
import tarfile
import termios
import time

import pytest
from busybox_images import DEFAULT_USERS, Account, busybox_archive, os_release_text
from multiuser_support import User, Workspace
from multiuser_support import user_env as _user_env
from test_cli_e2e import Run
from test_service_multiuser import pytestmark, service, users, workspace

__all__ = ["pytestmark", "service", "users", "workspace"]

NOT_FOUND = re.compile(r"Error code: Wsl/\S*WSL_E_DISTRO_NOT_FOUND")


def pywsl(
    workspace: Workspace,
    user: User,
    *args: str,
    input: bytes | None = None,
    timeout: float = 120,
    cwd: os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
) -> Run:
    """``pywsl ARGS`` as ``user``, through the service (in the user's home unless ``cwd``)."""
    result = subprocess.run(
        [str(workspace.python), "-m", "pywsl.cli.main", *args],
        user=user.uid,
        group=user.gid,
        extra_groups=[],
        env={**_user_env(workspace, user), **(env or {})},
        cwd=cwd or user.home,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    return Run(result.returncode, result.stdout, result.stderr)


@pytest.fixture(scope="module")
def box(users: tuple[User, User], workspace: Workspace) -> str:
    """User A's distribution "Box", imported from a file."""
    a, _ = users
    archive = busybox_archive(workspace.folder / "box.tar", usr_bin_links=True)
    result = pywsl(workspace, a, "--import", "Box", str(a.home / "box"), str(archive))
    assert result.returncode == 0, result.err
    assert result.stdout == b""
    assert result.err.endswith("The operation completed successfully.\n")
    assert (a.home / "box" / "rootfs" / "bin" / "busybox").is_file()
    return "Box"


def _names(workspace: Workspace, user: User) -> list[str]:
    """The names ``pywsl -l`` lists for ``user``, in its order."""
    return [r["name"] for r in json.loads(pywsl(workspace, user, "-l", "--format", "json").out)]


def _import_other(workspace: Workspace, user: User) -> None:
    """``user`` imports "Other" (os-release ID "other") from stdin."""
    archive = busybox_archive(os_release=os_release_text("other"), usr_bin_links=True)
    result = pywsl(workspace, user, "--import", "Other", str(user.home / "other"), "-", input=archive)
    assert result.returncode == 0, result.err
    assert result.stdout == b""


@pytest.fixture
def other(users: tuple[User, User], workspace: Workspace, box: str) -> Iterator[str]:
    """User A's distribution "Other" for one test; unregistered after it, and Box the default again."""
    a, _ = users
    _import_other(workspace, a)
    try:
        yield "Other"
    finally:
        if "Other" in _names(workspace, a):
            assert pywsl(workspace, a, "--unregister", "Other").returncode == 0
        assert pywsl(workspace, a, "--set-default", box).returncode == 0


def test_import_from_stdin_and_list(users: tuple[User, User], workspace: Workspace, box: str) -> None:
    a, _ = users
    assert pywsl(workspace, a, "-t", box).returncode == 0  # Box installed and stopped, whatever ran before
    _import_other(workspace, a)
    try:
        assert pywsl(workspace, a, "-d", "other", "true").returncode == 0
        result = pywsl(workspace, a, "-l", "-v")
        assert result.returncode == 0, result.err
        lines = [line.split() for line in result.out.splitlines()]
        assert lines[0] == ["NAME", "STATE", "VERSION"]
        assert sorted(lines[1:]) == [["*", "Box", "Stopped", "2"], ["Other", "Running", "2"]]
        records = json.loads(pywsl(workspace, a, "-l", "--format", "json").out)
        assert [(r["name"], r["default"], r["flavor"]) for r in records] == [
            ("Box", True, "busybox"),
            ("Other", False, "other"),
        ]
        assert pywsl(workspace, a, "-t", "Other").returncode == 0
    finally:
        assert pywsl(workspace, a, "--unregister", "Other").returncode == 0


def test_shell_and_exec_modes(users: tuple[User, User], workspace: Workspace, box: str) -> None:
    a, _ = users
    result = pywsl(workspace, a, "-d", box, "--", "echo", "a  b", "c")
    assert (result.returncode, result.out, result.err) == (0, "a  b c\n", "")  # `echo "a  b" c`
    result = pywsl(workspace, a, "-d", box, "-e", "/bin/echo", "a  b", "c")
    assert (result.returncode, result.out, result.err) == (0, "a  b c\n", "")


def test_exit_status_and_stdout_stderr_split(
    users: tuple[User, User], workspace: Workspace, box: str
) -> None:
    a, _ = users
    result = pywsl(workspace, a, "-d", box, "--", "echo out; echo err >&2; exit 3")
    assert (result.returncode, result.out, result.err) == (3, "out\n", "err\n")
    assert pywsl(workspace, a, "-d", box, "-e", "false").returncode == 1
    assert pywsl(workspace, a, "--", "exit 200").returncode == 200


def test_stdin_round_trip_is_binary_exact(users: tuple[User, User], workspace: Workspace, box: str) -> None:
    a, _ = users
    data = os.urandom(3 << 20) + bytes(range(256)) * 64
    result = pywsl(workspace, a, "-d", box, "--", "cat", input=data)
    assert result.returncode == 0, result.err
    assert len(result.stdout) == len(data) and result.stdout == data


def test_user_and_working_directory(users: tuple[User, User], workspace: Workspace, box: str) -> None:
    a, _ = users
    result = pywsl(workspace, a, "-d", box, "-u", "root", "--", "id", "-u")
    assert (result.returncode, result.out) == (0, "0\n")
    assert pywsl(workspace, a, "-d", box, "-u", "alice", "--", "id", "-u").out == "1000\n"
    result = pywsl(workspace, a, "-d", box, "--cd", "/tmp", "pwd")
    assert (result.returncode, result.out) == (0, "/tmp\n")


def _read_until(master: int, pattern: bytes, seen: bytearray, timeout: float = 60) -> bytes:
    deadline = time.monotonic() + timeout
    while pattern not in seen:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no {pattern!r} in {bytes(seen)!r}"
        ready, _, _ = select.select([master], [], [], remaining)
        if not ready:
            continue
        try:
            chunk = os.read(master, 65536)
        except OSError as error:  # EIO: the terminal's last process is gone
            assert error.errno == errno.EIO
            chunk = b""
        assert chunk, f"the terminal closed before {pattern!r}: {bytes(seen)!r}"
        seen.extend(chunk)
    return bytes(seen)


def test_interactive_login_shell_under_a_pty(
    users: tuple[User, User], workspace: Workspace, box: str
) -> None:
    a, _ = users
    env = _user_env(workspace, a) | {"TERM": "xterm"}
    argv = [str(workspace.python), "-m", "pywsl.cli.main", "-d", box]
    pid, master = pty.fork()
    if pid == 0:  # the child: a terminal of 33 rows and 101 columns, then the user's pywsl
        try:
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 101, 0, 0))
            os.setgroups([])
            os.setgid(a.gid)
            os.setuid(a.uid)
            os.chdir(a.home)
            os.execve(argv[0], argv, env)
        finally:
            os._exit(127)
    try:
        seen = bytearray()
        _read_until(master, b"# ", seen)  # root's prompt
        os.write(master, b"stty size; echo done-$((6*7))\n")
        text = _read_until(master, b"done-42", seen)
        assert b"33 101" in text
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 44, 120, 0, 0))  # a resize
        deadline = time.monotonic() + 30
        answer = b""
        while b"44 120" not in answer:  # the window change travels asynchronously
            assert time.monotonic() < deadline, f"the new size never arrived: {answer!r}"
            os.write(master, b"stty size; echo size-$((2*2))\n")
            answer = _read_until(master, b"size-4", bytearray())
        os.write(master, b"exit 5\n")
        deadline = time.monotonic() + 60
        while True:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                with contextlib.suppress(OSError):
                    os.read(master, 65536)
            finished, status = os.waitpid(pid, os.WNOHANG)
            if finished:
                break
            assert time.monotonic() < deadline, "the shell did not exit"
        assert os.waitstatus_to_exitcode(status) == 5
        pid = 0
    finally:
        if pid:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(master)


def test_export_to_a_file_and_to_stdout(users: tuple[User, User], workspace: Workspace, box: str) -> None:
    a, _ = users
    target = a.home / "box-export.tar.gz"
    result = pywsl(workspace, a, "--export", box, str(target), "--format", "tar.gz")
    assert result.returncode == 0, result.err
    assert result.stdout == b""
    assert target.stat().st_uid == a.uid
    with gzip.open(target) as compressed, tarfile.open(fileobj=compressed) as archive:
        assert any(name.endswith("bin/busybox") for name in archive.getnames())
    target.unlink()
    result = pywsl(workspace, a, "--export", box, "-")
    assert result.returncode == 0, result.err
    assert b"The operation completed successfully" not in result.stdout
    with tarfile.open(fileobj=io.BytesIO(result.stdout), mode="r:") as archive:
        names = archive.getnames()
        assert any(name.endswith("etc/passwd") for name in names)
        assert any(name.endswith("bin/busybox") for name in names)
    assert "The operation completed successfully." not in result.err


def test_another_users_distribution_is_invisible(
    users: tuple[User, User], workspace: Workspace, box: str
) -> None:
    a, b = users
    before = _names(workspace, a)
    assert box in before
    result = pywsl(workspace, a, "-d", "Nope", "true")
    assert result.returncode == 255 and result.stdout == b""
    assert NOT_FOUND.search(result.err), result.err
    assert json.loads(pywsl(workspace, b, "-l", "--format", "json").out) == []
    target = b.home / "stolen.tar"
    for args in (
        ("-d", box, "true"),
        ("-t", box),
        ("-s", box),
        ("--unregister", box),
        ("--export", box, str(target)),
    ):
        result = pywsl(workspace, b, *args)
        assert result.returncode == 255 and result.stdout == b"", args
        assert NOT_FOUND.search(result.err), (args, result.err)
    assert not target.exists()
    assert _names(workspace, a) == before


def test_paths_the_user_cannot_reach_are_refused(
    users: tuple[User, User], workspace: Workspace, box: str
) -> None:
    a, _ = users
    private = workspace.folder / "root-only"
    private.mkdir(mode=0o700)
    secret = busybox_archive(private / "secret.tar")
    secret.chmod(0o600)
    protected = workspace.folder / "protected.tar"
    protected.write_bytes(b"root's")
    protected.chmod(0o644)
    link = a.home / "link.tar"
    link.symlink_to(protected)
    os.chown(link, a.uid, a.gid, follow_symlinks=False)
    before = _names(workspace, a)
    attempts = (
        ("--import", "Secret", str(a.home / "secret"), str(secret)),
        ("--import", "Inside", str(private / "inside"), str(workspace.folder / "box.tar")),
        ("--export", box, str(private / "out.tar")),
        ("--export", box, str(link)),
    )
    try:
        for args in attempts:
            result = pywsl(workspace, a, *args)
            assert result.returncode == 255 and result.stdout == b"", args
            assert "Permission denied" in result.err and "E_ACCESSDENIED" in result.err, (args, result.err)
        assert sorted(os.listdir(private)) == ["secret.tar"]
        assert protected.read_bytes() == b"root's"
        assert not (a.home / "secret").exists()
        assert _names(workspace, a) == before
    finally:
        link.unlink()
        protected.unlink()
        secret.unlink()
        private.rmdir()


def test_shutdown_stops_only_the_callers_vm(users: tuple[User, User], workspace: Workspace, box: str) -> None:
    a, b = users
    result = pywsl(workspace, b, "--import", "Bee", str(b.home / "bee"), str(workspace.folder / "box.tar"))
    assert result.returncode == 0, result.err
    command = [str(workspace.python), "-m", "pywsl.cli.main", "--", "echo started; sleep 2; echo alive"]
    running = subprocess.Popen(
        command,
        user=b.uid,
        group=b.gid,
        extra_groups=[],
        env=_user_env(workspace, b),
        cwd=b.home,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert running.stdout is not None
        ready, _, _ = select.select([running.stdout], [], [], 60)
        assert ready and running.stdout.readline() == b"started\n"
        assert pywsl(workspace, a, "-d", box, "true").returncode == 0
        result = pywsl(workspace, a, "--shutdown")
        assert (result.returncode, result.out) == (0, ""), result.err
        out, err = running.communicate(timeout=60)
        assert (running.returncode, out, err) == (0, b"alive\n", b"")
    finally:
        if running.poll() is None:
            running.kill()
            running.wait()
        assert pywsl(workspace, b, "--unregister", "Bee").returncode == 0


def test_terminate_set_default_unregister_shutdown(
    users: tuple[User, User], workspace: Workspace, box: str, other: str
) -> None:
    a, _ = users
    assert pywsl(workspace, a, "-d", box, "true").returncode == 0
    assert pywsl(workspace, a, "-l", "--running", "-q").out.splitlines() == ["Box"]
    result = pywsl(workspace, a, "-t", box)
    assert (result.returncode, result.out, result.err) == (0, "", "The operation completed successfully.\n")
    assert json.loads(pywsl(workspace, a, "-l", "--running", "--format", "json").out) == []

    assert pywsl(workspace, a, "--set-default", other.lower()).returncode == 0
    records = json.loads(pywsl(workspace, a, "-l", "--format", "json").out)
    assert [r["name"] for r in records if r["default"]] == ["Other"]
    assert pywsl(workspace, a, "--", "cat /etc/os-release").out.startswith("ID=other")

    result = pywsl(workspace, a, "--unregister", other)
    assert result.returncode == 0, result.err
    assert not (a.home / "other" / "rootfs").exists()
    assert NOT_FOUND.search(pywsl(workspace, a, "-d", "Other", "true").err)
    assert [r["name"] for r in json.loads(pywsl(workspace, a, "-l", "--format", "json").out)] == ["Box"]

    assert pywsl(workspace, a, "-d", box, "true").returncode == 0
    result = pywsl(workspace, a, "--shutdown")
    assert (result.returncode, result.out) == (0, ""), result.err
    assert json.loads(pywsl(workspace, a, "-l", "--running", "--format", "json").out) == []


# -- the caller's folder, exec failures, configuration warnings, messages ---------------------------


def test_default_working_directory_is_the_callers_folder(
    users: tuple[User, User], workspace: Workspace, box: str
) -> None:
    a, _ = users
    project = a.home / "project"
    project.mkdir(mode=0o700)
    os.chown(project, a.uid, a.gid)
    try:
        result = pywsl(workspace, a, "-d", box, "-u", "alice", "pwd", cwd=project)
        assert (result.returncode, result.out, result.err) == (0, f"/mnt/host{project}\n", "")
        # bob's uid inside is not the user's: the folder (0700) is out of his reach.
        archive = busybox_archive(
            workspace.folder / "bob.tar", users=(*DEFAULT_USERS, Account("bob", 1001, "/home/bob", "Bob"))
        )
        result = pywsl(workspace, a, "--import", "Bobs", str(a.home / "bobs"), str(archive))
        assert result.returncode == 0, result.err
        try:
            result = pywsl(workspace, a, "-d", "Bobs", "-u", "bob", "--", "pwd", cwd=project)
            assert (result.returncode, result.out) == (0, "/home/bob\n")
            assert result.err == f"wsl: Failed to translate '{project}'\n"
        finally:
            assert pywsl(workspace, a, "--unregister", "Bobs").returncode == 0
        assert pywsl(workspace, a, "-d", box, "--cd", "/tmp", "pwd", cwd=project).out == "/tmp\n"
    finally:
        project.rmdir()


def test_exec_mode_with_a_missing_program(users: tuple[User, User], workspace: Workspace, box: str) -> None:
    a, _ = users
    result = pywsl(workspace, a, "-d", box, "-e", "no-such-program")
    assert (result.returncode, result.out) == (1, ""), result.err
    assert "execvpe(no-such-program) failed: No such file or directory\n" in result.err
    assert pywsl(workspace, a, "-d", box, "--", "no-such-program").returncode == 127
    result = pywsl(workspace, a, "-d", box, "--exec")
    assert result.returncode == 255
    assert result.err == "The parameter is incorrect.\nError code: Wsl/E_INVALIDARG\n"


def test_wslconfig_warnings_reach_the_user(users: tuple[User, User], workspace: Workspace, box: str) -> None:
    a, _ = users
    config = a.home / ".config" / "pywsl" / "wslconfig"
    for folder in (config.parent.parent, config.parent):
        folder.mkdir(exist_ok=True)
        os.chown(folder, a.uid, a.gid)
    config.write_text("[wsl2]\nbogusKey = 1\n")
    os.chown(config, a.uid, a.gid)
    try:
        assert pywsl(workspace, a, "--shutdown").returncode == 0
        result = pywsl(workspace, a, "-d", box, "echo", "booted")
        assert (result.returncode, result.out) == (0, "booted\n")
        assert result.err == f"wsl: Unknown key 'wsl2.bogusKey' in {config}:2\n"
        assert pywsl(workspace, a, "--shutdown").returncode == 0
        result = pywsl(workspace, a, "-d", box, "true", env={"WSL_DISABLE_WARNINGS": "1"})
        assert (result.returncode, result.err) == (0, "")
        config.write_text(f"[wsl2]\nkernel = {a.home}/no-such-kernel\n")
        assert pywsl(workspace, a, "--shutdown").returncode == 0
        result = pywsl(workspace, a, "-d", box, "true")
        assert result.returncode == 255
        assert result.err.startswith(
            f"The custom kernel specified in {config} was not found: "
            f"'{a.home}/no-such-kernel'.\nError code: Wsl/"
        )
    finally:
        config.unlink()
        pywsl(workspace, a, "--shutdown")


def test_a_user_with_nothing_installed(users: tuple[User, User], workspace: Workspace, box: str) -> None:
    _, b = users
    result = pywsl(workspace, b, "--", "true")
    assert (result.returncode, result.out) == (255, "")
    assert result.err.startswith(
        "pywsl has no installed distributions.\nYou can resolve this by installing a distribution"
    )
    assert "'pywsl --install <Distro>' to install.\n" in result.err
    assert "Windows Subsystem for Linux" not in result.err


# -- the install location: made by --import, removed on failure and by --unregister -----------------


def test_import_location_is_made_as_the_user_and_removed_again(
    users: tuple[User, User], workspace: Workspace, box: str
) -> None:
    a, _ = users
    archive = str(workspace.folder / "box.tar")
    made = a.home / "made"
    try:
        result = pywsl(workspace, a, "--import", "Made", str(made), archive)
        assert result.returncode == 0, result.err
        info = made.stat()
        assert (info.st_uid, info.st_mode & 0o7777) == (a.uid, 0o700)
        assert pywsl(workspace, a, "-d", "Made", "--", "echo in").out == "in\n"
        assert pywsl(workspace, a, "--unregister", "Made").returncode == 0
        assert not made.exists()

        kept = a.home / "kept"
        kept.mkdir()
        (kept / "notes.txt").write_text("mine")
        for path in (kept, kept / "notes.txt"):
            os.chown(path, a.uid, a.gid)
        assert pywsl(workspace, a, "--import", "Kept", str(kept), archive).returncode == 0
        assert pywsl(workspace, a, "--unregister", "Kept").returncode == 0
        assert os.listdir(kept) == ["notes.txt"] and (kept / "notes.txt").read_text() == "mine"
        (kept / "notes.txt").unlink()
        kept.rmdir()
    finally:
        for name in {"Made", "Kept"} & set(_names(workspace, a)):
            pywsl(workspace, a, "--unregister", name)

    corrupt = workspace.folder / "corrupt.tar.gz"
    corrupt.write_bytes(gzip.compress(b"this is not a tar archive\n" * 64)[:200])
    corrupt.chmod(0o644)
    try:
        broken = a.home / "broken"
        result = pywsl(workspace, a, "--import", "Broken", str(broken), str(corrupt))
        assert result.returncode == 255 and result.stdout == b"" and "Error code: Wsl/" in result.err
        assert not broken.exists()
        result = pywsl(workspace, a, "--import", "Broken", str(a.home / "no-parent" / "broken"), archive)
        assert (result.returncode, result.out, result.err) == (
            255,
            "",
            "The system cannot find the path specified.\nError code: Wsl/ERROR_PATH_NOT_FOUND\n",
        )
        assert not (a.home / "no-parent").exists()
    finally:
        corrupt.unlink()
    names = [r["name"] for r in json.loads(pywsl(workspace, a, "-l", "--format", "json").out)]
    assert not {"Made", "Kept", "Broken"} & set(names)


def test_device_nodes_are_skipped_with_one_warning(
    users: tuple[User, User], workspace: Workspace, box: str
) -> None:
    """The warning travels with the service's reply; the archive also comes in on stdin."""
    from stat import S_ISFIFO

    from test_cli_e2e import DEVICES_WARNING, archive_entries, device_node_archive, without_device_nodes

    a, _ = users
    archive = device_node_archive(workspace.folder / "devices.tar.gz")
    location = a.home / "devices"
    try:
        for source, data in ((str(archive), None), ("-", archive.read_bytes())):
            result = pywsl(workspace, a, "--import", "Devices", str(location), source, input=data)
            assert (result.returncode, result.out) == (0, ""), result.err
            assert result.err.splitlines()[-2:] == [DEVICES_WARNING, "The operation completed successfully."]
            assert result.err.count("device nodes") == 1
            exported = pywsl(workspace, a, "--export", "Devices", "-")
            assert exported.returncode == 0, exported.err
            assert archive_entries(exported.stdout) == without_device_nodes(archive)
            assert S_ISFIFO(os.lstat(location / "rootfs" / "dev" / "initctl").st_mode)
            assert pywsl(workspace, a, "--unregister", "Devices").returncode == 0
        result = pywsl(
            workspace,
            a,
            "--import",
            "Devices",
            str(location),
            str(archive),
            env={"WSL_DISABLE_WARNINGS": "1"},
        )
        assert result.returncode == 0 and "device nodes" not in result.err
        assert pywsl(workspace, a, "--unregister", "Devices").returncode == 0
        truncated = archive.read_bytes()[:-300]
        result = pywsl(workspace, a, "--import", "Devices", str(location), "-", input=truncated)
        assert result.returncode == 255 and "Error code: Wsl/" in result.err
        assert not location.exists()
    finally:
        pywsl(workspace, a, "--unregister", "Devices")
        archive.unlink()


# -- built-in distributions through the service, and a service that is not running -----------------

from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from test_install_support import debian_archive  # noqa: E402  (the session's cached Debian build)

__all__ += ["debian_archive"]


def test_a_service_that_is_not_running_says_how_to_start_it(
    users: tuple[User, User], workspace: Workspace, box: str
) -> None:
    a, _ = users
    absent = workspace.folder / "absent.sock"
    result = pywsl(workspace, a, "-l", env={"PYWSL_SERVICE_SOCKET": str(absent)})
    assert (result.returncode, result.out) == (255, "")
    assert (
        f"The pywsl service is not running (cannot connect to {absent}: No such file or directory)"
        in result.err
    )
    assert "systemctl enable --now pywsl.socket" in result.err and "'pywsl-service'" in result.err
    assert result.err.rstrip().endswith("ERROR_SERVICE_NOT_ACTIVE")


@pytest.fixture
def build_cache(service: Any, workspace: Workspace) -> Iterator[Path]:
    """The module's service restarted with its build folder in the workspace; restored afterwards."""
    import shutil

    from pywsl.api.install.builtin_cache import BUILD_CACHE_ENV

    folder = workspace.folder / "build-cache"
    service.stop()
    service.env[BUILD_CACHE_ENV] = str(folder)
    try:
        service.start()
        yield folder
    finally:
        service.stop()
        service.env.pop(BUILD_CACHE_ENV, None)
        service.start()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_a_user_installs_builtin_debian_through_the_service(
    users: tuple[User, User], workspace: Workspace, box: str, build_cache: Path, debian_archive: Path
) -> None:
    """The manifest is unreachable: the built-in Debian is built by the service (here: this run's
    build, kept in the service's build folder) and imported for the user."""
    import shutil

    from test_install_support import closed_port_url

    from pywsl.api.install.builtin_cache import BuildCache
    from pywsl.api.install.builtin_catalog import find_builtin
    from pywsl.api.install.manifest import URL_ENV

    entry = find_builtin("Debian")
    if entry is None:
        pytest.skip("this host cannot build Debian")
    cache = BuildCache(build_cache)
    cache.prepare()
    shutil.copyfile(debian_archive, cache.path_for(entry))
    os.chmod(cache.path_for(entry), 0o600)
    a, _ = users
    try:
        result = pywsl(
            workspace, a, "--install", "Debian", "--no-launch", env={URL_ENV: closed_port_url()}, timeout=600
        )
        assert (result.returncode, result.out) == (0, ""), result.err
        lines = result.err.splitlines()
        assert "Using the distribution built locally instead." in lines
        assert f"Installing: {entry.friendly_name}" in lines
        assert lines[-1] == "Distribution successfully installed. It can be launched via 'pywsl -d Debian'"
        result = pywsl(workspace, a, "-d", "Debian", "--", ". /etc/os-release; echo $VERSION_CODENAME")
        assert (result.returncode, result.out) == (0, "bookworm\n"), result.err
        records = json.loads(pywsl(workspace, a, "-l", "--format", "json").out)
        assert [r["flavor"] for r in records if r["name"] == "Debian"] == ["debian"]
    finally:
        pywsl(workspace, a, "--unregister", "Debian")
