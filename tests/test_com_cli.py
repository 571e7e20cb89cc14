"""The `pywsl` command line, the examples and `pywsl-service` as on Windows: each runs in a process
made to look like Windows (sys.platform "win32", no fcntl/termios/pwd/grp/..., no Linux-only names
in os, signal and socket) against a fake WslService over the COM path (tests/windows_simulation.py).
Output and exit status are wsl.exe's."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
SIMULATION = TESTS / "windows_simulation.py"
DEBIAN = "11111111-2222-3333-4444-555555555555"


def simulate(
    tmp_path: Path,
    *argv: str,
    profile: Path | None = None,
    env_extra: dict[str, str] | None = None,
) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    record = tmp_path / "calls.jsonl"
    record.unlink(missing_ok=True)
    (tmp_path / "service.jsonl").unlink(missing_ok=True)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYWSL_", "WSL"))
        and key != "USERPROFILE"
        and not key.lower().endswith("_proxy")
    }
    env.update(
        PYTHONPATH=str(ROOT),
        PYWSL_SIMULATION_RECORD=str(record),
        PYWSL_SIMULATION_CALLS=str(tmp_path / "service.jsonl"),
        **(env_extra or {}),
    )
    if profile is not None:
        env["USERPROFILE"] = str(profile)
    result = subprocess.run(
        [sys.executable, str(SIMULATION), *argv],
        cwd=tmp_path,
        env=env,
        text=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )
    calls = [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []
    return result, calls


def service_calls(tmp_path: Path, *methods: str) -> list[dict[str, Any]]:
    """The calls the last simulated command made to the fake service's `methods`, in order."""
    path = tmp_path / "service.jsonl"
    calls = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [call for call in calls if call["method"] in methods]


def test_list_verbose_prints_wsl_exe_table(tmp_path: Path) -> None:
    result, _ = simulate(tmp_path, "cli", "-l", "-v")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == (
        "  NAME      STATE           VERSION\n* Debian    Running         2\n  Ubuntu    Stopped         2\n"
    )


def test_the_pywsl_backend_setting_is_reported_as_ignored(tmp_path: Path) -> None:
    profile = tmp_path / "profile"
    profile.mkdir()
    (profile / ".wslconfig").write_text("[wsl2]\nmemory=4GB\n[pywsl]\nbackend = qemu\n")
    result, _ = simulate(tmp_path, "cli", "-d", "Debian", "--", "echo", "hi", profile=profile)
    assert (result.returncode, result.stdout) == (0, "hi\n")
    assert result.stderr == (
        f"wsl: Ignored key 'pywsl.backend' in {profile / '.wslconfig'}:4: on Windows "
        "the installed WslService runs WSL's own virtual machine\n"
    )
    (profile / ".wslconfig").write_text("[wsl2]\nmemory=4GB\n")
    quiet, _ = simulate(tmp_path, "cli", "-l", "-v", profile=profile)
    assert (quiet.returncode, quiet.stderr) == (0, "")


def test_a_launch_runs_in_the_named_distribution_from_the_windows_folder(tmp_path: Path) -> None:
    result, calls = simulate(tmp_path, "cli", "-d", "Debian", "--", "echo", "hi")
    assert (result.returncode, result.stdout, result.stderr) == (0, "hi\n", "")
    # The caller's folder travels as the Windows directory, which the service translates.
    assert calls == [
        {"distro": DEBIAN, "command": ["echo hi"], "filename": None, "cwd": str(tmp_path), "user": None}
    ]


@pytest.mark.parametrize(
    "argv",
    [
        ("--cd", "C:\\work", "--", "echo", "x"),  # the fast path
        ("--shell-type", "none", "--cd", "C:\\work", "--", "echo", "x"),  # click's grammar
    ],
)
def test_cd_with_a_windows_path_makes_it_the_folder_sent(tmp_path: Path, argv: tuple[str, ...]) -> None:
    (tmp_path / "C:\\work").mkdir()  # relative to the simulation's folder, as a drive path is on Windows
    result, calls = simulate(tmp_path, "cli", *argv)
    assert (result.returncode, result.stdout, result.stderr) == (0, "x\n", "")
    assert calls[0]["cwd"] == str(tmp_path / "C:\\work")


