"""A real Debian minbase root filesystem in the utility VM (the built-in source's build, once per run)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import VmFactory, run_in
from test_install_support import debian_archive

from pywsl.vm import ImportOutcome
from pywsl.vm.idmap import host_id

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the namespaces backend needs root"),
    pytest.mark.skipif(shutil.which("debootstrap") is None, reason="needs debootstrap"),
]

__all__ = ["debian_archive"]  # the session-wide build, shared with the install tests


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
    # The built-in image names itself in /etc/wsl-distribution.conf ([oobe] defaultName).
    assert outcome == ImportOutcome(valid=True, flavor="debian", version="12", default_name="Debian")
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
