"""WSL's distribution manifest: shape, architecture filtering, lookup rules, sources and fetching."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_install_support import (
    FileServer,
    arch_key,
    closed_port_url,
    file_server,
    manifest_document,
    version_entry,
)

from pywsl.api.errors import WslError
from pywsl.api.install.manifest import (
    APPEND_URL_ENV,
    DEFAULT_MANIFEST_URL,
    URL_ENV,
    AvailableDistributions,
    LegacyDistribution,
    ManifestSources,
    ModernVersion,
    host_architecture,
    load_available,
    lookup,
    online_names,
    parse_manifest,
    resolve_sources,
)

__all__ = ["file_server"]

SHA = "ab" * 32

REAL_SHAPE = {
    "ModernDistributions": {
        "Ubuntu": [
            {
                "Name": "Ubuntu",
                "Default": True,
                "FriendlyName": "Ubuntu",
                "Amd64Url": {"Url": "https://example.invalid/u-amd64.wsl", "Sha256": "0x" + SHA},
                "Arm64Url": {"Url": "https://example.invalid/u-arm64.wsl", "Sha256": SHA},
            },
            {
                "Name": "Ubuntu-24.04",
                "Default": False,
                "FriendlyName": "Ubuntu 24.04 LTS",
                "Amd64Url": {"Url": "https://example.invalid/2404-amd64.wsl", "Sha256": SHA},
            },
            {
                "Name": "Ubuntu-22.04",
                "FriendlyName": "Ubuntu 22.04 LTS",
                "Arm64Url": {"Url": "https://example.invalid/2204-arm64.wsl", "Sha256": SHA},
            },
        ],
        "NoDefaultFamily": [
            {
                "Name": "Nodef-1",
                "FriendlyName": "One",
                "Amd64Url": {"Url": "u1", "Sha256": SHA},
                "Arm64Url": {"Url": "u1", "Sha256": SHA},
            },
        ],
    },
    "Distributions": [
        {
            "Name": "Legacy",
            "FriendlyName": "Legacy Linux",
            "StoreAppId": "9XYZ",
            "Amd64": True,
            "Arm64": False,
            "Amd64PackageUrl": "https://example.invalid/legacy.appx",
        },
        {"Name": "ArmOnly", "FriendlyName": "Arm only", "StoreAppId": "9ABC", "Amd64": False, "Arm64": True},
    ],
}


def test_host_architecture_names() -> None:
    assert host_architecture("x86_64") == "Amd64"
    assert host_architecture("aarch64") == "Arm64"
    assert host_architecture("riscv64") is None


def test_amd64_keeps_only_entries_with_an_amd64_url() -> None:
    parsed = parse_manifest(json.dumps(REAL_SHAPE), arch="Amd64")
    assert [v.name for v in parsed.modern["Ubuntu"]] == ["Ubuntu", "Ubuntu-24.04"]
    assert parsed.modern["Ubuntu"][0].archive.url.endswith("u-amd64.wsl")
    assert [e.name for e in parsed.legacy] == ["Legacy"]
    assert parsed.legacy[0].package_url == "https://example.invalid/legacy.appx"
    # No Default: the first legacy entry (after filtering) stands in, as in WSL.
    assert parsed.default == "Legacy"


def test_arm64_keeps_only_entries_with_an_arm64_url() -> None:
    parsed = parse_manifest(json.dumps(REAL_SHAPE), arch="Arm64")
    assert [v.name for v in parsed.modern["Ubuntu"]] == ["Ubuntu", "Ubuntu-22.04"]
    assert parsed.modern["Ubuntu"][0].archive.url.endswith("u-arm64.wsl")
    assert [e.name for e in parsed.legacy] == ["ArmOnly"]


def test_architecture_filtering_happens_before_lookup() -> None:
    available = AvailableDistributions(parse_manifest(json.dumps(REAL_SHAPE), arch="Amd64"))
    with pytest.raises(WslError) as caught:
        lookup(available, "Ubuntu-22.04")  # exists, but only for Arm64
    assert caught.value.code == "WSL_E_DISTRO_NOT_FOUND"


def test_family_name_picks_the_default_version_case_insensitively() -> None:
    available = AvailableDistributions(parse_manifest(json.dumps(REAL_SHAPE), arch="Amd64"))
    found = lookup(available, "uBuNtU")
    assert isinstance(found, ModernVersion)
    assert (found.name, found.family, found.default) == ("Ubuntu", "Ubuntu", True)


def test_version_name_picks_that_version() -> None:
    available = AvailableDistributions(parse_manifest(json.dumps(REAL_SHAPE), arch="Amd64"))
    found = lookup(available, "ubuntu-24.04")
    assert isinstance(found, ModernVersion)
    assert found.friendly_name == "Ubuntu 24.04 LTS"


def test_family_without_a_default_version_matches_nothing() -> None:
    available = AvailableDistributions(parse_manifest(json.dumps(REAL_SHAPE), arch="Amd64"))
    with pytest.raises(WslError) as caught:
        lookup(available, "NoDefaultFamily")
    assert caught.value.code == "WSL_E_DISTRO_NOT_FOUND"
    assert "Invalid distribution name: 'NoDefaultFamily'" in caught.value.message
    assert isinstance(lookup(available, "nodef-1"), ModernVersion)


def test_legacy_entries_are_found_after_modern_ones() -> None:
    available = AvailableDistributions(parse_manifest(json.dumps(REAL_SHAPE), arch="Amd64"))
    found = lookup(available, "legacy")
    assert isinstance(found, LegacyDistribution)
    assert found.store_app_id == "9XYZ"


def test_append_manifest_is_consulted_first_and_its_default_wins() -> None:
    main = parse_manifest(
        manifest_document(
            {"Ubuntu": [version_entry("Ubuntu", "Main Ubuntu", "main-url", SHA, default=True)]},
            default="Ubuntu",
        ),
        arch=host_architecture(),
    )
    extra = parse_manifest(
        manifest_document(
            {
                "Ubuntu": [version_entry("Ubuntu", "Override Ubuntu", "override-url", SHA, default=True)],
                "Alpine": [version_entry("Alpine", "Alpine", "alpine-url", SHA, default=True)],
            },
            default="Alpine",
        ),
        arch=host_architecture(),
    )
    available = AvailableDistributions(main, extra)
    warnings: list[str] = []
    found = lookup(available, "Ubuntu", on_warning=warnings.append)
    assert isinstance(found, ModernVersion) and found.archive.url == "override-url"
    assert warnings == ['The distribution "Ubuntu" is provided by an override manifest.']
    assert available.default == "Alpine"
    assert AvailableDistributions(main, parse_manifest(b"{}")).default == "Ubuntu"


def test_online_names_lists_four_versions_per_family_and_the_override_first() -> None:
    versions = [version_entry(f"Fam-{i}", f"Family {i}", f"u{i}", SHA, default=i == 0) for i in range(6)]
    old = {"Name": "Old", "FriendlyName": "Old one", "StoreAppId": "x", "Amd64": True, "Arm64": True}
    families = {"Fam": versions, "Other": [version_entry("Shared", "From main", "m", SHA)]}
    main = parse_manifest(manifest_document(families, legacy=[old]), arch=host_architecture())
    extra = parse_manifest(
        manifest_document({"X": [version_entry("Shared", "From override", "o", SHA)]}),
        arch=host_architecture(),
    )
    names = online_names(AvailableDistributions(main, extra))
    assert [(n, f) for n, f, _ in names] == [
        ("Shared", "From override"),
        ("Fam-0", "Family 0"),
        ("Fam-1", "Family 1"),
        ("Fam-2", "Family 2"),
        ("Fam-3", "Family 3"),
        ("Old", "Old one"),
    ]


@pytest.mark.parametrize(
    "document",
    [
        b"{not json",
        b"[]",
        b'{"ModernDistributions": []}',
        b'{"ModernDistributions": {"A": [{"Name": 5}]}}',
        b'{"ModernDistributions": {"A": [{"Name": "a", "Default": "yes"}]}}',
        b'{"ModernDistributions": {"A": [{"Name": "a", "Amd64Url": "http://x"}]}}',
        b'{"Distributions": [{"Name": "a", "Amd64": 1}]}',
        b'{"Default": ["x"]}',
    ],
)
def test_malformed_documents_are_invalid_json(document: bytes) -> None:
    with pytest.raises(WslError) as caught:
        parse_manifest(document, "http://host/list.json")
    assert caught.value.code == "WSL_E_INVALID_JSON"
    assert caught.value.message.startswith(
        "Failed to fetch the distribution list from 'http://host/list.json'."
    )


def test_missing_fields_take_their_defaults() -> None:
    parsed = parse_manifest(json.dumps({"ModernDistributions": {"F": [{arch_key(): {}}]}}))
    (version,) = parsed.modern["F"]
    assert (version.name, version.friendly_name, version.default, version.archive.url) == ("", "", False, "")


def test_sources_environment_wins_over_configuration() -> None:
    assert resolve_sources(environ={}) == ManifestSources(DEFAULT_MANIFEST_URL, None)
    assert resolve_sources("a", "b", environ={}) == ManifestSources("a", "b")
    environ = {URL_ENV: "env-url", APPEND_URL_ENV: "env-append"}
    assert resolve_sources("a", "b", environ=environ) == ManifestSources("env-url", "env-append")


def test_load_over_http_with_append(file_server: FileServer) -> None:
    main = file_server.add(
        "/main.json",
        manifest_document(
            {"Ubuntu": [version_entry("Ubuntu", "Main", "m", SHA, default=True)]}, default="Ubuntu"
        ),
    )
    extra = file_server.add(
        "/extra.json",
        manifest_document({"Tiny": [version_entry("Tiny", "Tiny", "t", SHA, default=True)]}, default="Tiny"),
    )
    available = load_available(ManifestSources(main, extra))
    assert available.default == "Tiny"
    assert isinstance(lookup(available, "Ubuntu"), ModernVersion)
    assert available.override is not None and available.override.url == extra


def test_load_from_file_url_and_plain_path(tmp_path: Path) -> None:
    path = tmp_path / "list.json"
    path.write_bytes(manifest_document({"A": [version_entry("A", "A", "u", SHA, default=True)]}))
    for url in (f"file://{path}", str(path)):
        available = load_available(ManifestSources(url))
        assert available.manifest.modern["A"][0].name == "A"


def test_unreachable_manifest_is_a_clear_error() -> None:
    url = closed_port_url()
    with pytest.raises(WslError) as caught:
        load_available(ManifestSources(url), timeout=3)
    assert caught.value.code == "WININET_E_CANNOT_CONNECT"
    assert caught.value.message.startswith(f"Failed to fetch the distribution list from '{url}'.")


def test_missing_manifest_reports_the_http_status(file_server: FileServer, tmp_path: Path) -> None:
    with pytest.raises(WslError) as caught:
        load_available(ManifestSources(file_server.url("/nothing.json")))
    assert caught.value.code == "HTTP_E_STATUS_NOT_FOUND"
    assert caught.value.hresult == 0x80190194
    with pytest.raises(WslError) as missing:
        load_available(ManifestSources(str(tmp_path / "absent.json")))
    assert missing.value.code == "ERROR_FILE_NOT_FOUND"


def test_bad_json_over_http(file_server: FileServer) -> None:
    url = file_server.add("/bad.json", b'{"ModernDistributions": ')
    with pytest.raises(WslError) as caught:
        load_available(ManifestSources(url))
    assert caught.value.code == "WSL_E_INVALID_JSON"


def test_list_online_marks_the_default_and_adds_built_ins(
    file_server: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pywsl.api.install import builtin_catalog
    from pywsl.api.install.installer import list_online
    from pywsl.api.session.wslconfig import WslConfig

    monkeypatch.delenv(URL_ENV, raising=False)
    monkeypatch.delenv(APPEND_URL_ENV, raising=False)
    url = file_server.add(
        "/list.json",
        manifest_document(
            {
                "Tiny": [
                    version_entry("Tiny-1", "One", "u1", SHA),
                    version_entry("Tiny-2", "Two", "u2", SHA, default=True),
                ],
                "Debian": [version_entry("Debian", "Debian from the manifest", "d", SHA, default=True)],
            },
            default="tiny",
        ),
    )
    built = builtin_catalog.BuiltinDistribution
    entries = [
        built("Debian", "Built", "debian", "bookworm", Path("/k"), True),
        built("Debian-12", "Built Debian", "debian", "bookworm", Path("/k"), False),
    ]
    monkeypatch.setattr(builtin_catalog, "builtin_catalog", lambda: entries)
    listed = list_online(WslConfig(distribution_list_url=url))
    assert [(e.name, e.is_default, e.source) for e in listed] == [
        ("Tiny-1", False, "manifest"),
        ("Tiny-2", True, "manifest"),
        ("Debian", False, "manifest"),
        ("Debian-12", False, "built-in"),
    ]
    assert listed[1].url == "u2" and listed[1].sha256 == SHA and listed[3].url is None

    warnings: list[str] = []
    offline = list_online(WslConfig(distribution_list_url=closed_port_url()), on_warning=warnings.append)
    assert [(e.name, e.is_default) for e in offline] == [("Debian", True), ("Debian-12", False)]
    assert warnings and warnings[0].startswith("Failed to fetch the distribution list from")
    monkeypatch.setattr(builtin_catalog, "builtin_catalog", list)
    with pytest.raises(WslError) as caught:
        list_online(WslConfig(distribution_list_url=closed_port_url()))
    assert caught.value.code == "WININET_E_CANNOT_CONNECT"
