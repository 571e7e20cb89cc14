"""The gitconfig-style format of .wslconfig, wsl.conf and wsl-distribution.conf, read as WSL reads it."""

from __future__ import annotations

import pytest

from pywsl.wire.config_format import (
    MAX_CONFIG_BYTES,
    ConfigProblem,
    ConfigValue,
    parse_bool,
    parse_config,
    parse_int,
    parse_memory_string,
    read_config,
)


def pairs(text: str, *, skip: bool = True) -> list[tuple[str, str, int] | str]:
    """Each item of the file: (name, value, line) for a pair, the warning text for a syntax error."""
    return [
        (item.name, item.value, item.line) if isinstance(item, ConfigValue) else item.message
        for item in read_config(text, "f", skip_invalid_lines=skip)
    ]


def test_sections_keys_and_first_duplicate_wins() -> None:
    text = "[wsl2]\nmemory = 4GB\nMemory=8GB # later\n[General]\ninstanceIdleTimeout=1000\n"
    sections, warnings = parse_config(text, "cfg")
    assert sections["wsl2"]["memory"].value == "4GB"
    assert sections["wsl2"]["memory"].line == 2
    assert sections["general"]["instanceidletimeout"].value == "1000"
    assert sections["general"]["instanceidletimeout"].name == "General.instanceIdleTimeout"
    assert warnings == [
        "Duplicated config key 'wsl2.Memory' in cfg:3 (Conflicting key: 'wsl2.memory' in cfg:2)"
    ]


def test_values_quotes_escapes_and_comments() -> None:
    text = (
        "[a]\n"
        "plain =   spaced value   \n"
        'quoted = " kept spaces " # comment\n'
        'inner = x"y z"w\n'
        'hash = "a # b" # c\n'
        "semi = a; b\n"
        'escapes = 1\\\\2\\"3\\t4\\n5\\b6\n'
        "empty =\n"
        "tab\t=\tv\t\n"
    )
    assert pairs(text) == [
        ("a.plain", "spaced value", 2),
        ("a.quoted", " kept spaces ", 3),
        ("a.inner", "xy zw", 4),
        ("a.hash", "a # b", 5),
        ("a.semi", "a; b", 6),
        ("a.escapes", '1\\2"3\t4\n5\b6', 7),
        ("a.empty", "", 8),
        ("a.tab", "v", 9),
    ]


def test_line_continuation_keeps_the_next_lines_spaces_and_counts_lines() -> None:
    text = "[boot]\ncommand = echo a \\\n    b\\\nc\nnext = 1\n"
    assert pairs(text) == [("boot.command", "echo a     bc", 4), ("boot.next", "1", 5)]
    # A continued line that ends the file, and a continuation inside quotes.
    assert pairs('[s]\nk = "x\\\ny"\n') == [("s.k", "xy", 3)]
    assert pairs("[s]\nk = x\\") == ["Invalid escaped character: '' in f:2"]


@pytest.mark.parametrize(
    ("line", "warning"),
    [
        ("; comment", "Invalid key name in f:2"),
        ("1key = v", "Invalid key name in f:2"),
        ("my_key = v", "Expected '=' in f:2"),
        ("key-name = v", "Expected '=' in f:2"),
        ("key v", "Expected '=' in f:2"),
        ("[ wsl2 ]", "Invalid section name in f:2"),
        ("[wsl-2]", "Expected ']' in f:2"),
        ("[wsl2] x", "Expected ' ' or '\\n' in f:2"),
        ('k = "open', 'Expected " in f:2'),
        ("k = a\\qb", "Invalid escaped character: 'q' in f:2"),
        ("k = a\\\x1bb", "Invalid escaped character: '\\x1b' in f:2"),
    ],
)
def test_syntax_errors(line: str, warning: str) -> None:
    text = f"[section]\n{line}\nafter = 1\n"
    items = pairs(text)
    assert items[0] == warning and len(items) == 2  # .wslconfig: the line is skipped
    assert items[1][1:] == ("1", 3)
    assert pairs(text, skip=False) == [warning]  # wsl.conf: reading stops there
    assert pairs(f"[s]\nbefore = 0\n{line}\n", skip=False)[0] == ("s.before", "0", 2)


