"""Built-in distributions on different Debian-family hosts: what can be built, the default, the
apt sources an image gets, and how `--list --online` and `--install` report what cannot be built."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pytest_mock import MockerFixture
from test_cli_support import Cli
from test_install_support import FileServer, closed_port_url, file_server, manifest_document, version_entry

from pywsl.api.errors import WslError
from pywsl.api.install import builtin_catalog, host_distribution
from pywsl.api.install.apt_sources import host_apt_sources, image_sources, mirror_for, security_mirror_for
from pywsl.api.install.builtin_catalog import (
    HostTools,
    default_builtin,
    lookup_builtin,
    require_buildable,
)
from pywsl.api.install.builtin_catalog import (
    builtin_catalog as catalog,
)
from pywsl.api.install.host_distribution import host_family
from pywsl.api.install.manifest import APPEND_URL_ENV, URL_ENV

__all__ = ["file_server"]

DEBIAN_NAMES = ["Debian", "Debian-11", "Debian-12", "Debian-13"]
ALL_NAMES = [*DEBIAN_NAMES, "Ubuntu", "Ubuntu-22.04", "Ubuntu-24.04"]

OS_RELEASES = {
    "debian": 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nVERSION_CODENAME=bookworm\nID=debian\n',
    "ubuntu": 'NAME="Ubuntu"\nVERSION_ID="24.04"\nVERSION_CODENAME=noble\nID=ubuntu\nID_LIKE=debian\n',
    "mint": 'NAME="Linux Mint"\nID=linuxmint\nID_LIKE="ubuntu debian"\nVERSION_CODENAME=wilma\n',
    "raspbian": "ID=raspbian\nID_LIKE=debian\nVERSION_CODENAME=bookworm\n",
    "fedora": 'NAME="Fedora Linux"\nID=fedora\nVERSION_ID=40\n',
}


def os_release(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"os-release-{kind}"
    path.write_text(OS_RELEASES[kind])
    return path


def fake_tools(
    tmp_path: Path,
    *,
    debian: str | None = "debian-archive-keyring.gpg",
    ubuntu: str | None = "ubuntu-archive-keyring.gpg",
    debootstrap: bool = True,
    gpgv: bool = True,
    scripts: tuple[str, ...] = ("sid", "gutsy", "bookworm", "bullseye", "trixie", "jammy"),
    codename: str = "bookworm",
) -> HostTools:
    """Host tools below `tmp_path`: the keyrings named exist (`.gpg` or `.pgp`), the others do not."""
    rings = tmp_path / "keyrings"
    rings.mkdir(parents=True, exist_ok=True)
    for name in (debian, ubuntu):
        if name is not None:
            (rings / name).write_bytes(b"keys")
    folder = tmp_path / "scripts"
    folder.mkdir(exist_ok=True)
    for script in scripts:
        (folder / script).write_text("")
    keyrings = {
        vendor: (rings / f"{vendor}-archive-keyring.gpg", rings / f"{vendor}-archive-keyring.pgp")
        for vendor in ("debian", "ubuntu")
    }
    return HostTools(
        "/usr/sbin/debootstrap" if debootstrap else None,
        "/usr/bin/gpgv" if gpgv else None,
        keyrings,
        folder,
        codename,
    )


# -- the host's family and the default built-in ------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "family"),
    [
        ("debian", "debian"),
        ("ubuntu", "ubuntu"),
        ("mint", "ubuntu"),
        ("raspbian", "debian"),
        ("fedora", None),
    ],
)
def test_host_family_from_os_release(tmp_path: Path, kind: str, family: str | None) -> None:
    assert host_family(os_release(tmp_path, kind)) == family


def test_missing_os_release_is_no_family(tmp_path: Path) -> None:
    assert host_family(tmp_path / "absent") is None
    assert host_distribution.read_os_release(tmp_path / "absent") == {}


def test_os_release_quoting() -> None:
    values = host_distribution.parse_os_release(
        '# comment\nID=\'debian\'\nNAME="Debian \\"GNU\\"/Linux"\nBROKEN="open\nnot a line\n'
    )
    assert values == {"ID": "debian", "NAME": 'Debian "GNU"/Linux'}


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("debian", "Debian"),
        ("raspbian", "Debian"),
        ("ubuntu", "Ubuntu"),
        ("mint", "Ubuntu"),
        ("fedora", "Ubuntu"),
    ],
)
def test_default_builtin_follows_the_host(tmp_path: Path, kind: str, expected: str) -> None:
    entries = catalog(fake_tools(tmp_path))
    assert default_builtin(entries, os_release=os_release(tmp_path, kind)).name == expected


def test_default_builtin_elsewhere_is_the_one_that_can_be_built(tmp_path: Path) -> None:
    only_debian = catalog(fake_tools(tmp_path, ubuntu=None))
    assert default_builtin(only_debian, os_release=os_release(tmp_path, "fedora")).name == "Debian"
    # On an Ubuntu host the default stays Ubuntu, and installing it says what is missing.
    chosen = default_builtin(only_debian, os_release=os_release(tmp_path, "ubuntu"))
    assert chosen.name == "Ubuntu" and chosen.unavailable is not None


# -- what the host can build -------------------------------------------------------------------


def test_ubuntu_on_a_debian_12_host_needs_the_backported_keyring(tmp_path: Path) -> None:
    entries = catalog(fake_tools(tmp_path, ubuntu=None, codename="bookworm"))
    assert [e.name for e in entries if e.unavailable is None] == DEBIAN_NAMES
    ubuntu = lookup_builtin("ubuntu", entries)
    assert ubuntu is not None
    expected = tmp_path / "keyrings" / "ubuntu-archive-keyring.gpg"
    assert ubuntu.unavailable == (
        f"the Ubuntu archive keyring ({expected}) is not installed; run "
        "'apt-get install -t bookworm-backports ubuntu-keyring' "
        "(bookworm-backports must be among apt's sources)"
    )
    with pytest.raises(WslError) as caught:
        require_buildable(ubuntu)
    assert caught.value.code == "ERROR_FILE_NOT_FOUND"
    assert caught.value.message == f"Ubuntu cannot be built on this host: {ubuntu.unavailable}."


def test_debian_on_an_ubuntu_host_needs_debian_archive_keyring(tmp_path: Path) -> None:
    entries = catalog(fake_tools(tmp_path, debian=None, codename="noble"))
    debian = lookup_builtin("Debian-12", entries)
    assert debian is not None
    ring = tmp_path / "keyrings" / "debian-archive-keyring.gpg"
    assert debian.unavailable == (
        f"the Debian archive keyring ({ring}) is not installed; run 'apt-get install debian-archive-keyring'"
    )
    ubuntu = lookup_builtin("Ubuntu", entries)
    assert ubuntu is not None and ubuntu.unavailable is None
    assert require_buildable(ubuntu) is ubuntu
    assert ubuntu.keyring == tmp_path / "keyrings" / "ubuntu-archive-keyring.gpg"


def test_pgp_keyrings_are_found(tmp_path: Path) -> None:
    entries = catalog(fake_tools(tmp_path, debian="debian-archive-keyring.pgp", ubuntu=None))
    debian = lookup_builtin("Debian", entries)
    assert debian is not None and debian.unavailable is None
    assert debian.keyring == tmp_path / "keyrings" / "debian-archive-keyring.pgp"


def test_missing_tools_are_named_together(tmp_path: Path) -> None:
    entries = catalog(fake_tools(tmp_path, debian=None, debootstrap=False, gpgv=False, codename="noble"))
    debian = lookup_builtin("Debian", entries)
    assert debian is not None and debian.unavailable is not None
    assert debian.unavailable.startswith(
        "debootstrap and gpgv (debootstrap checks the archive's signature "
        "with it) and the Debian archive keyring ("
    )
    assert debian.unavailable.endswith(
        " are not installed; run 'apt-get install debootstrap gpgv debian-archive-keyring'"
    )
    mixed = lookup_builtin("Ubuntu", catalog(fake_tools(tmp_path / "b", ubuntu=None, debootstrap=False)))
    assert mixed is not None and mixed.unavailable is not None
    assert mixed.unavailable.endswith(
        "run 'apt-get install debootstrap' and 'apt-get install -t "
        "bookworm-backports ubuntu-keyring' (bookworm-backports must be among "
        "apt's sources)"
    )


def test_a_suite_without_a_script(tmp_path: Path) -> None:
    entries = catalog(fake_tools(tmp_path, scripts=("bookworm",)))
    by_name = {e.name: e for e in entries}
    assert by_name["Debian"].unavailable is None and by_name["Debian"].script is None
    assert by_name["Debian-13"].unavailable == (
        "a debootstrap script for trixie is not installed; run 'apt-get install debootstrap'"
    )
    assert by_name["Ubuntu"].unavailable is not None and "script for noble" in by_name["Ubuntu"].unavailable


def test_detect_reads_the_codename(tmp_path: Path) -> None:
    assert HostTools.detect(os_release(tmp_path, "ubuntu")).codename == "noble"
    assert HostTools.detect(tmp_path / "absent").codename == ""


def test_this_host_lists_every_builtin() -> None:
    names = [entry.name for entry in catalog()]
    assert names == ALL_NAMES
    for entry in catalog():
        assert entry.unavailable is None or "apt-get install" in entry.unavailable


# -- the apt sources of a built image, on the host's mirrors -------------------------------------


def apt_root(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "apt"
    (root / "sources.list.d").mkdir(parents=True)
    for name, text in files.items():
        (root / name).write_text(text)
    return root


def image_for(root: Path, vendor: str, suite: str, machine: str = "x86_64") -> str:
    sources = host_apt_sources(root)
    return image_sources(
        vendor,
        suite,
        mirror_for(vendor, sources, machine),
        security_mirror_for(vendor, sources, machine),
        f"/usr/share/keyrings/{vendor}.gpg",
    )


DEBIAN_DEB822 = """\
Types: deb
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security/
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""

