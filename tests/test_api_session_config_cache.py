"""The settings a running VM's launches read (`UserSession._current_config`): .wslconfig is parsed
again only when the file changed, and a launch into a running VM does not read it at all."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pywsl.api.session import user_vm
from pywsl.api.session.user_session import UserSession


@pytest.fixture
def session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[UserSession]:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("PYWSL_RUNTIME_ROOT", str(tmp_path / "run"))
    monkeypatch.delenv("PYWSL_CONFIG", raising=False)
    (tmp_path / "config" / "pywsl").mkdir(parents=True)
    with UserSession() as opened:
        yield opened


def _write(session: UserSession, text: str) -> None:
    session.paths.config_file.write_text(text)


def _count_parses(session: UserSession, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    parses: list[int] = []
    original = UserSession.config

    def counted(self: UserSession) -> object:
        parses.append(1)
        return original(self)

    monkeypatch.setattr(UserSession, "config", counted)
    return parses


def test_an_unchanged_file_is_parsed_once(session: UserSession, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(session, "[wsl2]\nguiApplications=false\n")
    parses = _count_parses(session, monkeypatch)
    first = session._current_config()
    assert session._current_config() is first
    assert not first.gui_applications
    assert len(parses) == 1


def test_a_changed_file_is_parsed_again(session: UserSession, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(session, "[wsl2]\nguiApplications=false\n")
    parses = _count_parses(session, monkeypatch)
    assert not session._current_config().gui_applications
    install = session.paths.home / "distributions"
    _write(session, f"[general]\ndistributionInstallPath={install}\n")
    changed = session._current_config()
    assert changed.gui_applications and changed.distribution_install_path == install
    assert session._trusted_folders()[0] == install
    session.paths.config_file.unlink()
    assert session._current_config().distribution_install_path is None
    assert len(parses) == 3


def test_a_launch_without_a_display_does_not_read_the_file(
    session: UserSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(session, "[wsl2]\nguiApplications=true\n")
    parses = _count_parses(session, monkeypatch)
    assert session._gui_environment({"PATH": "/usr/bin", "TERM": "xterm"}) is None
    assert parses == []
    assert session._gui_environment({"DISPLAY": ":99"}) == ()  # no such socket: nothing shared
    assert len(parses) == 1


def test_gui_applications_off_shares_no_display(session: UserSession) -> None:
    _write(session, "[wsl2]\nguiApplications=false\n")
    assert session._gui_environment({"DISPLAY": ":0"}) is None


def test_a_running_vm_is_used_without_reading_the_file(
    session: UserSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    if os.geteuid() != 0:
        pytest.skip("starting or reaching the VM takes root")
    _write(session, "[wsl2]\nkernel=/nonexistent/kernel\n")  # would stop a boot
    parses = _count_parses(session, monkeypatch)
    running = object()
    monkeypatch.setattr(user_vm, "attach", lambda runtime_dir: running)
    assert session._boot() is running
    assert parses == []
