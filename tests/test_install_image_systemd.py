"""The built-in images' systemd choice: Ubuntu boots with systemd (as its WSL image), Debian without."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest
from busybox_images import BUSYBOX, build_busybox_rootfs

from pywsl.api.install.builtin_image import EXTRA_PACKAGES, image_packages, image_wsl_conf, make_wsl_image
from pywsl.guest.wsl_conf import parse_wsl_conf

# Stand-ins for the tree's locale tools: make_wsl_image runs them chrooted into the tree.
LOCALEDEF = '#!/bin/sh\necho "$@" > /var/localedef-arguments\n'
LOCALE = "#!/bin/sh\necho C\necho en_US.utf8\n"


def test_ubuntu_image_gets_systemd_and_its_bus() -> None:
    packages = image_packages("ubuntu")
    assert set(EXTRA_PACKAGES) <= set(packages)
    assert {"systemd", "systemd-sysv", "dbus"} <= set(packages)
    conf = image_wsl_conf("ubuntu")
    assert conf is not None
    parsed = parse_wsl_conf(conf)
    assert parsed.boot_systemd is True and not parsed.warnings


def test_debian_image_stays_without_systemd_as_debians_wsl_image() -> None:
    assert image_packages("debian") == EXTRA_PACKAGES
    assert image_wsl_conf("debian") is None


def _tree(path: Path) -> Path:
    build_busybox_rootfs(path)
    for name, text in (("localedef", LOCALEDEF), ("locale", LOCALE)):
        tool = path / "usr/bin" / name
        tool.parent.mkdir(parents=True, exist_ok=True)
        tool.write_text(text)
        tool.chmod(0o755)
    os.chown(path, 0, 0)
    path.chmod(0o755)
    return path


@pytest.mark.skipif(os.geteuid() != 0, reason="the image is written as root and its tools run in a chroot")
@pytest.mark.skipif(
    not BUSYBOX.is_file() or shutil.which("chroot") is None, reason="needs busybox and chroot"
)
@pytest.mark.parametrize("vendor", ["ubuntu", "debian"])
def test_image_files_carry_the_vendors_choice(tmp_path: Path, vendor: str) -> None:
    tree = _tree(tmp_path / "tree")
    make_wsl_image(
        tree,
        name=vendor.title(),
        vendor=vendor,
        suite="stable",
        mirror="http://mirror.example/",
        security_mirror="http://security.example/",
        log=tmp_path / "build.log",
    )
    assert (tree / "var/localedef-arguments").read_text() == "-i en_US -c -f UTF-8 en_US.UTF-8\n"
    assert (tree / "etc/wsl-distribution.conf").is_file()
    conf = tree / "etc/wsl.conf"
    if vendor == "debian":
        assert not conf.exists()
        return
    info = conf.lstat()
    assert stat.S_ISREG(info.st_mode) and (info.st_uid, info.st_gid) == (0, 0)
    assert stat.S_IMODE(info.st_mode) == 0o644
    assert parse_wsl_conf(conf.read_text()).boot_systemd is True