DEBIAN_IMAGE = """\
Types: deb
URIs: {mirror}
Suites: {suite} {suite}-updates
Components: main
Signed-By: /usr/share/keyrings/debian.gpg

Types: deb
URIs: {security}
Suites: {suite}-security
Components: main
Signed-By: /usr/share/keyrings/debian.gpg
"""


def test_debian_image_sources_from_a_deb822_host(tmp_path: Path) -> None:
    root = apt_root(tmp_path, {"sources.list.d/debian.sources": DEBIAN_DEB822})
    assert image_for(root, "debian", "bookworm") == DEBIAN_IMAGE.format(
        mirror="http://mirror.example/debian",
        security="http://mirror.example/debian-security",
        suite="bookworm",
    )
    # Another release on the same host: the same mirrors, its own suites.
    assert image_for(root, "debian", "trixie") == DEBIAN_IMAGE.format(
        mirror="http://mirror.example/debian",
        security="http://mirror.example/debian-security",
        suite="trixie",
    )


def test_debian_image_sources_from_one_line_sources(tmp_path: Path) -> None:
    listed = (
        "deb [arch=amd64] http://ftp.de.debian.org/debian/ bookworm main contrib\n"
        "deb http://security.debian.org/debian-security bookworm-security main\n"
        "deb http://ftp.de.debian.org/debian/ bookworm-updates main\n"
    )
    root = apt_root(tmp_path, {"sources.list": listed})
    assert image_for(root, "debian", "bookworm") == DEBIAN_IMAGE.format(
        mirror="http://ftp.de.debian.org/debian",
        security="http://security.debian.org/debian-security",
        suite="bookworm",
    )
    bare = apt_root(tmp_path / "bare", {"sources.list": "deb http://mirror.example/debian bookworm main\n"})
    assert image_for(bare, "debian", "bookworm") == DEBIAN_IMAGE.format(
        mirror="http://mirror.example/debian",
        security="http://deb.debian.org/debian-security",
        suite="bookworm",
    )


