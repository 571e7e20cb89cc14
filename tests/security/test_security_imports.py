"""Imports and exports that never end, files that block, a disk that fills, through the real service.

Every case runs as an unprivileged user against the root service and must end within the test's
timeout; afterwards the name imports fine and no entry is left Installing.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import select
import signal
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from busybox_images import busybox_archive, os_release_text
from multiuser_support import ServiceProcess, User, Workspace, as_user, start_as_user, user_env, user_folder

INSTALLING = 3
CLIENT_TIMEOUT = 60


def names_and_states(workspace: Workspace, user: User) -> dict[str, int]:
    answer = as_user(workspace, user, {"op": "list"}, timeout=CLIENT_TIMEOUT)
    return {entry["name"]: entry["state"] for entry in answer["result"]}


def run_script(workspace: Workspace, user: User, script: str, *args: str) -> dict[str, Any]:
    """A small client script run as ``user``; the JSON line it prints."""
    import json

    result = subprocess.run(
        [str(workspace.python), "-c", script, *args],
        user=user.uid,
        group=user.gid,
        extra_groups=[],
        env=user_env(workspace, user),
        cwd=user.home,
        capture_output=True,
        timeout=CLIENT_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    answer: dict[str, Any] = json.loads(result.stdout.decode().splitlines()[-1])
    return answer


IMPORT_DESCRIPTOR = r"""
import json, os, sys
from pywsl.api.service.client import ServiceClient
from pywsl.api.errors import WslError
kind, name = sys.argv[1], sys.argv[2]
fd = os.eventfd(1) if kind == "eventfd" else os.open(kind, os.O_RDONLY)
try:
    ServiceClient().register_distribution(name, fd)
    print(json.dumps({"result": "imported"}))
except WslError as error:
    print(json.dumps({"error": error.code, "message": error.message}))
