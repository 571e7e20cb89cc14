"""The built-in debootstrap source: apt sources, mirror choice, progress protocol, failure cleanup."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest
from test_install_support import closed_port_url, debian_archive

from pywsl.api.errors import WslError
from pywsl.api.install.apt_sources import (
    DEFAULT_DEBIAN_MIRROR,
    AptSource,
    host_apt_sources,
    mirror_for,
    parse_deb822_sources,
    parse_one_line_sources,
)
from pywsl.api.install.builtin_catalog import HostTools, available_builtins, find_builtin
from pywsl.api.install.builtin_source import DebootstrapProgress, build_rootfs_archive

__all__ = ["debian_archive"]

DEBIAN_SOURCES = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm
Components: main

Types: deb
URIs: http://disabled.example/debian
Suites: trixie
Components: main
Enabled: no
"""


def test_deb822_stanzas() -> None:
    sources = parse_deb822_sources(DEBIAN_SOURCES)
    assert sources == [
        AptSource("http://mirror.example/debian", ("bookworm", "bookworm-updates"), ("main",)),
        AptSource("http://mirror.example/debian-security", ("bookworm-security",), ("main",)),
    ]


def test_deb822_continuation_lines_and_several_uris() -> None:
    text = "Types: deb deb-src\nURIs: http://a.example/debian\n http://b.example/debian\nSuites: sid\n"
    assert [s.uri for s in parse_deb822_sources(text)] == [
        "http://a.example/debian",
        "http://b.example/debian",
    ]


def test_one_line_sources() -> None:
    text = (
        "# comment\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://ftp.example/debian bookworm main contrib\n"
        "deb-src http://ftp.example/debian bookworm main\n"
        "deb https://packages.cloud.example/apt cloud-sdk main  # trailing\n"
        "deb http://ftp.example/debian-security bookworm-security main\n"
    )
    assert parse_one_line_sources(text) == [
        AptSource("http://ftp.example/debian", ("bookworm",), ("main", "contrib")),
        AptSource("https://packages.cloud.example/apt", ("cloud-sdk",), ("main",)),
        AptSource("http://ftp.example/debian-security", ("bookworm-security",), ("main",)),
    ]