UBUNTU_DEB822 = """\
Types: deb
URIs: http://de.archive.ubuntu.com/ubuntu/
Suites: noble noble-updates noble-backports
Components: main restricted universe multiverse
Signed-By: /usr/share/keyrings/ubuntu-archive-keyring.gpg

Types: deb
URIs: http://security.ubuntu.com/ubuntu/
Suites: noble-security
Components: main restricted universe multiverse
Signed-By: /usr/share/keyrings/ubuntu-archive-keyring.gpg
"""

UBUNTU_IMAGE = """\
Types: deb
URIs: {mirror}
Suites: {suite} {suite}-updates {suite}-backports
Components: main restricted universe multiverse
Signed-By: /usr/share/keyrings/ubuntu.gpg

Types: deb
URIs: {security}
Suites: {suite}-security
Components: main restricted universe multiverse
Signed-By: /usr/share/keyrings/ubuntu.gpg
"""


def test_ubuntu_image_sources_from_an_ubuntu_host(tmp_path: Path) -> None:
    root = apt_root(
        tmp_path,
        {
            "sources.list": "# Ubuntu sources have moved to ubuntu.sources\n",
            "sources.list.d/ubuntu.sources": UBUNTU_DEB822,
        },
    )
    assert image_for(root, "ubuntu", "noble") == UBUNTU_IMAGE.format(
        mirror="http://de.archive.ubuntu.com/ubuntu",
        security="http://security.ubuntu.com/ubuntu",
        suite="noble",
    )
    # Debian's sources on an Ubuntu host are Debian's defaults.
    assert image_for(root, "debian", "bookworm") == DEBIAN_IMAGE.format(
        mirror="http://deb.debian.org/debian",
        security="http://deb.debian.org/debian-security",
        suite="bookworm",
    )


