"""WSL's distribution manifest (`DistributionInfo.json`): parsing, architecture filtering and lookup.

The shape is WSL's: `Default`, `ModernDistributions` (families, each a list of versions carrying
`Amd64Url`/`Arm64Url` = `{Url, Sha256}`) and the legacy `Distributions` (Store apps). As in WSL's
`ReadFromManifest`, a missing field takes its default, a field of the wrong type makes the whole
document invalid (`WSL_E_INVALID_JSON`), entries without a URL (modern) or flag (legacy) for this
machine's architecture are dropped, and a missing `Default` falls back to the first legacy entry.

The default manifest is WSL's own. `distributionListUrl` replaces it (WSL's `DistributionListUrl`
machine value) and `distributionListUrlAppend` adds a second manifest that is consulted first and
whose `Default` wins. pywsl reads both from the `[general]` section of its `.wslconfig` and from the
environment (`PYWSL_DISTRIBUTION_LIST_URL`, `PYWSL_DISTRIBUTION_LIST_URL_APPEND`), which wins.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pywsl.api.errors import WslError
from pywsl.api.install.download import DEFAULT_TIMEOUT, read_url

__all__ = [
    "APPEND_URL_ENV",
    "DEFAULT_MANIFEST_URL",
    "URL_ENV",
    "Archive",
    "AvailableDistributions",
    "DistributionList",
    "LegacyDistribution",
    "ManifestSources",
    "ModernVersion",
    "host_architecture",
    "load_available",
    "lookup",
    "online_names",
    "parse_manifest",
    "resolve_sources",
]

DEFAULT_MANIFEST_URL = (
    "https://raw.githubusercontent.com/microsoft/WSL/master/distributions/DistributionInfo.json"
)
URL_ENV = "PYWSL_DISTRIBUTION_LIST_URL"
APPEND_URL_ENV = "PYWSL_DISTRIBUTION_LIST_URL_APPEND"
ONLINE_VERSIONS_PER_FAMILY = 4  # WSL's `i > 3` check: four, although its comment says three


@dataclass(frozen=True)
class Archive:
    """Where this machine's image of a version lives, and its SHA-256 (hex, maybe `0x`-prefixed)."""

    url: str
    sha256: str


@dataclass(frozen=True)
class ModernVersion:
    """One version of a `ModernDistributions` family, already filtered for this architecture."""

    name: str
    friendly_name: str
    family: str
    default: bool
    archive: Archive


@dataclass(frozen=True)
class LegacyDistribution:
    """A `Distributions` entry: a Store app (appx), which pywsl cannot install."""

    name: str
    friendly_name: str
    store_app_id: str
    package_url: str | None
    package_family_name: str | None


@dataclass
class DistributionList:
    """One parsed manifest."""

    url: str
    default: str | None = None
    modern: dict[str, list[ModernVersion]] = field(default_factory=dict)
    legacy: list[LegacyDistribution] = field(default_factory=list)


@dataclass
class AvailableDistributions:
    """WSL's `AvailableDistributions`: the manifest and the optional append ("override") manifest."""

    manifest: DistributionList
    override: DistributionList | None = None

    @property
    def default(self) -> str | None:
        """The name `--install` without a distribution picks: the override's Default wins."""
        if self.override is not None and self.override.default is not None:
            return self.override.default
        return self.manifest.default


@dataclass(frozen=True)
class ManifestSources:
    """The manifest URLs in effect."""

    url: str = DEFAULT_MANIFEST_URL
    append_url: str | None = None


def host_architecture(machine: str | None = None) -> str | None:
    """ "Amd64", "Arm64" or None (no WSL images exist for other machines)."""
    value = (machine if machine is not None else platform.machine()).lower()
    if value in ("x86_64", "amd64", "x64"):
        return "Amd64"
    if value in ("aarch64", "arm64", "armv8l"):
        return "Arm64"
    return None


class _Invalid(ValueError):
    pass


def _optional_string(entry: Mapping[str, Any], key: str, where: str) -> str | None:
    value = entry.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Invalid(f"{where}.{key}: expected a string, got {type(value).__name__}")
    return value


def _string(entry: Mapping[str, Any], key: str, where: str, default: str = "") -> str:
    value = _optional_string(entry, key, where)
    return default if value is None else value


def _bool(entry: Mapping[str, Any], key: str, where: str) -> bool | None:
    value = entry.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise _Invalid(f"{where}.{key}: expected true or false, got {type(value).__name__}")
    return value


