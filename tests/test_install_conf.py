"""`/etc/wsl-distribution.conf`: parsing, and reading it from a root filesystem without following links."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pywsl.api.install.distribution_conf import parse_distribution_conf, read_distribution_conf
from pywsl.wire.config_format import MAX_CONFIG_BYTES

FULL = """
# A distribution's own settings
[oobe]
command = /usr/lib/wsl/oobe.sh --user "x"
defaultUid = 1000
defaultName = Tiny-1.0

[shortcut]
enabled = true
icon = /usr/lib/wsl/tiny.ico

[windowsterminal]
profileTemplate = /usr/lib/wsl/terminal-profile.json
"""


def test_oobe_keys_are_read_and_windows_sections_ignored() -> None:
    conf = parse_distribution_conf(FULL)
    assert conf.oobe_command == "/usr/lib/wsl/oobe.sh --user x"  # WSL's reader drops every quote
    assert conf.default_uid == 1000
    assert conf.default_name == "Tiny-1.0"
    assert conf.warnings == []


def test_keys_are_case_insensitive_and_unknown_keys_silent() -> None:
    conf = parse_distribution_conf("[OOBE]\nDEFAULTUID = 0x3e8\nsomethingNew = 1\n")
    assert conf.default_uid == 1000
    assert conf.oobe_command is None and conf.default_name is None
    assert conf.warnings == []


@pytest.mark.parametrize("value", ["abc", "-5", "4294967295", "1.5", ""])
def test_bad_default_uid_is_a_warning(value: str) -> None:
    conf = parse_distribution_conf(f"[oobe]\ndefaultUid = {value}\n")
    assert conf.default_uid is None
    assert len(conf.warnings) == 1 and "oobe.defaultUid" in conf.warnings[0]


def test_empty_values_mean_absent() -> None:
    conf = parse_distribution_conf('[oobe]\ncommand =\ndefaultName = ""\n')
    assert conf.oobe_command is None and conf.default_name is None


def _rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    return root


def test_read_from_rootfs(tmp_path: Path) -> None:
    root = _rootfs(tmp_path)
    assert read_distribution_conf(root) is None
    (root / "etc" / "wsl-distribution.conf").write_text(FULL)
    conf = read_distribution_conf(root)
    assert conf is not None and conf.default_uid == 1000


def test_missing_etc_means_no_file(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    assert read_distribution_conf(root) is None


def test_symlinked_file_is_not_followed(tmp_path: Path) -> None:
    root = _rootfs(tmp_path)
    outside = tmp_path / "host-secret.conf"
    outside.write_text("[oobe]\ncommand = evil\n")
    os.symlink(outside, root / "etc" / "wsl-distribution.conf")
    conf = read_distribution_conf(root)
    assert conf is not None and conf.oobe_command is None
    assert "symbolic link" in conf.warnings[0]


def test_symlinked_etc_is_not_followed(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    root.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "wsl-distribution.conf").write_text("[oobe]\ncommand = evil\n")
    os.symlink(elsewhere, root / "etc")
    conf = read_distribution_conf(root)
    assert conf is not None and conf.oobe_command is None and conf.warnings


def test_fifo_and_directory_are_refused_without_blocking(tmp_path: Path) -> None:
    root = _rootfs(tmp_path)
    os.mkfifo(root / "etc" / "wsl-distribution.conf")
    conf = read_distribution_conf(root)
    assert conf is not None and "not a regular file" in conf.warnings[0]
    os.unlink(root / "etc" / "wsl-distribution.conf")
    (root / "etc" / "wsl-distribution.conf").mkdir()
    conf = read_distribution_conf(root)
    assert conf is not None and conf.oobe_command is None and conf.warnings


def test_oversized_file_is_refused(tmp_path: Path) -> None:
    root = _rootfs(tmp_path)
    (root / "etc" / "wsl-distribution.conf").write_bytes(b"#" * (MAX_CONFIG_BYTES + 1))
    conf = read_distribution_conf(root)
    assert conf is not None and "larger than" in conf.warnings[0]


def test_semicolons_are_plain_characters_as_in_wsl() -> None:
    assert parse_distribution_conf("[oobe]\ncommand = a; b\n").oobe_command == "a; b"
    assert parse_distribution_conf('[oobe]\ncommand = "a; b # c"\n').oobe_command == "a; b # c"