def test_host_sources_read_every_format(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text("deb http://one.example/debian bookworm main\n")
    (tmp_path / "sources.list.d" / "debian.sources").write_text(DEBIAN_SOURCES)
    (tmp_path / "sources.list.d" / "other.list").write_text("deb http://vendor.example/apt stable main\n")
    (tmp_path / "sources.list.d" / "ignored.list.disabled").write_text("deb http://x.example/ sid main\n")
    uris = [s.uri for s in host_apt_sources(tmp_path)]
    assert uris == [
        "http://one.example/debian",
        "http://mirror.example/debian",
        "http://mirror.example/debian-security",
        "http://vendor.example/apt",
    ]
    assert host_apt_sources(tmp_path / "missing") == []


def test_mirror_choice() -> None:
    vendor_first = [
        AptSource("https://packages.cloud.example/apt", ("cloud-sdk-bookworm",), ("main",)),
        AptSource("http://mirror.example/debian-security", ("bookworm-security",), ("main",)),
        AptSource("http://mirror.example/debian/", ("bookworm-updates",), ("main",)),
    ]
    assert mirror_for("debian", vendor_first) == "http://mirror.example/debian"
    assert mirror_for("debian", []) == DEFAULT_DEBIAN_MIRROR
    ubuntu = [AptSource("http://archive.example/ubuntu", ("noble", "noble-updates"), ("main",))]
    assert mirror_for("ubuntu", ubuntu) == "http://archive.example/ubuntu"
    assert mirror_for("ubuntu", [], "x86_64") == "http://archive.ubuntu.com/ubuntu"
    assert mirror_for("ubuntu", [], "aarch64") == "http://ports.ubuntu.com/ubuntu-ports"


def test_this_hosts_debian_mirror_is_found() -> None:
    if not Path("/etc/apt").is_dir():
        pytest.skip("no apt on this host")
    mirror = mirror_for("debian", host_apt_sources())
    assert mirror.startswith(("http://", "https://", "file:/"))


def test_entries_need_their_keyring(tmp_path: Path) -> None:
    ring = tmp_path / "debian.gpg"
    ring.write_bytes(b"")
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    for suite in ("bookworm", "bullseye", "sid", "gutsy", "jammy"):
        (scripts / suite).write_text("")
    rings = {"debian": (ring,), "ubuntu": (tmp_path / "absent.gpg",)}
    tools = HostTools("/usr/sbin/debootstrap", "/usr/bin/gpgv", rings, scripts)
    entries = available_builtins(tools)
    names = [e.name for e in entries]
    assert names == ["Debian", "Debian-11", "Debian-12", "Debian-13"]
    debian = find_builtin("debian", entries)
    assert debian is not None and debian.suite == "bookworm" and debian.is_default and debian.script is None
    trixie = find_builtin("Debian-13", entries)
    assert trixie is not None and trixie.script == str(scripts / "sid")
    with_ubuntu = available_builtins(HostTools("/d", "/g", {"ubuntu": (ring,)}, scripts))
    assert [e.name for e in with_ubuntu] == ["Ubuntu", "Ubuntu-22.04", "Ubuntu-24.04"]
    noble = find_builtin("Ubuntu-24.04", with_ubuntu)
    assert noble is not None and noble.script == str(scripts / "gutsy")
    assert find_builtin("Ubuntu", entries) is None


FD3_SAMPLE = """\
I: ARCHEXEC
IF: Target architecture can be executed
P: 0 100 DOWNREL
PF: Downloading Release file
I: RETRIEVING
IA: InRelease
IA:
IF: Retrieving %s %s
P: 50 100
P: 0 31870120 DOWNDEBS
PF: Downloading packages
P: 15935060 31870120
I: EXTRACTING
IA: libc6
IF: Extracting %s...
P: 44 88 EXTRACTPKGS
PF: Extracting packages
E: COULDNTDL
EA: base-files
EF: Couldn't download package %s (100%% failed)
"""


def test_progress_protocol_becomes_one_bar() -> None:
    events: list[tuple[int, int, str]] = []
    tracker = DebootstrapProgress(lambda done, total, text: events.append((done, total, text)))
    for line in FD3_SAMPLE.splitlines():
        tracker.feed(line)
    messages = [text for _, _, text in events]
    assert "Target architecture can be executed" in messages
    assert "Retrieving InRelease" in messages
    assert "Extracting libc6..." in messages
    values = [done for done, _, _ in events]
    assert values == sorted(values) and all(total == 1000 for _, total, _ in events)
    assert (340, 1000, "Downloading packages") in events  # half of DOWNDEBS (130..550)
    assert values[-1] == 600  # half of EXTRACTPKGS (550..650)
    assert tracker.errors == ["Couldn't download package base-files (100% failed)"]


def _needs_builtin() -> None:
    if os.geteuid() != 0 or find_builtin("Debian") is None:
        pytest.skip("this host cannot run debootstrap (needs root, debootstrap and the Debian keyring)")


def test_failed_build_leaves_only_its_log(tmp_path: Path) -> None:
    _needs_builtin()
    entry = find_builtin("Debian")
    assert entry is not None
    work, logs = tmp_path / "work", tmp_path / "logs"
    work.mkdir()
    mirror = closed_port_url("/debian")
    with pytest.raises(WslError) as caught:
        build_rootfs_archive(entry, work, mirror=mirror, log_dir=logs)
    assert caught.value.code == "WSL_E_INSTALL_PROCESS_FAILED"
    log = logs / "debootstrap-Debian.log"
    assert str(log) in caught.value.message and mirror in caught.value.message
    assert log.is_file()
    assert list(work.iterdir()) == []


def test_interrupted_build_leaves_nothing(tmp_path: Path) -> None:
    _needs_builtin()
    entry = find_builtin("Debian")
    assert entry is not None
    calls: list[str] = []

    def interrupt(done: int, total: int, text: str) -> None:
        calls.append(text)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_rootfs_archive(
            entry, tmp_path, progress=interrupt, mirror=closed_port_url("/debian"), log_dir=tmp_path / "logs"
        )
    assert calls
    assert [p.name for p in tmp_path.iterdir()] == ["logs"]


@pytest.mark.slow
def test_built_debian_archive_is_a_debian_rootfs(debian_archive: Path) -> None:
    with tarfile.open(debian_archive) as archive:
        members = {m.name: m for m in archive.getmembers()}
    assert "./etc/os-release" in members and "./usr/bin/apt-get" in members
    assert "./dev/" in members or "./dev" in members
    assert not [
        n
        for n in members
        if n.startswith(("./dev/", "./proc/", "./sys/")) and n not in ("./dev/", "./proc/", "./sys/")
    ]
    assert not [n for n in members if n.endswith(".deb")]
    assert members["./etc/passwd"].uid == 0