def test_cd_refuses_a_relative_path_and_reports_a_missing_folder(tmp_path: Path) -> None:
    relative, calls = simulate(tmp_path, "cli", "--cd", "work", "--", "echo", "x")
    assert (relative.returncode, relative.stdout, calls) == (255, "", [])
    assert relative.stderr == (
        "Invalid directory for --cd: 'work'. Use a path inside the distribution, "
        "starting with / or ~.\nError code: Wsl/E_INVALIDARG\n"
    )
    missing, calls = simulate(tmp_path, "cli", "--cd", "C:\\nowhere", "--", "echo", "x")
    assert (missing.returncode, missing.stdout, calls) == (255, "", [])
    assert missing.stderr == (
        "The system cannot find the file specified.\nError code: Wsl/ERROR_FILE_NOT_FOUND\n"
    )


def test_the_process_exit_status_is_pywsl_s(tmp_path: Path) -> None:
    result, calls = simulate(tmp_path, "cli", "--", "exit", "3")
    assert (result.returncode, result.stdout, result.stderr) == (3, "", "")
    assert calls[0]["distro"] is None  # the default distribution: a NULL GUID, as wsl.exe


@pytest.mark.parametrize(
    "argv",
    [
        ("--cd", "~", "-u", "root", "--", "missing"),  # the fast path
        ("--shell-type", "standard", "--cd", "~", "-u", "root", "--", "missing"),  # click's grammar
    ],
)
def test_options_reach_create_lx_process_and_stderr_is_relayed(tmp_path: Path, argv: tuple[str, ...]) -> None:
    result, calls = simulate(tmp_path, "cli", *argv)
    assert (result.returncode, result.stdout) == (127, "")
    assert result.stderr == "/bin/sh: 1: missing: not found\n"
    assert calls == [{"distro": None, "command": ["missing"], "filename": None, "cwd": "~", "user": "root"}]


def test_exec_mode_passes_the_program_and_its_argv(tmp_path: Path) -> None:
    result, calls = simulate(tmp_path, "cli", "-d", "debian", "--exec", "echo", "x")
    assert (result.returncode, result.stdout) == (0, "x\n")
    assert calls[0]["filename"] == "echo" and calls[0]["command"] == ["echo", "x"]


def test_an_unknown_distribution_is_wsl_exe_s_error(tmp_path: Path) -> None:
    result, calls = simulate(tmp_path, "cli", "-d", "Nope", "--", "echo", "hi")
    assert (result.returncode, result.stdout, calls) == (255, "", [])
    assert result.stderr == (
        "There is no distribution with the supplied name.\n"
        "Error code: Wsl/Service/GetDistroId/WSL_E_DISTRO_NOT_FOUND\n"
    )


def test_status_and_version_need_nothing_linux_only(tmp_path: Path) -> None:
    status, _ = simulate(tmp_path, "cli", "--status")
    assert (status.returncode, status.stdout, status.stderr) == (
        0,
        "Default Distribution: Debian\nDefault Version: 2\n",
        "",
    )
    version, _ = simulate(tmp_path, "cli", "--version")
    assert version.returncode == 0 and version.stdout.startswith("pywsl version: ")
    assert "Kernel version: " in version.stdout and version.stderr == ""


def test_the_service_entry_point_says_it_is_linux_only(tmp_path: Path) -> None:
    result, _ = simulate(tmp_path, "service")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.strip() == (
        "pywsl-service: the pywsl service runs on Linux only. On Windows, "
        "`pywsl` and `pywsl.connect()` use the installed WslService."
    )


