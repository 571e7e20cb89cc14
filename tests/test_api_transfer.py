"""Archive sources and export targets: formats, file objects, pipes, progress, partial files."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import shutil
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest

from pywsl.api.credentials import UserIdentity
from pywsl.api.errors import WslError
from pywsl.api.transfer import StderrCollector, detect_format, open_archive_source, open_export_target

ME = UserIdentity.current()


def make_tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for index in range(20):
            data = os.urandom(4096) + bytes(index)
            info = tarfile.TarInfo(f"etc/file{index}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


TAR = make_tar()


def read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def compressed(kind: str) -> bytes:
    if kind == "gzip":
        half = len(TAR) // 2   # two gzip members, as `cat a.gz b.gz` makes
        return gzip.compress(TAR[:half]) + gzip.compress(TAR[half:])
    if kind == "xz":
        return lzma.compress(TAR)
    if kind == "bzip2":
        return bz2.compress(TAR)
    if kind == "zstd":
        return subprocess.run(["zstd", "-q", "-c"], input=TAR, stdout=subprocess.PIPE, check=True).stdout
    return TAR


@pytest.mark.parametrize(
    ("head", "kind"),
    [(TAR[:512], "tar"), (b"\x1f\x8b\x08", "gzip"), (b"\xfd7zXZ\x00", "xz"), (b"BZh9", "bzip2"),
     (b"\x28\xb5\x2f\xfd", "zstd"), (b"vhdxfile", "vhdx"), (b"conectix", "vhd"), (b"\0" * 1024, "tar"),
     (b"hello", "unknown")],
)
def test_detect_format(head: bytes, kind: str) -> None:
    assert detect_format(head) == kind


@pytest.mark.parametrize("kind", ["tar", "gzip", "xz", "bzip2", "zstd"])
def test_sources_from_a_path_are_handed_over_as_they_are(tmp_path: Path, kind: str) -> None:
    if kind == "zstd" and shutil.which("zstd") is None:
        pytest.skip("zstd is not installed")
    path = tmp_path / "archive"
    data = compressed(kind)
    path.write_bytes(data)
    with open_archive_source(path, ME) as source:
        assert source.format == kind
        assert read_all(source.fd) == data
        source.check()


def test_plain_tar_file_is_passed_as_is(tmp_path: Path) -> None:
    path = tmp_path / "archive.tar"
    path.write_bytes(TAR)
    fd = os.open(path, os.O_RDONLY)
    try:
        with open_archive_source(fd, ME) as source:
            assert source.fd == fd
            assert read_all(source.fd) == TAR
    finally:
        os.close(fd)


def test_source_from_a_pipe_and_a_file_object(tmp_path: Path) -> None:
    data = compressed("xz")
    read_end, write_end = os.pipe()
    writer = threading.Thread(target=lambda: (os.write(write_end, data), os.close(write_end)))
    writer.start()
    try:
        seen: list[int] = []
        with open_archive_source(read_end, ME, progress=seen.append) as source:
            assert source.format == "xz"
            assert read_all(source.fd) == data
            source.check()
        assert seen and seen[-1] == len(data)
    finally:
        writer.join()
        os.close(read_end)
    gzipped = compressed("gzip")
    with open_archive_source(io.BytesIO(gzipped), ME) as source:
        assert read_all(source.fd) == gzipped


def test_progress_on_a_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "archive.tar"
    path.write_bytes(TAR)
    seen: list[int] = []
    with open_archive_source(str(path), ME, progress=seen.append) as source:
        assert read_all(source.fd) == TAR
        source.check()
    assert seen[-1] == len(TAR)


def test_a_failing_file_object_is_reported() -> None:
    class Broken(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
            raise OSError(5, "Input/output error")

    with pytest.raises(WslError) as caught, open_archive_source(Broken(), ME) as source:
        read_all(source.fd)
        source.check()
    assert caught.value.code == "WSL_E_IMPORT_FAILED"


def test_bad_sources(tmp_path: Path) -> None:
    with pytest.raises(WslError) as missing, open_archive_source(tmp_path / "missing.tar", ME):
        pass
    assert missing.value.code == "ERROR_FILE_NOT_FOUND"
    with pytest.raises(WslError) as folder, open_archive_source(tmp_path, ME):
        pass
    assert folder.value.code == "E_INVALIDARG"
    vhd = tmp_path / "disk.vhdx"
    vhd.write_bytes(b"vhdxfile" + bytes(1000))
    with pytest.raises(WslError) as image, open_archive_source(vhd, ME):
        pass
    assert image.value.code == "ERROR_NOT_SUPPORTED"


def test_export_to_a_path_and_a_file_object(tmp_path: Path) -> None:
    path = tmp_path / "out.tar"
    seen: list[int] = []
    with open_export_target(path, ME, progress=seen.append) as target:
        os.write(target.fd, TAR)
        target.finish()
    assert path.read_bytes() == TAR and seen[-1] == len(TAR)
    buffer = io.BytesIO()
    with open_export_target(buffer, ME) as target:
        os.write(target.fd, b"abc")
        target.finish()
    assert buffer.getvalue() == b"abc"


def test_failed_export_removes_the_partial_file(tmp_path: Path) -> None:
    path = tmp_path / "out.tar"
    with pytest.raises(RuntimeError), open_export_target(path, ME) as target:
        os.write(target.fd, b"partial")
        raise RuntimeError("the worker failed")
    assert not path.exists()
    with pytest.raises(WslError) as caught, open_export_target(tmp_path / "no" / "dir.tar", ME):
        pass
    assert caught.value.code == "ERROR_PATH_NOT_FOUND"


def test_stderr_collector_keeps_the_tail() -> None:
    collector = StderrCollector()
    os.write(collector.fd, b"x" * 40000 + b"\ntar: the end\n")
    text = collector.text()
    assert text.endswith("tar: the end") and len(text) <= 16 * 1024
