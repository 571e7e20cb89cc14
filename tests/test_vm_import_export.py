"""Import and export through the utility VM: tar inside the target's namespaces, hostile archives."""

from __future__ import annotations

import bz2
import contextlib
import errno
import gzip
import hashlib
import io
import lzma
import os
import select
import stat
import subprocess
import tarfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import BootedVm, VmFactory

from pywsl.guest.tar_device_filter import skipped_devices_warning
from pywsl.vm import ImportOutcome, VmError
from pywsl.vm.idmap import host_id

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the namespaces backend needs root")


@pytest.fixture
def booted(vm_factory: VmFactory) -> BootedVm:
    return vm_factory.boot()


def _member(
    name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", *, target: str = "", mode: int = 0o644
) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = 0o755 if kind == tarfile.DIRTYPE else mode
    info.linkname = target
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, (data if kind == tarfile.REGTYPE else None)


def archive(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as handle:
        for info, data in members:
            handle.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


DISTRO = archive(
    _member("./", tarfile.DIRTYPE),
    _member("etc", tarfile.DIRTYPE),
    _member("etc/os-release", data=b'NAME=Test\nID=testos\nVERSION_ID="2.5"\n'),
    _member("etc/wsl-distribution.conf", data=b"[oobe]\ndefaultName = Tester\n"),
    _member("bin", tarfile.DIRTYPE),
    _member("bin/sh", tarfile.SYMTYPE, target="busybox"),
)


def _target(booted: BootedVm, parent: Path, name: str = "target") -> Path:
    target = parent / name
    target.mkdir()
    os.chown(target, host_id(booted.config.uid_map, 0), host_id(booted.config.gid_map, 0))
    return target


def run_import(
    booted: BootedVm, target: Path, data: bytes, *, pipe: bool = False
) -> tuple[ImportOutcome | VmError, str]:
    """Import ``data`` (from a file, or a pipe fed by a thread): the outcome and tar's messages."""
    error_read, error_write = os.pipe()
    feeder: threading.Thread | None = None
    if pipe:
        source, feed = os.pipe()

        def write_all() -> None:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(feed, view) :]
            except BrokenPipeError:
                pass
            finally:
                os.close(feed)

        feeder = threading.Thread(target=write_all)
        feeder.start()
    else:
        path = target.parent / f"{target.name}.archive"
        path.write_bytes(data)
        source = os.open(path, os.O_RDONLY)
    try:
        outcome: ImportOutcome | VmError = booted.vm.import_rootfs(target, source, error_write)
    except VmError as error:
        outcome = error
    finally:
        os.close(source)
        os.close(error_write)
        if feeder is not None:
            feeder.join()
    with os.fdopen(error_read, "rb") as errors:
        return outcome, errors.read().decode(errors="replace")


def _compress(data: bytes, kind: str) -> bytes:
    if kind == "gz":
        return gzip.compress(data)
    if kind == "xz":
        return lzma.compress(data)
    if kind == "bz2":
        return bz2.compress(data)
    if kind == "zst":
        return subprocess.run(["zstd", "-q", "-c"], input=data, capture_output=True, check=True).stdout
    return data


@pytest.mark.parametrize(
    ("kind", "pipe"), [("tar", False), ("gz", True), ("xz", False), ("bz2", True), ("zst", False)]
)
def test_import_formats(booted: BootedVm, tmp_path: Path, kind: str, pipe: bool) -> None:
    target = _target(booted, tmp_path)
    outcome, errors = run_import(booted, target, _compress(DISTRO, kind), pipe=pipe)
    assert outcome == ImportOutcome(valid=True, flavor="testos", version="2.5", default_name="Tester"), errors
    assert (target / "etc/os-release").read_bytes().startswith(b"NAME=Test")
    assert os.readlink(target / "bin/sh") == "busybox"
    assert (target / "etc").stat().st_uid == host_id(booted.config.uid_map, 0)


def _device(name: str, kind: bytes, major: int, minor: int) -> tuple[tarfile.TarInfo, None]:
    info, _ = _member(name, kind, mode=0o660)
    info.devmajor, info.devminor = major, minor
    return info, None


