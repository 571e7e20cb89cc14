"""`pywsl` end to end, as wsl.exe behaves: export progress on a terminal, `xz -T0`, the states
`-l -v` shows while an import or export runs, argument checks in wsl.exe's order, and archives that
are not a Linux distribution.

Uses `test_cli_e2e`'s private home, registry, configuration and VM runtime fixtures (a module of its
own: its own VM, shut down at the end).
"""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import select
import struct
import subprocess
import sys
import tarfile
import termios
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from test_cli_e2e import Pywsl, box, pytestmark, pywsl, workspace

__all__ = ["box", "pytestmark", "pywsl", "workspace"]  # the module-scoped fixtures used here

EXPORT_LINE = "Export in progress, this may take a few minutes.\n"
SUCCESS = "The operation completed successfully.\n"
# rich's figures: "2.1 MB (1.5 MB/s)", "512 bytes (0 bytes/s)"
PROGRESS_FIGURES = re.compile(rb"[0-9.]+ (?:bytes?|[kMGT]B) \([0-9.]+ (?:bytes?|[kMGT]B)/s\)")
WAIT_LIMIT = 60.0


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pywsl.cli.main", *args]


def _until(condition: Callable[[], bool], what: str, limit: float = WAIT_LIMIT) -> None:
    """Poll `condition` (each call runs a command, so it paces itself) until true or `limit`."""
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"


class TerminalStderr:
    """A pseudo-terminal for a command's stderr; everything written to it is collected."""

    def __init__(self) -> None:
        self.master, self.slave = pty.openpty()
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 200, 0, 0))
        self.output = bytearray()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            ready, _, _ = select.select([self.master], [], [], 1.0)
            if not ready:
                continue
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return  # EIO: the slave is closed everywhere
            if not data:
                return
            self.output.extend(data)

    def close(self) -> bytes:
        os.close(self.slave)
        self._reader.join(10)
        os.close(self.master)
        return bytes(self.output)


def _run_with_terminal_stderr(pywsl: Pywsl, *args: str) -> tuple[int, bytes, bytes]:
    """(exit status, stdout, what the terminal on stderr received)."""
    terminal = TerminalStderr()
    try:
        process = subprocess.run(
            _command(*args),
            env={**pywsl.env, "TERM": "xterm"},
            cwd="/",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=terminal.slave,
            timeout=300,
            check=False,
        )
    finally:
        shown = terminal.close()
    return process.returncode, process.stdout or b"", shown


def _xz_block_sizes_in_headers(path: Path) -> list[str]:
    """The "size fields present" column of `xz --robot -lvv` per block: "cu" when xz ran threaded."""
    listing = subprocess.run(["xz", "--robot", "-lvv", str(path)], capture_output=True, text=True, check=True)
    return [line.split("\t")[12] for line in listing.stdout.splitlines() if line.startswith("block\t")]


# -- export: progress and xz -T0 ------------------------------------------------------------------


def test_export_shows_progress_on_a_terminal(pywsl: Pywsl, box: str, workspace: Path) -> None:
    target = workspace / "progress.tar.xz"
    status, _, shown = _run_with_terminal_stderr(pywsl, "--export", box, str(target))
    assert status == 0, shown
    assert PROGRESS_FIGURES.search(shown), shown  # bytes written and the rate
    assert b"The operation completed successfully." in shown
    with tarfile.open(target) as archive:
        assert "./bin/busybox" in archive.getnames()
    # xz ran with -T0: threaded xz records the sizes in every block header
    assert set(_xz_block_sizes_in_headers(target)) == {"cu"}


def test_export_to_a_pipe_shows_progress_and_delivers_every_byte(pywsl: Pywsl, box: str) -> None:
    status, data, shown = _run_with_terminal_stderr(pywsl, "--export", box, "-", "--format", "tar.gz")
    assert status == 0, shown
    assert PROGRESS_FIGURES.search(shown), shown
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        assert "./bin/busybox" in archive.getnames()


def test_export_piped_shows_no_progress(pywsl: Pywsl, box: str, workspace: Path) -> None:
    result = pywsl("--export", box, str(workspace / "quiet.tar"))
    assert (result.returncode, result.stdout) == (0, b"")
    assert result.err == EXPORT_LINE + SUCCESS  # wsl.exe's line, no bar, no figures
    result = pywsl("--export", box, "-", "--format", "tar.xz")
    assert result.returncode == 0 and result.err == EXPORT_LINE
    with tarfile.open(fileobj=io.BytesIO(result.stdout), mode="r:xz") as archive:
        assert "./bin/busybox" in archive.getnames()


# -- the states -l -v shows -------------------------------------------------------------------------


def _listed(pywsl: Pywsl, *args: str) -> str:
    result = pywsl("-l", *args)
    return result.out


def _state_of(pywsl: Pywsl, name: str) -> str | None:
    for line in _listed(pywsl, "-v").splitlines()[1:]:
        words = line.lstrip("* ").split()
        if words and words[0] == name:
            return words[1]
    return None