def test_ubuntu_security_on_the_archive_mirror_and_on_ports(tmp_path: Path) -> None:
    jammy = (
        "deb http://archive.example/ubuntu jammy main restricted universe\n"
        "deb http://archive.example/ubuntu jammy-security main restricted\n"
    )
    root = apt_root(tmp_path, {"sources.list": jammy})
    assert image_for(root, "ubuntu", "jammy") == UBUNTU_IMAGE.format(
        mirror="http://archive.example/ubuntu", security="http://archive.example/ubuntu", suite="jammy"
    )
    debian_host = apt_root(tmp_path / "debian", {"sources.list.d/debian.sources": DEBIAN_DEB822})
    ports = "http://ports.ubuntu.com/ubuntu-ports"
    assert image_for(debian_host, "ubuntu", "noble", "aarch64") == UBUNTU_IMAGE.format(
        mirror=ports, security=ports, suite="noble"
    )


def test_unstable_has_one_suite() -> None:
    assert image_sources("debian", "sid", "http://m/debian", "http://s/debian-security") == (
        "Types: deb\nURIs: http://m/debian\nSuites: sid\nComponents: main\n"
    )


# -- how the command line reports what cannot be built ------------------------------------------


@pytest.fixture
def ubuntu_missing(tmp_path: Path, mocker: MockerFixture, monkeypatch: pytest.MonkeyPatch) -> HostTools:
    """A Debian 12 host without Ubuntu's keyring, whose manifest cannot be fetched."""
    tools = fake_tools(tmp_path, ubuntu=None, codename="bookworm")
    mocker.patch.object(builtin_catalog.HostTools, "detect", return_value=tools)
    monkeypatch.setattr(host_distribution, "OS_RELEASE", os_release(tmp_path, "debian"))
    monkeypatch.setenv(URL_ENV, closed_port_url())
    monkeypatch.delenv(APPEND_URL_ENV, raising=False)
    monkeypatch.setenv("PYWSL_CONFIG", str(tmp_path / "no-wslconfig"))
    return tools


def ubuntu_reason(tools: HostTools) -> str:
    return (
        f"the Ubuntu archive keyring ({tools.keyrings['ubuntu'][0]}) is not installed; run "
        "'apt-get install -t bookworm-backports ubuntu-keyring' "
        "(bookworm-backports must be among apt's sources)"
    )


