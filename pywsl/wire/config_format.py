"""The gitconfig-style file format shared by `.wslconfig`, `/etc/wsl.conf` and `wsl-distribution.conf`.

WSL parses all three with one reader (`src/shared/configfile`): `[section]` headers, `key = value`
lines, `#`/`;` comments, optional double quotes around a value, key names compared
case-insensitively, and a duplicate key keeps its *first* value (with a warning). Lines that are
not understood are skipped with a warning, never fatal. Value helpers follow the same rules:
booleans `true`/`false`/`1`/`0`, integers with C `strtol` base 0 (`0x1f`, `022` octal), memory
strings with upper-case binary suffixes.

The format lives beside the wire protocol because the host (`api`) and the guest (`guest`) both
read it and neither may import the other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_CONFIG_BYTES = 1024 * 1024

_SECTION = re.compile(r"^\[\s*([A-Za-z0-9._-]+)\s*\]$")
_KEY = re.compile(r"^([A-Za-z0-9._-]+)\s*=\s*(.*)$")
_MEMORY = re.compile(r"^(\d+)(B|K|KB|M|MB|G|GB|T|TB)?$")
_MEMORY_UNITS = {None: 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "M": 1 << 20, "MB": 1 << 20,
                 "G": 1 << 30, "GB": 1 << 30, "T": 1 << 40, "TB": 1 << 40}


@dataclass(frozen=True)
class ConfigValue:
    """One `key = value` line: names as written, the value unquoted, and where it stood."""

    section: str
    key: str
    value: str
    line: int


Sections = dict[str, dict[str, ConfigValue]]


def _strip_comment(text: str) -> str:
    """Drop a `#` or `;` comment that is not inside double quotes."""
    quoted = False
    for index, char in enumerate(text):
        if char == '"':
            quoted = not quoted
        elif char in "#;" and not quoted:
            return text[:index]
    return text


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return value


def parse_config(text: str, source: str) -> tuple[Sections, list[str]]:
    """Parse a config file; returns `{section: {key: ConfigValue}}` keyed in lower case, and warnings.

    Warnings name the file and line, as WSL's do. The first occurrence of a key wins.
    """
    sections: Sections = {}
    warnings: list[str] = []
    if len(text) > MAX_CONFIG_BYTES:
        return sections, [f"{source}: file larger than {MAX_CONFIG_BYTES} bytes, ignored"]
    section: str | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = _strip_comment(raw).strip()
        if not line:
            continue
        header = _SECTION.match(line)
        if header:
            section = header.group(1)
            continue
        pair = _KEY.match(line)
        if pair is None:
            warnings.append(f"{source}:{number}: invalid line {raw.strip()!r}, skipped")
            continue
        if section is None:
            warnings.append(f"{source}:{number}: key {pair.group(1)!r} outside of a section, skipped")
            continue
        key = pair.group(1)
        entries = sections.setdefault(section.lower(), {})
        if key.lower() in entries:
            first = entries[key.lower()]
            warnings.append(
                f"{source}:{number}: duplicate key {section}.{key}, keeping the value of line {first.line}"
            )
            continue
        entries[key.lower()] = ConfigValue(section, key, _unquote(pair.group(2)), number)
    return sections, warnings


def parse_bool(text: str) -> bool | None:
    """`true`/`false` in any case, or `1`/`0`; anything else is None."""
    lowered = text.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    return None


def parse_int(text: str) -> int | None:
    """C `strtol(text, &end, 0)` that must consume the whole string: `0x` hex, leading `0` octal."""
    value = text.strip()
    match = re.fullmatch(r"([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)", value)
    if match is None:
        return None
    sign, digits = match.groups()
    if digits[:2].lower() == "0x":
        number = int(digits[2:], 16)
    elif digits.startswith("0") and len(digits) > 1:
        number = int(digits[1:], 8)
    else:
        number = int(digits, 10)
    return -number if sign == "-" else number


def parse_memory_string(text: str) -> int | None:
    """Bytes from `4GB`, `512M`, `1T`, `1048576` (suffixes upper case only, binary multiples)."""
    match = _MEMORY.fullmatch(text.strip())
    if match is None:
        return None
    return int(match.group(1)) * _MEMORY_UNITS[match.group(2)]
