"""A real Debian minbase root filesystem in the utility VM (debootstrap, built once per run)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import VmFactory, run_in

from pywsl.vm import ImportOutcome
from pywsl.vm.idmap import host_id

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the namespaces backend needs root"),
    pytest.mark.skipif(shutil.which("debootstrap") is None, reason="needs debootstrap"),
]


def _mirror() -> str:
    """The Debian mirror the host's apt uses (deb822 ``URIs:`` or one-line ``deb`` entries)."""
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        try:
            lines = path.read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            words = line.split()
            if words[:1] == ["URIs:"] and len(words) > 1 and "security" not in words[1]:
                return words[1]
            if words[:1] == ["deb"]:
                uri = next((word for word in words[1:] if "://" in word), None)
                if uri and "security" not in uri:
                    return uri
    return "http://deb.debian.org/debian"


@pytest.fixture(scope="session")
def debian_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``debootstrap --variant=minbase bookworm`` packed as a tar (without /dev's nodes), once per run."""
    work = tmp_path_factory.mktemp("debian")
    root = work / "root"
    result = subprocess.run(
        ["debootstrap", "--variant=minbase", "bookworm", str(root), _mirror()],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        pytest.skip(f"debootstrap failed (no mirror?): {result.stdout[-500:]}{result.stderr[-500:]}")
    archive = work / "debian.tar"
    subprocess.run(
        [
            "tar",
            "-C",
            str(root),
            "--numeric-owner",
            "--xattrs",
            "--exclude=./dev/*",
            "-cf",
            str(archive),
            ".",
        ],
        check=True,
    )
    shutil.rmtree(root)
    return archive


def test_debian_minbase(vm_factory: VmFactory, debian_archive: Path, tmp_path: Path) -> None:
    booted = vm_factory.boot(owner=(0, 0))
    target = tmp_path / "debian"
    target.mkdir()
    os.chown(target, host_id(booted.config.uid_map, 0), host_id(booted.config.gid_map, 0))
    error_read, error_write = os.pipe()
    with open(debian_archive, "rb") as source:
        outcome = booted.vm.import_rootfs(target, source.fileno(), error_write)
    os.close(error_write)
    os.close(error_read)
    assert outcome == ImportOutcome(valid=True, flavor="debian", version="12", default_name=None)
    passwd = target / "usr/bin/passwd"
    assert passwd.stat().st_mode & 0o4000 and passwd.stat().st_uid == host_id(booted.config.uid_map, 0)
    instance = booted.vm.launch_instance("Debian", target, default_uid=0, hostname="deb")
    assert (instance.flavor, instance.version) == ("debian", "12")
    result = run_in(
        instance,
        "cat /proc/1/comm; id -un; hostname; dpkg-query -W -f='${Package}\\n' bash; "
        "apt-get --version | head -1; ls -ld /tmp | cut -c1-10; getent hosts localhost",
    )
    lines = result.stdout.splitlines()
    assert result.code == 0, result.stderr
    assert lines[:4] == ["init", "root", "deb", "bash"]
    assert lines[4].startswith("apt ") and lines[5] == "drwxrwxrwt"
    assert "127.0.0.1" in lines[6]
    user = run_in(instance, "useradd -m -u 1000 bob && su bob -c 'id -u; touch ~/f; stat -c %u ~/f'")
    assert user.stdout.split() == ["1000", "1000"], user.stderr
    assert (target / "home/bob/f").stat().st_uid == host_id(booted.config.uid_map, 1000)
    instance.terminate()
