"""The version check of the COM client, and that every COM module imports off Windows."""

from __future__ import annotations

import importlib

import pytest

from pywsl.api.com.version import ALLOW_VARIABLE, check_version
from pywsl.api.errors import WslError


@pytest.mark.parametrize("version", ["2.5.8.0", "2.6.1.0", "2.9.4.0", "2.9.12.0"])
def test_versions_whose_idl_matches_are_accepted(version: str) -> None:
    assert check_version(version, {})[:2] in ((2, 5), (2, 6), (2, 9))


@pytest.mark.parametrize("version", ["2.4.13.0", "2.5.7.0", "2.10.0.0", "3.0.0.0"])
def test_other_versions_are_refused_with_the_version_and_the_override(version: str) -> None:
    with pytest.raises(WslError) as caught:
        check_version(version, {})
    assert version in caught.value.message and ALLOW_VARIABLE in caught.value.message
    assert check_version(version, {ALLOW_VARIABLE: version}) == tuple(map(int, version.split(".")))
    assert check_version(version, {ALLOW_VARIABLE: "any"})
    with pytest.raises(WslError):
        check_version(version, {ALLOW_VARIABLE: "2.9.9"})


def test_an_unreadable_version_is_an_error() -> None:
    with pytest.raises(WslError, match="Cannot read"):
        check_version("garbage", {})


@pytest.mark.parametrize(
    "module", ["layout", "interface", "hresult", "vtable", "relay", "session", "win32", "version", "host"]
)
def test_every_module_imports_here(module: str) -> None:
    importlib.import_module(f"pywsl.api.com.{module}")


def test_the_windows_entry_points_refuse_other_systems() -> None:
    from pywsl.api.com import win32

    with pytest.raises(WslError, match="needs Windows"):
        win32.open_session_interface({})