def test_a_broken_header_leaves_its_partial_name_behind() -> None:
    # WSL keeps names in one buffer: "[ab c]" fails after "ab", and the next key is "ab" (truncated
    # to the old section's length, up to its first NUL): an unknown key outside any section.
    assert pairs("[wsl2]\n[ab c]\nmemory = 1\n") == ["Expected ']' in f:2", ("ab", "1", 3)]
    # "[boot] x" fails after the whole name: keys keep the previous section's length of it.
    assert pairs("[user]\n[boot] x\ncommand = 1\n") == [
        "Expected ' ' or '\\n' in f:2",
        ("boot.command", "1", 3),
    ]
    # A header that fails on its first character changes nothing.
    assert pairs("[wsl2]\n[9]\nmemory = 1\n") == ["Invalid section name in f:2", ("wsl2.memory", "1", 3)]


def test_comments_blank_lines_and_line_numbers() -> None:
    text = "# top\n\n  [s]  # header comment\n\t# indented\n  k = v\n\n\nz=1#c\nlast=2"
    assert pairs(text) == [("s.k", "v", 5), ("s.z", "1", 8), ("s.last", "2", 9)]


def test_crlf_line_numbers_match_wsl() -> None:
    # A pair or a header ended by \r\n counts two lines in WSL's reader; blank lines count one.
    text = "[s]\r\na = 1\r\n\r\nb = 2\r\n"
    assert pairs(text) == [("s.a", "1", 3), ("s.b", "2", 6)]
    assert pairs("[s]\r\nbad line\r\n", skip=False) == ["Expected '=' in f:3"]


def test_key_outside_section_is_an_unknown_key() -> None:
    sections, warnings = parse_config("a=b\n[s]\nc=d\n", "x")
    assert sections == {"s": {"c": ConfigValue("s", "c", "d", 3)}}
    assert warnings == ["Unknown key 'a' in x:1"]


def test_parse_config_stop_mode_and_limits() -> None:
    sections, warnings = parse_config("[s]\na=1\n!\nb=2\n", "x", skip_invalid_lines=False)
    assert list(sections["s"]) == ["a"] and warnings == ["Invalid key name in x:3"]
    items = read_config("#" * (MAX_CONFIG_BYTES + 1), "x", skip_invalid_lines=True)
    assert len(items) == 1 and isinstance(items[0], ConfigProblem) and "larger than" in items[0].message


def test_empty_and_binary_garbage_never_raise() -> None:
    assert parse_config("", "x") == ({}, [])
    sections, warnings = parse_config("\x00\xff[\n]]]\n=\n", "x")
    assert sections == {} and warnings == [
        "Invalid key name in x:1",
        "Invalid key name in x:2",
        "Invalid key name in x:3",
    ]
    # Letters beyond ASCII are not letters of a name; in values they are kept.
    assert pairs("[s]\nclé = 1\nk = é\n") == ["Expected '=' in f:2", ("s.k", "é", 3)]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("false", False),
        ("0", False),
        ("yes", None),
        ("", None),
        (" true", None),
        ("t", None),
    ],
)
def test_bool(text: str, value: bool | None) -> None:
    assert parse_bool(text) is value


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("22", 22),
        ("022", 0o22),
        ("0x1F", 31),
        ("-5", -5),
        ("0", 0),
        ("08", None),
        ("1e3", None),
        ("", None),
        (" 7", 7),
        ("7 ", None),
        ("0x", None),
        ("2147483647", 2**31 - 1),
        ("2147483648", None),
        ("-2147483648", -(2**31)),
        ("-2147483649", None),
    ],
)
def test_int_uses_strtol_base_zero(text: str, value: int | None) -> None:
    assert parse_int(text) == value


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("4GB", 4 << 30),
        ("512M", 512 << 20),
        ("1T", 1 << 40),
        ("100", 100),
        ("2KB", 2048),
        ("4gb", None),
        ("-1G", None),
        ("G", None),
    ],
)
def test_memory_string(text: str, value: int | None) -> None:
    assert parse_memory_string(text) == value
