"""The gitconfig-style format of .wslconfig, wsl.conf and wsl-distribution.conf."""

from __future__ import annotations

import pytest

from pywsl.wire.config_format import parse_bool, parse_config, parse_int, parse_memory_string


def test_sections_keys_and_first_duplicate_wins() -> None:
    text = "[wsl2]\nmemory = 4GB\nMemory=8GB # later\n[General]\ninstanceIdleTimeout=1000\n"
    sections, warnings = parse_config(text, "cfg")
    assert sections["wsl2"]["memory"].value == "4GB"
    assert sections["wsl2"]["memory"].line == 2
    assert sections["general"]["instanceidletimeout"].value == "1000"
    assert len(warnings) == 1 and "duplicate key wsl2.Memory" in warnings[0] and "cfg:3" in warnings[0]


def test_comments_quotes_and_invalid_lines() -> None:
    text = '; comment\n# another\n[boot]\ncommand = "echo a # not a comment"\nnot a key line\nk=v ; c\n'
    sections, warnings = parse_config(text, "wsl.conf")
    assert sections["boot"]["command"].value == "echo a # not a comment"
    assert sections["boot"]["k"].value == "v"
    assert warnings == ["wsl.conf:5: invalid line 'not a key line', skipped"]


def test_key_outside_section_is_a_warning() -> None:
    sections, warnings = parse_config("a=b\n", "x")
    assert sections == {}
    assert "outside of a section" in warnings[0]


def test_empty_and_binary_garbage_never_raise() -> None:
    assert parse_config("", "x") == ({}, [])
    sections, warnings = parse_config("\x00\xff[\n]]]\n=\n", "x")
    assert sections == {} and len(warnings) == 3


@pytest.mark.parametrize(
    ("text", "value"),
    [("true", True), ("TRUE", True), ("1", True), ("false", False), ("0", False), ("yes", None), ("", None)],
)
def test_bool(text: str, value: bool | None) -> None:
    assert parse_bool(text) is value


@pytest.mark.parametrize(
    ("text", "value"),
    [("22", 22), ("022", 0o22), ("0x1F", 31), ("-5", -5), ("0", 0), ("08", None), ("1e3", None), ("", None)],
)
def test_int_uses_strtol_base_zero(text: str, value: int | None) -> None:
    assert parse_int(text) == value


@pytest.mark.parametrize(
    ("text", "value"),
    [("4GB", 4 << 30), ("512M", 512 << 20), ("1T", 1 << 40), ("100", 100), ("2KB", 2048), ("4gb", None),
     ("-1G", None), ("G", None)],
)
def test_memory_string(text: str, value: int | None) -> None:
    assert parse_memory_string(text) == value