WITH_DEVICES = archive(
    *(_member(name, tarfile.DIRTYPE) for name in ("./", "etc", "bin", "dev", "dev/pts")),
    _member("etc/os-release", data=b"ID=devices\nVERSION_ID=1\n"),
    _member("bin/sh", tarfile.SYMTYPE, target="busybox"),
    _device("dev/null", tarfile.CHRTYPE, 1, 3),
    _device("dev/tty", tarfile.CHRTYPE, 5, 0),
    _device("dev/sda", tarfile.BLKTYPE, 8, 0),
    _member("dev/initctl", tarfile.FIFOTYPE),
    _member("dev/stdin", tarfile.SYMTYPE, target="/proc/self/fd/0"),
    _member("dev/pts/ptmx-name", data=b"kept\n"),
    _member("etc/hostname", data=b"after-the-devices\n"),
)
DEVICES = {"dev/null", "dev/tty", "dev/sda"}


def _entries(data: bytes) -> set[tuple[str, bytes]]:
    """An archive's members as (name without "./" or a trailing "/", type); the root left out."""
    with tarfile.open(fileobj=io.BytesIO(data)) as handle:
        entries = {(os.path.normpath(info.name), info.type) for info in handle.getmembers()}
    return entries - {(".", tarfile.DIRTYPE)}


@pytest.mark.parametrize(("kind", "pipe"), [("tar", False), ("gz", True), ("xz", False)])
def test_device_nodes_are_skipped_with_a_warning(
    booted: BootedVm, tmp_path: Path, kind: str, pipe: bool
) -> None:
    """Character and block devices cannot be made in the VM: they are left out (with one warning
    that counts them); a FIFO and everything after them is imported, and exported again."""
    target = _target(booted, tmp_path)
    outcome, errors = run_import(booted, target, _compress(WITH_DEVICES, kind), pipe=pipe)
    assert isinstance(outcome, ImportOutcome) and outcome.valid, errors
    assert (outcome.flavor, outcome.version) == ("devices", "1")
    assert outcome.warnings == (skipped_devices_warning(3),)
    assert "Skipped 3 device nodes" in outcome.warnings[0]
    assert not errors.strip(), "tar had nothing to complain about"
    assert stat.S_ISFIFO(os.lstat(target / "dev/initctl").st_mode)
    assert not any(os.path.lexists(target / name) for name in DEVICES)
    assert (target / "etc/hostname").read_bytes() == b"after-the-devices\n"
    exported = tmp_path / "exported.tar"
    error_read, error_write = os.pipe()
    with open(exported, "wb") as output:
        booted.vm.export_rootfs(target, output.fileno(), error_write, "")
    os.close(error_write)
    os.close(error_read)
    original = _entries(WITH_DEVICES)
    assert _entries(exported.read_bytes()) == {entry for entry in original if entry[0] not in DEVICES}


def test_an_archive_without_devices_has_no_warning(booted: BootedVm, tmp_path: Path) -> None:
    outcome, errors = run_import(booted, _target(booted, tmp_path), DISTRO)
    assert isinstance(outcome, ImportOutcome) and outcome.warnings == (), errors


@pytest.mark.parametrize("damage", ["checksum", "truncated-gzip"])
def test_a_damaged_archive_with_devices_still_fails(booted: BootedVm, tmp_path: Path, damage: str) -> None:
    data = bytearray(WITH_DEVICES)
    if damage == "checksum":
        with tarfile.open(fileobj=io.BytesIO(WITH_DEVICES)) as handle:
            hostname = handle.getmember("etc/hostname").offset_data - 512
        data[hostname + 148] ^= 0x01
    else:
        data = bytearray(gzip.compress(WITH_DEVICES)[:-200])
    outcome, errors = run_import(booted, _target(booted, tmp_path), bytes(data), pipe=damage != "checksum")
    assert isinstance(outcome, VmError), outcome
    assert errors.strip(), "tar's (or gzip's) complaint reaches the stderr descriptor"


def test_import_of_something_that_is_not_a_distribution(booted: BootedVm, tmp_path: Path) -> None:
    target = _target(booted, tmp_path)
    outcome, _errors = run_import(booted, target, archive(_member("readme.txt", data=b"hello")))
    assert outcome == ImportOutcome(valid=False, flavor=None, version=None, default_name=None)


