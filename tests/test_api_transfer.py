"""Archive sources and export targets: formats, file objects, pipes, progress, partial files."""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import lzma
import os
import shutil
import socket
import stat
import subprocess
import tarfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast

import pytest

from pywsl.api.cancellation import CancelToken, cancel_scope
from pywsl.api.credentials import UserIdentity
from pywsl.api.errors import WslError
from pywsl.api.files.transfer import StderrCollector, detect_format, open_archive_source, open_export_target

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

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
        half = len(TAR) // 2  # two gzip members, as `cat a.gz b.gz` makes
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
    [
        (TAR[:512], "tar"),
        (b"\x1f\x8b\x08", "gzip"),
        (b"\xfd7zXZ\x00", "xz"),
        (b"BZh9", "bzip2"),
        (b"\x28\xb5\x2f\xfd", "zstd"),
        (b"vhdxfile", "vhdx"),
        (b"conectix", "vhd"),
        (b"\0" * 1024, "tar"),
        (b"hello", "unknown"),
    ],
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

    def write_and_close() -> None:
        os.write(write_end, data)
        os.close(write_end)

    writer = threading.Thread(target=write_and_close)
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

        def readinto(self, buffer: WriteableBuffer) -> int:
            raise OSError(5, "Input/output error")

    # A raw (unbuffered) file object: typing's BinaryIO names only the buffered kinds.
    with pytest.raises(WslError) as caught, open_archive_source(cast(BinaryIO, Broken()), ME) as source:
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
    assert image.value.code == "WSL_E_IMPORT_FAILED"
    assert "Use --vhd to import a VHD" in image.value.message


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


@pytest.mark.parametrize("kind", ["/dev/zero", "/dev/urandom", "eventfd", "write-only pipe", "datagram"])
def test_sources_that_never_end_are_refused_up_front(kind: str) -> None:
    opened: list[int] = []
    if kind.startswith("/dev/"):
        opened.append(os.open(kind, os.O_RDONLY))
    elif kind == "eventfd":
        opened.append(os.eventfd(1))
    elif kind == "datagram":
        pair = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        opened.extend(end.detach() for end in pair)
    else:
        read_end, write_end = os.pipe()
        opened.extend((write_end, read_end))
    try:
        with pytest.raises(WslError) as caught, open_archive_source(opened[0], ME):
            pass
        assert caught.value.code == "E_INVALIDARG", caught.value.message
    finally:
        for fd in opened:
            os.close(fd)


def test_empty_and_foreign_files_are_not_archives(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.touch()
    noise = tmp_path / "noise"
    noise.write_bytes(os.urandom(4096))
    for path in (empty, noise):
        with pytest.raises(WslError) as caught, open_archive_source(path, ME):
            pass
        assert caught.value.code == "WSL_E_IMPORT_FAILED", caught.value.message
    old = bytearray(TAR[:512])
    old[257:265] = bytes(8)  # no "ustar" magic: a pre-POSIX header, recognised by its checksum
    old[148:156] = b"%06o\0 " % (sum(old[:148]) + 8 * 32 + sum(old[156:]))
    assert detect_format(bytes(old)) == "tar"


def test_a_fifo_opened_by_path_does_not_block(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(WslError) as caught, open_archive_source(fifo, ME, idle_timeout=0.2):
        pass
    assert "sent nothing" in caught.value.message


def test_a_quiet_pipe_fails_after_the_idle_timeout() -> None:
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, TAR[:100])
        with pytest.raises(WslError) as caught, open_archive_source(read_end, ME, idle_timeout=0.2):
            pass
        assert caught.value.code == "WSL_E_IMPORT_FAILED"
        assert "sent nothing for 0.2 seconds" in caught.value.message
    finally:
        os.close(read_end)
        os.close(write_end)


def test_cancel_stops_reading_a_pipe() -> None:
    """The client going away ends the relay at once; the import then reports the cancellation."""
    read_end, write_end = os.pipe()
    token = CancelToken()
    try:
        os.write(write_end, TAR[:2048])
        with (
            cancel_scope(token),
            pytest.raises(WslError) as caught,
            open_archive_source(read_end, ME) as source,
        ):
            assert os.read(source.fd, 2048) == TAR[:2048]  # the relay now waits for more
            token.cancel()
            assert os.read(source.fd, 65536) == b""  # the worker sees the end of its input
            source.check()
        assert caught.value.code == "E_ABORT"
        with cancel_scope(token), pytest.raises(WslError) as early, open_archive_source(read_end, ME):
            pass
        assert early.value.code == "E_ABORT"
    finally:
        os.close(read_end)
        os.close(write_end)


def test_data_after_the_archive_is_not_waited_for() -> None:
    """Once the worker is done, check() ends the relay even though the source keeps sending."""
    read_end, write_end = os.pipe()
    stop = threading.Event()

    def send() -> None:
        try:
            os.write(write_end, TAR)
            while not stop.is_set():
                os.write(write_end, bytes(65536))
        except OSError:
            pass

    sender = threading.Thread(target=send)
    sender.start()
    try:
        with open_archive_source(read_end, ME) as source:
            received = b""
            while len(received) < len(TAR):
                received += os.read(source.fd, len(TAR) - len(received))
            assert received == TAR
            source.check()
    finally:
        stop.set()
        os.close(read_end)
        sender.join(30)
        os.close(write_end)
    assert not sender.is_alive()


def test_a_stream_socket_is_a_source() -> None:
    ours, theirs = socket.socketpair()
    try:
        theirs.sendall(TAR)
        theirs.shutdown(socket.SHUT_WR)
        with open_archive_source(ours.fileno(), ME) as source:
            assert read_all(source.fd) == TAR
            source.check()
    finally:
        ours.close()
        theirs.close()


def test_cancel_stops_an_export_into_a_pipe_nobody_reads() -> None:
    read_end, write_end = os.pipe()
    token = CancelToken()
    seen: list[int] = []
    try:
        with (
            cancel_scope(token),
            pytest.raises(WslError) as caught,
            open_export_target(write_end, ME, progress=seen.append) as target,
        ):
            os.set_blocking(target.fd, False)
            with contextlib.suppress(BlockingIOError):
                while True:  # fill our pipe and the caller's: the relay now waits for room
                    os.write(target.fd, bytes(65536))
            token.cancel()
            target.finish()
        assert caught.value.code == "E_ABORT"
    finally:
        os.close(read_end)
        os.close(write_end)


def test_export_to_a_fifo_nobody_reads_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(WslError) as caught, open_export_target(fifo, ME):
        pass
    assert caught.value.code == "E_INVALIDARG"
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
