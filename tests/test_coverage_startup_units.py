"""Small pieces of `pywsl.coverage_startup` and the package's lazy names, without a VM."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import pywsl
from pywsl import coverage_startup


def test_the_package_lists_its_lazy_names() -> None:
    names = dir(pywsl)
    assert {"connect", "UserSession", "WslError", "__version__"} <= set(names)
    with pytest.raises(AttributeError):
        pywsl.no_such_name  # noqa: B018


def test_folders_and_files_that_cannot_be_reached(tmp_path: Path) -> None:
    assert coverage_startup.reachable_folder(str(tmp_path)) == str(tmp_path)
    assert coverage_startup.reachable_folder(str(tmp_path / "missing")) is None
    (tmp_path / "settings.toml").write_text("")
    assert coverage_startup.reachable_file(str(tmp_path / "settings.toml")) == str(tmp_path / "settings.toml")
    assert coverage_startup.reachable_file(str(tmp_path / "missing.toml")) is None
    assert coverage_startup.reachable_file(str(tmp_path)) is None  # a folder is not a settings file


def _fake_coverage(config_file: str, data_file: str) -> SimpleNamespace:
    config = SimpleNamespace(config_file=config_file, data_file=data_file)
    current = SimpleNamespace(config=config)
    return SimpleNamespace(Coverage=SimpleNamespace(current=lambda: current))


def test_the_vm_is_asked_to_measure_only_as_this_process_is(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in coverage_startup.REQUEST_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setitem(
        sys.modules, "coverage", _fake_coverage(str(tmp_path / "c.toml"), str(tmp_path / "d"))
    )
    assert coverage_startup.vm_request() == {}  # not asked
    monkeypatch.setenv(coverage_startup.REQUEST_VARIABLES[-1], str(tmp_path / "c.toml"))
    words = coverage_startup.vm_request()
    assert list(words.values())[:2] == [str(tmp_path / "c.toml"), str(tmp_path / "d")]
    spaced = tmp_path / "with space"
    monkeypatch.setitem(sys.modules, "coverage", _fake_coverage(str(spaced / "c.toml"), str(spaced / "d")))
    assert coverage_startup.vm_request() == {}  # a kernel command line word ends at a space
    monkeypatch.setitem(sys.modules, "coverage", _fake_coverage("", str(tmp_path / "d")))
    assert coverage_startup.vm_request() == {}  # settings that name no file
    nothing = SimpleNamespace(Coverage=SimpleNamespace(current=lambda: None))
    monkeypatch.setitem(sys.modules, "coverage", nothing)
    assert coverage_startup.vm_request() == {}
    assert os.environ.get(coverage_startup.REQUEST_VARIABLES[-1])