"""


def assert_usable_again(workspace: Workspace, user: User, name: str, archive: Path) -> None:
    """Nothing of a failed import stays: no Installing entry, and the name imports fine."""
    states = names_and_states(workspace, user)
    assert name not in states and INSTALLING not in states.values(), states
    answer = as_user(
        workspace, user, {"op": "import", "name": name, "archive": str(archive)}, timeout=CLIENT_TIMEOUT
    )
    assert "result" in answer, answer
    assert as_user(workspace, user, {"op": "unregister", "distro": name})["result"] is None


@pytest.fixture(scope="module")
def archive(workspace: Workspace) -> Path:
    return busybox_archive(workspace.folder / "good.tar", os_release=os_release_text("good"))


@pytest.mark.parametrize("compression", ["", "gz"])
def test_data_after_a_valid_archive_ends_the_import(
    users: tuple[User, User], workspace: Workspace, service: ServiceProcess, compression: str
) -> None:
    a, _ = users
    path = busybox_archive(
        workspace.folder / f"trailing.tar{compression}",
        os_release=os_release_text("trailing"),
        compression="gz" if compression else "",
    )
    producer = subprocess.Popen(["sh", "-c", f'cat "{path}"; exec cat /dev/zero'], stdout=subprocess.PIPE)
    try:
        client = start_as_user(
            workspace,
            a,
            {"op": "import", "name": "Trailing", "archive": "-"},
            stdin=producer.stdout,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert producer.stdout is not None
        producer.stdout.close()
        out, err = client.communicate(timeout=CLIENT_TIMEOUT)
        assert client.returncode == 0, err.decode()
        assert '"result"' in out.decode(), out.decode()
    finally:
        producer.kill()
        producer.wait(30)
    assert names_and_states(workspace, a)["Trailing"] == 1
    assert as_user(workspace, a, {"op": "unregister", "distro": "Trailing"})["result"] is None


@pytest.mark.parametrize("kind", ["/dev/zero", "/dev/urandom", "eventfd"])
def test_sources_that_never_end_are_refused(
    users: tuple[User, User], workspace: Workspace, service: ServiceProcess, archive: Path, kind: str
) -> None:
    a, _ = users
    started = time.monotonic()
    answer = run_script(workspace, a, IMPORT_DESCRIPTOR, kind, "Endless")
    assert answer.get("error") == "E_INVALIDARG", answer
    assert time.monotonic() - started < CLIENT_TIMEOUT
    assert_usable_again(workspace, a, "Endless", archive)


@pytest.mark.parametrize("ending", ["client killed", "client killed, fifo", "shutdown"])
def test_a_source_that_stops_sending(
    users: tuple[User, User], workspace: Workspace, service: ServiceProcess, archive: Path, ending: str
) -> None:
    """Half an archive, then silence with the writer still there: the client going away (or a
    --shutdown) ends the import and rolls it back."""
    a, _ = users
    data = busybox_archive(os_release=os_release_text("quiet"), filler_bytes=8 << 20)
    location = a.home / "distros" / "quiet"
    fifo = a.home / "quiet.fifo"
    if "fifo" in ending:
        os.mkfifo(fifo, 0o600)
        os.chown(fifo, a.uid, a.gid)
        writer = os.open(fifo, os.O_RDWR)
        source, stdin = str(fifo), subprocess.DEVNULL
    else:
        stdin, writer = os.pipe()
        source = "-"
    client = start_as_user(
        workspace,
        a,
        {"op": "import", "name": "Quiet", "archive": source, "location": str(location)},
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        if stdin >= 0:
            os.close(stdin)
        _write_all(writer, data[: len(data) // 2])
        deadline = time.monotonic() + CLIENT_TIMEOUT
        while not (location / "rootfs" / "bin").exists():
            assert time.monotonic() < deadline, "the import did not start"
            assert client.poll() is None, client.communicate()
            time.sleep(0.05)
        if ending == "shutdown":
            assert "result" in as_user(workspace, a, {"op": "shutdown"}, timeout=CLIENT_TIMEOUT)
            out, _err = client.communicate(timeout=CLIENT_TIMEOUT)
            assert '"error"' in out.decode(), out.decode()
        else:
            os.kill(client.pid, signal.SIGKILL)
            client.wait(CLIENT_TIMEOUT)
        deadline = time.monotonic() + CLIENT_TIMEOUT
        while "Quiet" in names_and_states(workspace, a) or location.exists():
            assert time.monotonic() < deadline, "the import was not rolled back"
            time.sleep(0.2)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
        os.close(writer)
        with contextlib.suppress(FileNotFoundError):
            fifo.unlink()
    assert_usable_again(workspace, a, "Quiet", archive)


def _write_all(fd: int, data: bytes, timeout: float = CLIENT_TIMEOUT) -> None:
    """Write all of `data`; fails when the reader takes more than `timeout` s (it never hangs)."""
    os.set_blocking(fd, False)
    deadline = time.monotonic() + timeout
    view = memoryview(data)
    while view:
        remaining = deadline - time.monotonic()
        assert remaining > 0, "nobody reads the source"
        select.select([], [fd], [], remaining)
        with contextlib.suppress(BlockingIOError):
            view = view[os.write(fd, view) :]


@contextlib.contextmanager
def replaced(path: Path, user: User, make: str) -> Iterator[None]:
    """``path`` replaced by a FIFO, a huge sparse file or a link to /dev/zero for the block."""
    saved = path.read_bytes() if path.is_file() else None
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    user_folder(user, path.parent)
    if make == "fifo":
        os.mkfifo(path, 0o600)
    elif make == "huge":
        with open(path, "wb") as handle:
            handle.truncate(10 << 30)
    else:
        path.symlink_to("/dev/zero")
    os.lchown(path, user.uid, user.gid)
    try:
        yield
    finally:
        path.unlink()
        if saved is not None:
            path.write_bytes(saved)
            os.chown(path, user.uid, user.gid)


@pytest.mark.parametrize("make", ["fifo", "huge"])
def test_a_registry_that_is_not_a_file(
    users: tuple[User, User], workspace: Workspace, service: ServiceProcess, make: str
) -> None:
    a, b = users
    names_and_states(workspace, a)
    registry = a.home / ".local" / "share" / "pywsl" / "registry.json"
    with replaced(registry, a, make):
        started = time.monotonic()
        answer = as_user(workspace, a, {"op": "list"}, timeout=CLIENT_TIMEOUT)
        assert answer.get("error") == "E_UNEXPECTED", answer
        assert time.monotonic() - started < CLIENT_TIMEOUT
        assert "result" in as_user(workspace, b, {"op": "list"}, timeout=CLIENT_TIMEOUT)
    assert "result" in as_user(workspace, a, {"op": "list"}, timeout=CLIENT_TIMEOUT)


def test_dev_zero_as_wslconfig_keeps_the_defaults(
    users: tuple[User, User], workspace: Workspace, service: ServiceProcess
) -> None:
    a, _ = users
    with replaced(a.home / ".config" / "pywsl" / "wslconfig", a, "link"):
        assert "result" in as_user(workspace, a, {"op": "list"}, timeout=CLIENT_TIMEOUT)


@contextlib.contextmanager
def small_filesystem(where: Path, user: User, size: str) -> Iterator[Path]:
    where.mkdir()
    subprocess.run(
        [
            "mount",
            "-t",
            "tmpfs",
            "-o",
            f"size={size},mode=0700,uid={user.uid},gid={user.gid}",
            "pywsl-small",
            str(where),
        ],
        check=True,
    )
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)
        where.rmdir()


def expanding_archive(path: Path, size: int) -> Path:
    """A small .tar.gz of a distribution plus one file of ``size`` zero bytes."""
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=9) as packed,
        tarfile.open(fileobj=packed, mode="w|") as handle,
    ):
        with tarfile.open(fileobj=io.BytesIO(busybox_archive(os_release=os_release_text("full")))) as base:
            for member in base.getmembers():
                handle.addfile(member, base.extractfile(member) if member.isfile() else None)
        info = tarfile.TarInfo("zeros")
        info.size = size
        handle.addfile(info, io.BytesIO(bytes(size)))
    path.write_bytes(buffer.getvalue())
    path.chmod(0o644)
    return path


def test_an_archive_larger_than_the_disk_is_rolled_back(
    users: tuple[User, User], workspace: Workspace, service: ServiceProcess, archive: Path
) -> None:
    a, _ = users
    bomb = expanding_archive(workspace.folder / "bomb.tar.gz", 128 << 20)
    assert bomb.stat().st_size < (4 << 20)  # busybox itself, and 128 MiB of zeros in a few hundred KiB
    with small_filesystem(a.home / "small", a, "32m") as small:
        location = small / "full"
        answer = as_user(
            workspace,
            a,
            {"op": "import", "name": "Full", "archive": str(bomb), "location": str(location)},
            timeout=CLIENT_TIMEOUT,
        )
        assert answer.get("error") == "WSL_E_IMPORT_FAILED", answer
        assert "the disk is full" in answer["message"], answer["message"]
        assert os.listdir(small) == []
    assert_usable_again(workspace, a, "Full", archive)


def test_sparse_files_stay_sparse_through_export_and_import(
    users: tuple[User, User], workspace: Workspace, service: ServiceProcess, archive: Path
) -> None:
    a, _ = users
    assert "result" in as_user(
        workspace, a, {"op": "import", "name": "Sparse", "archive": str(archive)}, timeout=CLIENT_TIMEOUT
    )
    made = as_user(
        workspace,
        a,
        {"op": "run", "distro": "Sparse", "command": ["truncate -s 256M /sparse && echo end >> /sparse"]},
        timeout=CLIENT_TIMEOUT,
    )
    assert made["result"]["code"] == 0, made
    exported = a.home / "sparse.tar"
    assert "result" in as_user(
        workspace, a, {"op": "export", "distro": "Sparse", "target": str(exported)}, timeout=CLIENT_TIMEOUT
    )
    assert exported.stat().st_size < (16 << 20)  # busybox and a 256 MiB file that holds 4 bytes
    answer = as_user(
        workspace, a, {"op": "import", "name": "Sparse2", "archive": str(exported)}, timeout=CLIENT_TIMEOUT
    )
    copy = a.home / ".local" / "share" / "pywsl" / answer["result"] / "rootfs" / "sparse"
    info = os.stat(copy)
    assert info.st_size == (256 << 20) + 4 and info.st_blocks * 512 < (1 << 20)
    for name in ("Sparse", "Sparse2"):
        assert as_user(workspace, a, {"op": "unregister", "distro": name})["result"] is None
    exported.unlink()