HOSTILE = {
    "dot-dot": archive(
        _member("etc", tarfile.DIRTYPE),
        _member("../escape-dotdot", data=b"x"),
        _member("a/../../escape-dotdot2", data=b"x"),
    ),
    "absolute": archive(_member("/tmp/escape-absolute", data=b"x")),
    "symlink-out": archive(
        _member("out", tarfile.SYMTYPE, target="/tmp"),
        _member("out/escape-symlink", data=b"x"),
        _member("up", tarfile.SYMTYPE, target="../../../../../.."),
        _member("up/tmp/escape-up", data=b"x"),
    ),
    "symlinked-etc": archive(
        _member("etc", tarfile.SYMTYPE, target="/etc"), _member("etc/escape-etc", data=b"x")
    ),
    "hardlink-out": archive(
        _member("passwd", tarfile.LNKTYPE, target="/etc/passwd"),
        _member("shadow", tarfile.LNKTYPE, target="../../../../etc/shadow"),
    ),
    "truncated-gzip": gzip.compress(DISTRO)[:60],
    "garbage": b"\x00not a tar archive at all" * 100,
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_archives_write_nothing_outside(booted: BootedVm, tmp_path: Path, name: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    target = _target(booted, outside)
    before = sorted(os.listdir(outside))
    piped = name == "truncated-gzip"
    outcome, errors = run_import(booted, target, HOSTILE[name], pipe=piped)
    assert errors.strip(), "tar's diagnostics reach the stderr descriptor"
    if name == "absolute":
        # A leading "/" is dropped: the member lands inside the target, as with WSL's bsdtar.
        assert isinstance(outcome, ImportOutcome) and (target / "tmp/escape-absolute").is_file()
    else:
        assert isinstance(outcome, VmError), outcome
    assert sorted(os.listdir(outside)) == sorted([*before, *([] if piped else ["target.archive"])])
    for leaked in (
        "/tmp/escape-absolute",
        "/tmp/escape-symlink",
        "/tmp/escape-up",
        "/etc/escape-etc",
        str(outside / "escape-dotdot"),
        str(tmp_path / "escape-dotdot2"),
    ):
        assert not os.path.lexists(leaked), leaked
    assert os.stat("/etc/passwd").st_nlink == 1


def _snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Everything that must survive a round trip, by relative path; hard links as inode groups."""
    entries: dict[str, tuple[object, ...]] = {}
    inodes: dict[int, str] = {}
    for directory, dirs, files in os.walk(root):
        for name in sorted(dirs + files):
            path = Path(directory, name)
            relative = str(path.relative_to(root))
            info = os.lstat(path)
            kind = stat.S_IFMT(info.st_mode)
            detail: object = None
            if stat.S_ISLNK(info.st_mode):
                detail = os.readlink(path)
            elif stat.S_ISREG(info.st_mode):
                detail = hashlib.sha256(path.read_bytes()).hexdigest()
                if info.st_nlink > 1:
                    detail = (detail, inodes.setdefault(info.st_ino, relative))
            xattrs: tuple[tuple[str, bytes], ...] = ()
            if not stat.S_ISLNK(info.st_mode):
                xattrs = tuple(
                    sorted(
                        (key, os.getxattr(path, key)) for key in os.listxattr(path) if key.startswith("user.")
                    )
                )
            mtime = int(info.st_mtime) if not stat.S_ISDIR(info.st_mode) else None
            entries[relative] = (
                kind,
                stat.S_IMODE(info.st_mode),
                info.st_uid,
                info.st_gid,
                detail,
                xattrs,
                mtime,
            )
    return entries


@pytest.fixture
def rich_tree(booted: BootedVm, vm_factory: VmFactory) -> Iterator[Path]:
    """The busybox root plus every kind of entry an export has to carry."""
    root = vm_factory.rootfs("rich", vm=booted)
    uid = host_id(booted.config.uid_map, 0)
    gid = host_id(booted.config.gid_map, 0)
    data = root / "data"
    data.mkdir(mode=0o750)
    (data / "setuid").write_bytes(b"#!/bin/sh\n")
    (data / "private").write_text("secret\n")
    (data / "alice").write_text("alice's\n")
    (data / "empty").touch()
    os.link(data / "private", data / "private-link")
    (data / "relative").symlink_to("private")
    (data / "absolute").symlink_to("/etc/passwd")
    (data / "dangling").symlink_to("nowhere")
    os.mkfifo(data / "fifo")
    os.setxattr(data / "private", "user.pywsl", b"value")
    for path in (data, *data.iterdir()):
        os.lchown(path, uid, gid)
    os.chmod(data / "setuid", 0o4755)
    os.chmod(data / "private", 0o600)
    os.lchown(data / "alice", host_id(booted.config.uid_map, 1000), host_id(booted.config.gid_map, 100))
    os.utime(data / "alice", (1_000_000_000, 1_000_000_000))
    yield root


@pytest.mark.parametrize("compression", ["", "gzip", "xz"])
def test_export_round_trip(booted: BootedVm, rich_tree: Path, tmp_path: Path, compression: str) -> None:
    exported = tmp_path / "exported.tar"
    error_read, error_write = os.pipe()
    with open(exported, "wb") as output:
        booted.vm.export_rootfs(rich_tree, output.fileno(), error_write, compression)
    os.close(error_write)
    os.close(error_read)
    magic = exported.read_bytes()[:6]
    assert {
        "": b"data/" not in magic,
        "gzip": magic.startswith(b"\x1f\x8b"),
        "xz": magic.startswith(b"\xfd7zXZ"),
    }[compression]
    target = _target(booted, tmp_path, "copy")
    outcome, errors = run_import(booted, target, exported.read_bytes())
    assert isinstance(outcome, ImportOutcome) and outcome.valid, errors
    original, copy = _snapshot(rich_tree), _snapshot(target)
    assert copy == original
    assert copy["data/private"][5] == (("user.pywsl", b"value"),)
    assert copy["data/setuid"][1] == 0o4755


def test_export_failure_is_reported(booted: BootedVm, tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody reads: tar fails writing
    error_read, error_write = os.pipe()
    target = _target(booted, tmp_path)
    (target / "file").write_bytes(os.urandom(1 << 20))
    with pytest.raises(VmError) as failure:
        booted.vm.export_rootfs(target, write_end, error_write, "")
    os.close(write_end)
    os.close(error_write)
    os.close(error_read)
    assert "tar exit status" in str(failure.value)
    with pytest.raises(ValueError):
        booted.vm.export_rootfs(target, 1, 2, "lz4")


def test_large_import_through_a_pipe(booted: BootedVm, tmp_path: Path) -> None:
    payload = os.urandom(3 << 20)
    data = archive(_member("etc", tarfile.DIRTYPE), _member("etc/blob", data=payload))
    target = _target(booted, tmp_path)
    outcome, errors = run_import(booted, target, data, pipe=True)
    assert isinstance(outcome, ImportOutcome) and outcome.valid, errors
    assert (target / "etc/blob").read_bytes() == payload


def _feed_then_repeat(data: bytes, filler: bytes) -> tuple[int, threading.Thread]:
    """A pipe that yields ``data`` and then ``filler`` over and over until nobody reads it any more."""
    source, feed = os.pipe()

    def write() -> None:
        try:
            forking_write(feed, data)
            while True:
                forking_write(feed, filler)
        except BrokenPipeError:
            pass
        finally:
            os.close(feed)

    feeder = threading.Thread(target=write, daemon=True)
    feeder.start()
    return source, feeder


def forking_write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


@pytest.mark.parametrize("kind", ["tar", "gz"])
def test_the_end_of_the_archive_ends_the_import(booted: BootedVm, tmp_path: Path, kind: str) -> None:
    """Data after the archive (a pipe that never ends) is not waited for."""
    target = _target(booted, tmp_path)
    source, feeder = _feed_then_repeat(_compress(DISTRO, kind), bytes(1 << 16))
    error_read, error_write = os.pipe()
    try:
        outcome = booted.vm.import_rootfs(target, source, error_write)
    finally:
        os.close(source)
        os.close(error_write)
    feeder.join(30)
    assert not feeder.is_alive()
    with os.fdopen(error_read, "rb") as errors:
        assert outcome.valid, errors.read()
    assert (target / "etc/os-release").is_file()


@contextlib.contextmanager
def small_filesystem(where: Path, options: str) -> Iterator[Path]:
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "pywsl-full", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def _zero_file_archive(size: int) -> bytes:
    """A gzip of a tar holding one file of ``size`` zero bytes (a few hundred KiB for many MiB)."""
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=9) as packed,
        tarfile.open(fileobj=packed, mode="w|", format=tarfile.GNU_FORMAT) as handle,
    ):
        for info, data in (_member("etc", tarfile.DIRTYPE), _member("etc/os-release", data=b"ID=x\n")):
            handle.addfile(info, io.BytesIO(data) if data is not None else None)
        info = tarfile.TarInfo("zeros")
        info.size = size
        handle.addfile(info, io.BytesIO(bytes(size)))
    return buffer.getvalue()


def _many_files_archive(count: int) -> bytes:
    return gzip.compress(
        archive(_member("etc", tarfile.DIRTYPE), *(_member(f"etc/f{index}") for index in range(count)))
    )


@pytest.mark.parametrize(
    ("options", "data"),
    [
        ("size=8m", lambda: _zero_file_archive(64 << 20)),
        ("size=8m,nr_inodes=200", lambda: _many_files_archive(2000)),
    ],
)
def test_a_full_disk_stops_the_import(
    booted: BootedVm, tmp_path: Path, options: str, data: Callable[[], bytes]
) -> None:
    with small_filesystem(tmp_path / "small", options) as small:
        target = _target(booted, small)
        outcome, errors = run_import(booted, target, data(), pipe=True)
        assert isinstance(outcome, VmError), errors
        assert outcome.errno == errno.ENOSPC and "the disk is full" in str(outcome), outcome
        assert "No space left on device" in errors


def test_sparse_files_stay_sparse(booted: BootedVm, tmp_path: Path) -> None:
    source = _target(booted, tmp_path, "source")
    (source / "etc").mkdir()
    sparse = source / "etc" / "sparse"
    with open(sparse, "wb") as handle:
        handle.truncate(256 << 20)
        handle.seek(128 << 20)
        handle.write(b"middle")
    assert os.stat(sparse).st_blocks * 512 < (1 << 20)
    exported = tmp_path / "exported.tar"
    error_read, error_write = os.pipe()
    with open(exported, "wb") as output:
        booted.vm.export_rootfs(source, output.fileno(), error_write, "")
    os.close(error_write)
    os.close(error_read)
    assert exported.stat().st_size < (1 << 20)
    target = _target(booted, tmp_path, "copy")
    outcome, errors = run_import(booted, target, exported.read_bytes())
    assert isinstance(outcome, ImportOutcome), errors
    copy = os.stat(target / "etc" / "sparse")
    assert copy.st_size == 256 << 20 and copy.st_blocks * 512 < (1 << 20)
    with open(target / "etc" / "sparse", "rb") as handle:
        handle.seek(128 << 20)
        assert handle.read(6) == b"middle"


class _Cancel:
    """A cancellation the test fires (the api's CancelToken in miniature)."""

    def __init__(self) -> None:
        self._callbacks: list[Callable[[], None]] = []

    @contextlib.contextmanager
    def on_cancel(self, callback: Callable[[], None]) -> Iterator[None]:
        self._callbacks.append(callback)
        try:
            yield
        finally:
            self._callbacks.remove(callback)

    def fire(self) -> None:
        for callback in list(self._callbacks):
            callback()


def test_cancel_stops_a_blocked_export(booted: BootedVm, tmp_path: Path) -> None:
    """An export into a pipe nobody reads ends when it is cancelled; the worker is gone."""
    source = _target(booted, tmp_path)
    (source / "blob").write_bytes(os.urandom(4 << 20))
    read_end, write_end = os.pipe()
    error_read, error_write = os.pipe()
    cancel = _Cancel()
    failure: list[BaseException] = []

    def export() -> None:
        try:
            booted.vm.export_rootfs(source, write_end, error_write, "", cancel=cancel)
        except BaseException as error:
            failure.append(error)

    exporter = threading.Thread(target=export)
    exporter.start()
    try:
        ready = select.poll()
        ready.register(read_end, select.POLLIN)
        assert ready.poll(30_000), "tar writes into the pipe"
        cancel.fire()
        exporter.join(40)
        assert not exporter.is_alive()
    finally:
        os.close(read_end)
        exporter.join()
        os.close(write_end)
        os.close(error_write)
        os.close(error_read)
    assert isinstance(failure[0], VmError) and failure[0].errno == errno.ECANCELED
    assert booted.vm.running_instances() == {}
