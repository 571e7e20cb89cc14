"""Downloading images: progress, SHA-256 checks, temporaries and their cleanup."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from test_install_support import FileServer, closed_port_url, file_server, sha256_hex

from pywsl.api.errors import WslError
from pywsl.api.install.download import (
    TEMP_PREFIX,
    TemporaryFile,
    clean_stale_temporaries,
    download_to,
    local_path,
    read_url,
    verify_sha256,
)

__all__ = ["file_server"]

PAYLOAD = os.urandom(3 * 1024 * 1024 + 17)


def test_local_path_forms(tmp_path: Path) -> None:
    assert local_path(f"file://{tmp_path}/a b.wsl") == tmp_path / "a b.wsl"
    assert local_path("file:///x%20y") == Path("/x y")
    assert local_path("/plain/path.wsl") == Path("/plain/path.wsl")
    assert local_path("relative.wsl") == Path("relative.wsl")
    assert local_path("https://example.invalid/x") is None
    with pytest.raises(WslError) as caught:
        local_path("ftp://example.invalid/x")
    assert caught.value.code == "WININET_E_UNRECOGNIZED_SCHEME"
    with pytest.raises(WslError):
        local_path("file://otherhost/x")


def test_download_reports_progress_and_writes_every_byte(file_server: FileServer, tmp_path: Path) -> None:
    url = file_server.add("/image.wsl", PAYLOAD)
    seen: list[tuple[int, int | None]] = []
    with TemporaryFile(tmp_path, "Image", ".wsl") as target:
        assert target.path.parent == tmp_path and target.path.name.startswith(TEMP_PREFIX + "Image-")
        assert download_to(url, target, progress=lambda d, t: seen.append((d, t))) == len(PAYLOAD)
        assert target.path.read_bytes() == PAYLOAD
        verify_sha256(target.fd, sha256_hex(PAYLOAD))
    assert not target.path.exists()
    assert seen[0] == (0, len(PAYLOAD)) and seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


@pytest.mark.parametrize("spelling", [str.upper, lambda h: "0x" + h, lambda h: "0X" + h.upper()])
def test_hash_accepts_0x_prefix_and_any_case(tmp_path: Path, spelling: Callable[[str], str]) -> None:
    with TemporaryFile(tmp_path, "x", ".wsl") as target:
        os.write(target.fd, PAYLOAD)
        verify_sha256(target.fd, spelling(sha256_hex(PAYLOAD)))


def test_hash_mismatch_shows_both_hashes(tmp_path: Path) -> None:
    expected = "0x" + "00" * 32
    with TemporaryFile(tmp_path, "x", ".wsl") as target:
        os.write(target.fd, PAYLOAD)
        with pytest.raises(WslError) as caught:
            verify_sha256(target.fd, expected)
    assert caught.value.code == "TRUST_E_BAD_DIGEST"
    assert caught.value.message == (
        f"The distribution hash doesn't match. Expected: {expected}, actual hash: {sha256_hex(PAYLOAD)}"
    )
    with TemporaryFile(tmp_path, "x", ".wsl") as target, pytest.raises(WslError):
        verify_sha256(target.fd, "not hex")


def test_truncated_download_is_an_error(file_server: FileServer, tmp_path: Path) -> None:
    url = file_server.add("/short.wsl", PAYLOAD)
    file_server.short.add("/short.wsl")
    with TemporaryFile(tmp_path, "x", ".wsl") as target, pytest.raises(WslError) as caught:
        download_to(url, target)
    assert caught.value.code == "WININET_E_CONNECTION_RESET"


def test_unreachable_and_missing_downloads(file_server: FileServer, tmp_path: Path) -> None:
    with TemporaryFile(tmp_path, "x", ".wsl") as target:
        with pytest.raises(WslError) as refused:
            download_to(closed_port_url("/x.wsl"), target, timeout=3)
        assert refused.value.code == "WININET_E_CANNOT_CONNECT"
        with pytest.raises(WslError) as missing:
            download_to(file_server.url("/none.wsl"), target)
        assert missing.value.code == "HTTP_E_STATUS_NOT_FOUND"
    assert list(tmp_path.iterdir()) == []


def test_read_url_bounds_the_size(file_server: FileServer) -> None:
    url = file_server.add("/big.json", b"x" * 2048)
    assert read_url(url) == b"x" * 2048
    with pytest.raises(WslError) as caught:
        read_url(url, limit=1024)
    assert caught.value.code == "ERROR_INVALID_DATA"


def _age(path: Path) -> None:
    old = time.time() - 3600
    os.utime(path, (old, old), follow_symlinks=False)


def test_stale_temporaries_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    # A killed install: its temporary exists but nobody holds the lock.
    stale = tmp_path / f"{TEMP_PREFIX}Dead-abc.wsl"
    stale.write_bytes(b"partial")
    _age(stale)
    # A killed build: a folder and its lock file.
    tree = tmp_path / f"{TEMP_PREFIX}Dead-def.rootfs"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    lock = tmp_path / f"{TEMP_PREFIX}Dead-def.rootfs.lock"
    lock.write_bytes(b"")
    _age(lock)
    # A young temporary (between creation and lock), a live one, and an unrelated file.
    young = tmp_path / f"{TEMP_PREFIX}Young-x.wsl"
    young.write_bytes(b"")
    live = TemporaryFile(tmp_path, "Live", ".wsl")
    _age(live.path)
    unrelated = tmp_path / "keep.wsl"
    unrelated.write_bytes(b"mine")
    try:
        removed = clean_stale_temporaries(tmp_path)
        assert set(removed) == {stale, tree, lock}
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([young.name, live.path.name, "keep.wsl"])
    finally:
        live.close()
    assert clean_stale_temporaries(tmp_path / "missing") == []


def test_lock_is_held_while_the_file_lives(tmp_path: Path) -> None:
    with TemporaryFile(tmp_path, "x", ".wsl") as target:
        fd = os.open(target.path, os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)


def test_stalled_download_can_be_abandoned(file_server: FileServer, tmp_path: Path) -> None:
    """A download stopped in the middle (here by a timeout) leaves no file once closed."""
    release = threading.Event()
    url = file_server.add("/stall.wsl", PAYLOAD)
    file_server.stall["/stall.wsl"] = release
    with TemporaryFile(tmp_path, "x", ".wsl") as target, pytest.raises(WslError) as caught:
        download_to(url, target, timeout=1)
    release.set()
    assert caught.value.code == "WININET_E_TIMEOUT"
    assert list(tmp_path.iterdir()) == []