def _object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise _Invalid(f"{where}: expected an object, got {type(value).__name__}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise _Invalid(f"{where}: expected an array, got {type(value).__name__}")
    return value


def _archive(entry: Mapping[str, Any], key: str, where: str) -> Archive | None:
    value = entry.get(key)
    if value is None:
        return None
    archive = _object(value, f"{where}.{key}")
    return Archive(_string(archive, "Url", f"{where}.{key}"), _string(archive, "Sha256", f"{where}.{key}"))


def _parse(document: Any, url: str, arch: str | None) -> DistributionList:
    root = _object(document, "manifest")
    result = DistributionList(url=url, default=_optional_string(root, "Default", "manifest"))
    families = root.get("ModernDistributions")
    if families is not None:
        for family, versions in _object(families, "ModernDistributions").items():
            kept: list[ModernVersion] = []
            for index, raw in enumerate(_list(versions, f"ModernDistributions.{family}")):
                where = f"ModernDistributions.{family}[{index}]"
                version = _object(raw, where)
                archives = {name: _archive(version, f"{name}Url", where) for name in ("Amd64", "Arm64")}
                name = _string(version, "Name", where)
                friendly = _string(version, "FriendlyName", where)
                default = bool(_bool(version, "Default", where))
                archive = archives.get(arch) if arch is not None else None
                if archive is not None:
                    kept.append(ModernVersion(name, friendly, family, default, archive))
            result.modern[family] = kept
    legacy = root.get("Distributions")
    if legacy is not None:
        for index, raw in enumerate(_list(legacy, "Distributions")):
            where = f"Distributions[{index}]"
            entry = _object(raw, where)
            flags = {name: bool(_bool(entry, name, where)) for name in ("Amd64", "Arm64")}
            package_urls = {
                name: _optional_string(entry, f"{name}PackageUrl", where) for name in ("Amd64", "Arm64")
            }
            item = LegacyDistribution(
                name=_string(entry, "Name", where),
                friendly_name=_string(entry, "FriendlyName", where),
                store_app_id=_string(entry, "StoreAppId", where),
                package_url=package_urls.get(arch) if arch is not None else None,
                package_family_name=_optional_string(entry, "PackageFamilyName", where),
            )
            if arch is not None and flags[arch]:
                result.legacy.append(item)
    if result.default is None and result.legacy:
        result.default = result.legacy[0].name
    return result


def parse_manifest(
    text: str | bytes, url: str = "<manifest>", *, arch: str | None = None
) -> DistributionList:
    """Parse a manifest document, keeping the entries for `arch` (default: this machine)."""
    architecture = arch if arch is not None else host_architecture()
    try:
        document = json.loads(text)
        return _parse(document, url, architecture)
    except (ValueError, RecursionError) as error:  # JSONDecodeError and _Invalid are ValueErrors
        raise WslError(
            "WSL_E_INVALID_JSON",
            f"Failed to fetch the distribution list from '{url}'. "
            f"Invalid JSON document. Parse error: {error}",
        ) from None


def _fetch(url: str, timeout: float, arch: str | None) -> DistributionList:
    try:
        data = read_url(url, timeout=timeout)
    except WslError as error:
        raise WslError(
            error.code,
            f"Failed to fetch the distribution list from '{url}'. {error.message}",
            hresult=error.hresult,
        ) from None
    return parse_manifest(data, url, arch=arch)


def resolve_sources(
    url: str | None = None, append_url: str | None = None, environ: Mapping[str, str] | None = None
) -> ManifestSources:
    """The manifest URLs: the environment wins over the values given (from `.wslconfig`)."""
    env = os.environ if environ is None else environ
    chosen_url = env.get(URL_ENV) or url or DEFAULT_MANIFEST_URL
    chosen_append = env.get(APPEND_URL_ENV) or append_url or None
    return ManifestSources(chosen_url, chosen_append)


def load_available(
    sources: ManifestSources, *, timeout: float = DEFAULT_TIMEOUT, arch: str | None = None
) -> AvailableDistributions:
    """Fetch and parse the manifest and the append manifest (WSL's `GetAvailable`)."""
    manifest = _fetch(sources.url, timeout, arch)
    override = _fetch(sources.append_url, timeout, arch) if sources.append_url else None
    return AvailableDistributions(manifest, override)


def _lookup_in(
    manifest: DistributionList, name: str, legacy_only: bool
) -> ModernVersion | LegacyDistribution | None:
    wanted = name.casefold()
    if not legacy_only:
        for family, versions in manifest.modern.items():
            use_default = family.casefold() == wanted
            for version in versions:
                if use_default and version.default:
                    return version
                if version.name.casefold() == wanted:
                    return version
    for entry in manifest.legacy:
        if entry.name.casefold() == wanted:
            return entry
    return None


def lookup(
    available: AvailableDistributions,
    name: str,
    *,
    legacy: bool = False,
    on_warning: Callable[[str], None] | None = None,
) -> ModernVersion | LegacyDistribution:
    """WSL's `LookupByName`: the append manifest first (with its warning), then the manifest."""
    if available.override is not None:
        found = _lookup_in(available.override, name, legacy)
        if found is not None:
            if on_warning is not None:
                on_warning(f'The distribution "{name}" is provided by an override manifest.')
            return found
    found = _lookup_in(available.manifest, name, legacy)
    if found is None:
        raise WslError(
            "WSL_E_DISTRO_NOT_FOUND",
            f"Invalid distribution name: '{name}'.\n"
            "To get a list of valid distributions, use 'pywsl --list --online'.",
        )
    return found


def online_names(
    available: AvailableDistributions,
) -> list[tuple[str, str, ModernVersion | LegacyDistribution]]:
    """`--list --online`: (name, friendly name, entry), append manifest first, first name wins,
    at most four versions per family."""
    seen: set[str] = set()
    result: list[tuple[str, str, ModernVersion | LegacyDistribution]] = []

    def add(name: str, friendly: str, entry: ModernVersion | LegacyDistribution) -> None:
        if name not in seen:  # WSL compares these names exactly
            seen.add(name)
            result.append((name, friendly, entry))

    for manifest in (available.override, available.manifest):
        if manifest is None:
            continue
        for versions in manifest.modern.values():
            for version in versions[:ONLINE_VERSIONS_PER_FAMILY]:
                add(version.name, version.friendly_name, version)
        for legacy in manifest.legacy:
            add(legacy.name, legacy.friendly_name, legacy)
    return result
