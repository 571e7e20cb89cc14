"""Shared pieces of the install tests: a local HTTP server, small .wsl images, a Debian build cache.

Other test modules import from here (`from test_install_support import ...`), including the
session-wide `debian_archive` fixture: a Debian minbase root filesystem built once per test run with
the built-in debootstrap source and packed as a tar.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import shutil
import socket
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from busybox_images import NOBODY, ROOT, Compression, busybox_archive, os_release_text


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FileServer:
    """http.server on 127.0.0.1 (port 0) serving in-memory files.

    `files[path] = bytes`. `stall[path] = event`: the response sends its headers and half the body,
    then waits for the event (to interrupt a download in the middle). `short[path]`: announce the
    full length, send half, and close.
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.stall: dict[str, threading.Event] = {}
        self.short: set[str] = set()
        self.requests: list[str] = []
        self.stalled = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                half = len(data) // 2
                if self.path in server.stall:
                    self.wfile.write(data[:half])
                    self.wfile.flush()
                    server.stalled.set()
                    server.stall[self.path].wait(30)
                    return
                if self.path in server.short:
                    self.wfile.write(data[:half])
                    return
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def url(self, path: str) -> str:
        return self.base + path

    def add(self, path: str, data: bytes) -> str:
        self.files[path] = data
        return self.url(path)

    def close(self) -> None:
        for event in self.stall.values():
            event.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    server = FileServer()
    try:
        yield server
    finally:
        server.close()


def closed_port_url(path: str = "/DistributionInfo.json") -> str:
    """A URL on 127.0.0.1 where nothing listens."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


def arch_key() -> str:
    import platform

    return "Arm64Url" if platform.machine().lower() in ("aarch64", "arm64") else "Amd64Url"


def manifest_document(
    families: dict[str, list[dict[str, Any]]],
    *,
    default: str | None = None,
    legacy: list[dict[str, Any]] | None = None,
) -> bytes:
    document: dict[str, Any] = {"ModernDistributions": families}
    if default is not None:
        document["Default"] = default
    if legacy is not None:
        document["Distributions"] = legacy
    return json.dumps(document).encode()


def version_entry(
    name: str, friendly: str, url: str, sha: str, *, default: bool | None = None, key: str | None = None
) -> dict[str, Any]:
    archive = {"Url": url, "Sha256": sha}
    entry: dict[str, Any] = {"Name": name, "FriendlyName": friendly, key or arch_key(): archive}
    if default is not None:
        entry["Default"] = default
    return entry


def rootfs_tar(
    *, conf: str | None = None, compression: Compression = "", extra: dict[str, str] | None = None
) -> bytes:
    """A tiny .wsl image made of /bin/busybox (plain, "gz" or "xz"), member names as GNU tar writes them."""
    return busybox_archive(
        compression=compression,
        prefix="./",
        tar_format=tarfile.GNU_FORMAT,
        users=(ROOT, NOBODY),
        os_release=os_release_text("tiny", "1.0", "Tiny Linux"),
        wsl_distribution_conf=conf,
        extra_files=extra,
    )


# -- the Debian build cache ------------------------------------------------------------------------

_DEBIAN_CACHE: dict[str, Path] = {}


@pytest.fixture(scope="session")
def debian_archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A Debian bookworm minbase tar built with the built-in source, once per test run.

    Skips when the host cannot build it (not root, no debootstrap, no keyring, no mirror).
    """
    from pywsl.api.install.builtin_catalog import find_builtin
    from pywsl.api.install.builtin_source import build_rootfs_archive

    if "debian" in _DEBIAN_CACHE and _DEBIAN_CACHE["debian"].exists():
        yield _DEBIAN_CACHE["debian"]
        return
    entry = find_builtin("Debian")
    if entry is None or os.geteuid() != 0:
        pytest.skip("this host cannot build Debian (needs root, debootstrap and the Debian keyring)")
    folder = tmp_path_factory.mktemp("debian-build")
    try:
        archive = build_rootfs_archive(entry, folder, log_dir=folder / "logs")
    except Exception as error:  # the mirror may be unreachable from this machine
        shutil.rmtree(folder, ignore_errors=True)
        pytest.skip(f"building Debian failed here: {error}")
    target = folder / "debian-bookworm.tar"
    os.rename(archive.path, target)
    archive.close()
    _DEBIAN_CACHE["debian"] = target
    try:
        yield target
    finally:
        _DEBIAN_CACHE.pop("debian", None)
        shutil.rmtree(folder, ignore_errors=True)


def test_rootfs_tar_is_a_usable_image(tmp_path: Path) -> None:
    """The helper's image has a shell, os-release and the optional conf file."""
    data = rootfs_tar(conf="[oobe]\ndefaultName = Tiny\n", compression="gz")
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        names = set(archive.getnames())
    assert {"./bin/sh", "./bin/busybox", "./etc/os-release", "./etc/wsl-distribution.conf"} <= names