def test_examples_run_unchanged(tmp_path: Path) -> None:
    examples = ROOT / "examples"
    captured, _ = simulate(tmp_path, "example", str(examples / "run_and_capture.py"), "Debian", "echo", "hi")
    assert (captured.returncode, captured.stderr) == (0, "")
    assert captured.stdout == "exit status: 0\nstdout (3 bytes): 'hi\\n'\nstderr (0 bytes): ''\n"
    streamed, _ = simulate(tmp_path, "example", str(examples / "stream_output.py"), "Debian", "2")
    digest = hashlib.sha256(bytes(2 << 20)).hexdigest()
    assert (streamed.returncode, streamed.stdout) == (0, f"{2 << 20} bytes sha256={digest} exit status 0\n")
    archive = tmp_path / "rootfs.tar"
    archive.write_bytes(b"rootfs")
    imported, _ = simulate(tmp_path, "example", str(examples / "import_distribution.py"), "New", str(archive))
    assert (imported.returncode, imported.stdout) == (0, "New 99999999-8888-7777-6666-555555555555 - -\n")
    target = tmp_path / "out.tar"
    exported, _ = simulate(
        tmp_path, "example", str(examples / "export_distribution.py"), "Debian", str(target)
    )
    assert (exported.returncode, exported.stderr) == (0, "")
    assert target.read_bytes() == f"archive of {DEBIAN}".encode()


def test_raw_console_modes_are_wsl_exe_s() -> None:
    from pywsl.api.com import win32

    # The default console modes: cooked input (line, echo, processed, insert, quick edit...), and
    # processed output that wraps at the end of a line.
    assert win32.raw_input_mode(0x1F7) == 0x3D0
    assert win32.raw_output_mode(0x3) == 0xF


def test_a_console_stdin_is_raw_while_the_process_runs() -> None:
    from test_com_relay import EXIT_STATUS, launch
    from test_com_session import FakeSession, PosixHost

    from pywsl.api.com import layout
    from pywsl.api.com.relay import read_message

    fake, host = FakeSession(), PosixHost()
    host.is_console = lambda handle: handle == 0  # type: ignore[method-assign]
    read_end, write_end = os.pipe()
    saved_stdin = os.dup(0)
    try:
        os.dup2(read_end, 0)  # the console the relay reads: a pipe standing in
        process, relay = launch(fake, host, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        relay[0].settimeout(30)
        relay[4].settimeout(30)
        assert host.console_modes == ["raw"]
        handles = fake.named("CreateLxProcess")["StdHandles"].contents
        assert handles.StdIn.HandleType == layout.LXSS_HANDLE_CONSOLE
        os.write(write_end, b"keys\x03")
        os.close(write_end)
        write_end = -1
        received = b""
        while chunk := relay[0].recv(1024):  # the stdin thread is done with fd 0 at this end
            received += chunk
        assert received == b"keys\x03"
        relay[4].sendall(EXIT_STATUS.build(ExitCode=0))
        assert read_message(relay[4]) == EXIT_STATUS.build(ExitCode=0)
        for sock in relay:
            sock.close()
        assert process.wait(30) == 0
        assert host.console_modes == ["raw", "restored"]
        process.close()
        assert host.console_modes == ["raw", "restored"]  # once
    finally:
        os.dup2(saved_stdin, 0)
        for fd in (saved_stdin, read_end, write_end):
            if fd >= 0:
                os.close(fd)


def test_a_failed_launch_restores_the_console() -> None:
    from test_com_session import FakeSession, PosixHost, fail_with

    from pywsl.api.com.session import ComUserSession
    from pywsl.api.com.vtable import ComInterface
    from pywsl.api.errors import WslError

    fake, host = FakeSession(), PosixHost()
    host.is_console = lambda handle: handle == 0  # type: ignore[method-assign]
    fake.handlers["CreateLxProcess"] = fail_with(0x80040302, "No such distribution.", 0x1)
    session = ComUserSession(ComInterface(fake.pointer, host.free), host)
    with pytest.raises(WslError):
        session.create_lx_process(None, ["true"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert host.console_modes == ["raw", "restored"]