def test_list_online_shows_unavailable_builtins_in_text(
    mocker: MockerFixture, ubuntu_missing: HostTools
) -> None:
    outcome = Cli(mocker)("--list", "--online")
    assert outcome.exit_code == 0
    lines = outcome.stdout.splitlines()
    assert lines[0].startswith("The following is a list of valid distributions")
    assert lines[3].split() == ["NAME", "FRIENDLY", "NAME"]
    rows = {line.split()[0]: line.split(None, 1)[1] for line in lines[4:]}
    assert list(rows) == ALL_NAMES
    assert rows["Debian"] == "Debian GNU/Linux 12 (bookworm), built locally"
    assert rows["Ubuntu"] == "Ubuntu 24.04 LTS, built locally (unavailable here)"
    stderr = outcome.stderr.splitlines()
    assert stderr[0].startswith("Failed to fetch the distribution list from")
    reason = ubuntu_reason(ubuntu_missing)
    assert stderr[-1] == f"Ubuntu, Ubuntu-22.04, Ubuntu-24.04: cannot be installed here: {reason}."


def test_list_online_shows_unavailable_builtins_in_json(
    mocker: MockerFixture, ubuntu_missing: HostTools, file_server: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    document = json.loads(Cli(mocker)("--list", "--online", "--format", "json").stdout)
    by_name = {entry["name"]: entry for entry in document}
    assert by_name["Debian"] == {
        "name": "Debian",
        "friendly_name": "Debian GNU/Linux 12 (bookworm), built locally",
        "default": True,
        "source": "built-in",
        "available": True,
        "unavailable_reason": None,
    }
    assert by_name["Ubuntu-22.04"] == {
        "name": "Ubuntu-22.04",
        "friendly_name": "Ubuntu 22.04 LTS, built locally",
        "default": False,
        "source": "built-in",
        "available": False,
        "unavailable_reason": ubuntu_reason(ubuntu_missing),
    }
    # With a manifest, its entries come first and are available; the built-ins keep their state.
    url = file_server.add(
        "/list.json",
        manifest_document(
            {"Tiny": [version_entry("Tiny-1", "Tiny", "http://127.0.0.1:1/t.wsl", "00" * 32, default=True)]},
            default="Tiny",
        ),
    )
    monkeypatch.setenv(URL_ENV, url)
    outcome = Cli(mocker)("--list", "--online", "--format", "json")
    document = json.loads(outcome.stdout)
    assert [(e["name"], e["available"], e["default"]) for e in document][:2] == [
        ("Tiny-1", True, True),
        ("Debian", True, False),
    ]
    assert [e["name"] for e in document if not e["available"]] == ["Ubuntu", "Ubuntu-22.04", "Ubuntu-24.04"]
    assert outcome.stderr == ""


def test_install_of_an_unbuildable_builtin_says_what_to_install(
    mocker: MockerFixture, ubuntu_missing: HostTools
) -> None:
    cli = Cli(mocker)
    outcome = cli("--install", "Ubuntu-24.04", "--no-launch")
    assert outcome.exit_code == 255
    lines = outcome.stderr.splitlines()
    assert lines[0].startswith("Failed to fetch the distribution list from")
    assert lines[1] == f"Ubuntu-24.04 cannot be built on this host: {ubuntu_reason(ubuntu_missing)}."
    assert lines[2] == "Error code: Wsl/ERROR_FILE_NOT_FOUND"
    cli.session.register_distribution.assert_not_called()


def test_install_without_a_name_picks_the_hosts_family(
    tmp_path: Path, mocker: MockerFixture, ubuntu_missing: HostTools, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(host_distribution, "OS_RELEASE", os_release(tmp_path, "ubuntu"))
    cli = Cli(mocker)
    outcome = cli("--install", "--no-launch")
    assert outcome.exit_code == 255
    assert f"Ubuntu cannot be built on this host: {ubuntu_reason(ubuntu_missing)}." in outcome.stderr
    cli.session.register_distribution.assert_not_called()
