"""The test distributions themselves: what the archive and folder builders put in an image."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest
from busybox_images import (
    BUSYBOX,
    DEFAULT_OS_RELEASE,
    NOBODY,
    ROOT,
    build_busybox_rootfs,
    busybox_applets,
    busybox_archive,
    os_release_text,
)

pytestmark = pytest.mark.skipif(not BUSYBOX.is_file(), reason="needs a static /bin/busybox (busybox-static)")


def members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        return {member.name: member for member in archive.getmembers()}


def read(data: bytes, name: str) -> str:
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        source = archive.extractfile(name)
        assert source is not None
        return source.read().decode()


def test_the_default_archive() -> None:
    data = busybox_archive()
    found = members(data)
    assert found["bin/busybox"].size == BUSYBOX.stat().st_size and found["bin/busybox"].mode == 0o755
    applets = busybox_applets()
    assert "sh" in applets and "busybox" not in applets
    for applet in applets:
        assert found[f"bin/{applet}"].issym() and found[f"bin/{applet}"].linkname == "busybox"
    assert not any(name.startswith("usr/bin/") for name in found)
    assert found["tmp"].mode == 0o1777 and found["home/alice"].uid == 1000
    assert read(data, "etc/passwd") == (
        "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000:Alice:/home/alice:/bin/sh\n"
    )
    assert read(data, "etc/group") == "root:x:0:\ntty:x:5:\nalice:x:1000:\n"
    assert read(data, "etc/os-release") == DEFAULT_OS_RELEASE
    assert os_release_text().startswith('ID=busybox\nVERSION_ID="1.36"\n')
    assert found["etc/shadow"].mode == 0o640
    assert "etc/wsl.conf" not in found and "etc/wsl-distribution.conf" not in found
    assert busybox_archive() == data


def test_the_variants() -> None:
    data = busybox_archive(
        compression="xz",
        prefix="./",
        tar_format=tarfile.GNU_FORMAT,
        applets=["sh", "cat"],
        usr_bin_links=True,
        users=(ROOT, NOBODY),
        os_release=os_release_text("tiny", "1.0", "Tiny"),
        wsl_conf="[boot]\n",
        wsl_distribution_conf="[oobe]\ndefaultName=Tiny\n",
        extra_files={"./etc/marker": "one\n", "opt/data": b"\0\1"},
        filler_bytes=4096,
    )
    assert data.startswith(b"\xfd7zXZ")
    found = members(data)
    assert all(name.startswith("./") for name in found)
    assert {name for name in found if name.startswith("./bin/")} == {"./bin/busybox", "./bin/sh", "./bin/cat"}
    assert found["./usr/bin/cat"].linkname == "/bin/busybox"
    assert read(data, "./etc/passwd").splitlines()[1] == "nobody:x:65534:65534:nobody:/nonexistent:/bin/false"
    assert read(data, "./etc/group") == "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n"
    assert read(data, "./etc/os-release") == (
        'ID=tiny\nVERSION_ID="1.0"\nNAME="Tiny"\nPRETTY_NAME="Tiny 1.0"\n'
    )
    assert read(data, "./etc/wsl.conf") == "[boot]\n"
    assert read(data, "./etc/wsl-distribution.conf") == "[oobe]\ndefaultName=Tiny\n"
    assert read(data, "./etc/marker") == "one\n" and found["./opt/data"].size == 2
    assert list(found)[-1] == "./filler" and found["./filler"].size == 4096
    assert "./home/alice" not in found
    assert busybox_archive(os_release=None, compression="gz").startswith(b"\x1f\x8b")
    assert "etc/os-release" not in members(busybox_archive(os_release=None))


def test_an_archive_written_to_a_file(tmp_path: Path) -> None:
    path = busybox_archive(tmp_path / "image.tar", compression="gz")
    assert path == tmp_path / "image.tar"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    with tarfile.open(path) as archive:
        assert "bin/busybox" in archive.getnames()


def test_an_unknown_compression_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown compression"):
        busybox_archive(compression="bz2")  # type: ignore[call-overload]


def test_the_folder(tmp_path: Path) -> None:
    root = build_busybox_rootfs(tmp_path / "rootfs", wsl_conf="[user]\ndefault = alice\n", os_release=None)
    assert (root / "bin/busybox").read_bytes() == BUSYBOX.read_bytes()
    assert os.readlink(root / "bin/sh") == "busybox"
    assert stat.S_IMODE((root / "tmp").stat().st_mode) == 0o1777
    assert (root / "etc/passwd").read_text().splitlines()[1].startswith("alice:x:1000:1000:")
    assert (root / "etc/wsl.conf").read_text() == "[user]\ndefault = alice\n"
    assert not (root / "etc/os-release").exists()
    assert (root / "home/alice").is_dir()


@pytest.mark.skipif(os.geteuid() != 0, reason="giving files to other ids needs root")
def test_the_folder_owned_as_after_an_import(tmp_path: Path) -> None:
    root = build_busybox_rootfs(tmp_path / "rootfs", owner=(200000, 300000))
    assert (root.stat().st_uid, root.stat().st_gid) == (200000, 300000)
    link = (root / "bin/sh").lstat()
    assert (link.st_uid, link.st_gid) == (200000, 300000)
    home = (root / "home/alice").stat()
    assert (home.st_uid, home.st_gid) == (201000, 301000)