def test_list_verbose_shows_installing_while_an_import_runs(pywsl: Pywsl, box: str, workspace: Path) -> None:
    archive = (workspace / "box.tar").read_bytes()
    importing = subprocess.Popen(
        _command("--import", "Arriving", str(workspace / "arriving"), "-"),
        env=pywsl.env,
        cwd="/",
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert importing.stdin is not None
        importing.stdin.write(archive[:65536])
        importing.stdin.flush()
        _until(lambda: _state_of(pywsl, "Arriving") == "Installing", "Installing in -l -v")
        assert "Arriving" not in _listed(pywsl, "-q").split()  # left out without --all or -v
        assert "Arriving" in _listed(pywsl, "-q", "--all").split()
        _, err = importing.communicate(archive[65536:], timeout=120)
    finally:
        if importing.poll() is None:
            importing.kill()
            importing.wait()
    assert importing.returncode == 0, err
    assert _state_of(pywsl, "Arriving") == "Stopped"
    assert pywsl("--unregister", "Arriving").returncode == 0


def test_list_verbose_shows_exporting_while_an_export_runs(pywsl: Pywsl, box: str) -> None:
    # The export blocks on a full pipe until its output is read.
    exporting = subprocess.Popen(
        _command("--export", box, "-"),
        env=pywsl.env,
        cwd="/",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        _until(lambda: _state_of(pywsl, box) == "Exporting", "Exporting in -l -v")
        assert box not in _listed(pywsl, "-q").split()
        data, err = exporting.communicate(timeout=120)
    finally:
        if exporting.poll() is None:
            exporting.kill()
            exporting.wait()
    assert exporting.returncode == 0, err
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        assert "./bin/busybox" in archive.getnames()
    assert _state_of(pywsl, box) in ("Stopped", "Running")


# -- argument checks, in wsl.exe's order ----------------------------------------------------------


def test_a_verb_missing_its_file_prints_the_usage(pywsl: Pywsl, box: str) -> None:
    for args in (["--export"], ["--export", box], ["--manage"]):
        result = pywsl(*args)
        assert (result.returncode, result.stdout) == (255, b""), args
        assert result.err.startswith("Usage: pywsl [launch options]"), args
        assert "Management options" in result.err and "Error code: " not in result.err
    result = pywsl("--import", "Only")
    assert result.returncode == 255
    assert result.err == "The parameter is incorrect.\nError code: Wsl/E_INVALIDARG\n"
    result = pywsl("-t")
    assert (result.returncode, result.err) == (255, "Argument --terminate is missing a required parameter.\n")


def test_values_are_case_sensitive(pywsl: Pywsl, box: str, workspace: Path) -> None:
    target = workspace / "case.tar"
    result = pywsl("--export", box, str(target), "--format", "TAR.GZ")
    assert result.returncode == 255 and result.err.endswith("Error code: Wsl/E_INVALIDARG\n")
    assert not target.exists()
    result = pywsl("-d", box, "--shell-type", "Login", "true")
    assert result.returncode == 255 and "Error code: Wsl/E_INVALIDARG" in result.err


def test_which_error_wins(pywsl: Pywsl, box: str, workspace: Path) -> None:
    # --export creates its file before it looks the name up (and removes it again)
    result = pywsl("--export", "Nope", str(workspace / "no-such-folder" / "x.tar"))
    assert result.returncode == 255 and "ERROR_PATH_NOT_FOUND" in result.err, result.err
    result = pywsl("--export", "Nope", str(workspace / "nope.tar"))
    assert "WSL_E_DISTRO_NOT_FOUND" in result.err
    assert not (workspace / "nope.tar").exists()
    # --set-version and --manage look the name up before reading the rest
    for args in (["--set-version", "Nope"], ["--set-version", "Nope", "x"], ["--manage", "Nope"]):
        assert "WSL_E_DISTRO_NOT_FOUND" in pywsl(*args).err, args
    result = pywsl("--set-version", box)
    assert result.err.endswith("Error code: Wsl/ERROR_VERSION_PARSE_ERROR\n")
    # launch options fail where they stand
    assert "WSL_E_DISTRO_NOT_FOUND" in pywsl("-d", "Nope", "-d", box, "true").err
    assert "Invalid directory for --cd" in pywsl("--cd", "relative", "-d", "Nope", "true").err
    assert "WSL_E_DISTRO_NOT_FOUND" in pywsl("-d", "Nope", "--cd", "relative", "true").err


# -- what is not a Linux distribution ---------------------------------------------------------------


def _tar_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in files.items():
            member = tarfile.TarInfo(name)
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("content", "code", "message"),
    [
        (
            _tar_of({"notes.txt": b"hello\n"}),
            "WSL_E_NOT_A_LINUX_DISTRO",
            "The imported file is not a valid Linux distribution.",
        ),
        (
            b"this is not an archive\n" * 100,
            "WSL_E_IMPORT_FAILED",  # pywsl says why the import failed
            "The file is not a tar archive",
        ),
    ],
)
def test_import_of_something_that_is_not_a_distribution(
    pywsl: Pywsl, box: str, workspace: Path, content: bytes, code: str, message: str
) -> None:
    source = workspace / f"{code}.tar"
    source.write_bytes(content)
    location = workspace / f"{code}-location"
    result = pywsl("--import", "NotLinux", str(location), str(source))
    assert result.returncode == 255
    assert message in result.err, result.err
    assert re.search(rf"^Error code: Wsl/.*{code}$", result.err, re.MULTILINE), result.err
    assert not location.exists()  # created by the import, removed again
    assert "NotLinux" not in pywsl("-l", "-q", "--all").out.split()
