"""The gitconfig-style file format shared by `.wslconfig`, `/etc/wsl.conf` and `wsl-distribution.conf`.

WSL reads all three with one character-level reader (`src/shared/configfile`); this module behaves
the same way, because a script sees the difference:

* a line is blank, a `# comment`, a `[section]` header or a `key = value` pair; spaces and tabs
  may lead a line. `;` starts no comment.
* section and key names start with an ASCII letter and go on with letters and digits only
  (`[wsl-2]`, `[ wsl2 ]`, `my_key` are syntax errors). After `]` only spaces, a comment or the end
  of the line may follow. A key outside any section is an unknown key.
* a value runs to the end of the line or to a `#` outside double quotes; spaces after `=` and at
  its end are dropped. Double quotes anywhere in it are removed (what they enclose keeps its
  spaces and `#`). Escapes: `\\\\`, `\\"`, `\\b`, `\\n`, `\\t`, and a backslash at the end of the line
  joins the next line (its leading spaces are kept); any other escape is a syntax error, as is an
  unclosed quote.
* on a syntax error the reader either skips the rest of that line (`.wslconfig`,
  `skip_invalid_lines=True`) or stops reading the file there (`/etc/wsl.conf` and
  `wsl-distribution.conf` in WSL's init): what came before still counts.
* line numbers in warnings are counted as WSL counts them (a `\\r\\n` that ends a pair or a header
  counts twice, as in WSL).
* a key seen twice keeps its first value, with a warning (`Duplicated config key`).

Warnings use WSL's wording. Value helpers follow WSL's rules: booleans `true`/`false` (any case)
and `1`/`0`; integers with C `strtol` base 0 (`0x1f`, `022` octal) within a C `int`; memory strings
with upper-case binary suffixes. Unlike WSL's reader (which truncates wide characters to one
byte), text beyond ASCII is kept as it is; it is never a letter of a name.

The format lives beside the wire protocol because the host (`api`) and the guest (`guest`) both
read it and neither may import the other.
"""

from __future__ import annotations

from collections import namedtuple

TYPE_CHECKING = False  # `typing` would cost the guest's start (it reads wsl.conf): not needed at run time
if TYPE_CHECKING:
    from typing import NamedTuple

MAX_CONFIG_BYTES = 1024 * 1024
INT_MIN, INT_MAX = -(2**31), 2**31 - 1

_SPACE = " \t"
_MEMORY_UNITS = {
    None: 1,
    "B": 1,
    "K": 1 << 10,
    "KB": 1 << 10,
    "M": 1 << 20,
    "MB": 1 << 20,
    "G": 1 << 30,
    "GB": 1 << 30,
    "T": 1 << 40,
    "TB": 1 << 40,
}
_ESCAPES = {"\\": "\\", '"': '"', "b": "\b", "n": "\n", "t": "\t"}
_C_SPACE = " \t\n\v\f\r"


if TYPE_CHECKING:

    class ConfigValue(NamedTuple):
        """One `key = value` pair: names as written, the value as read, and the line WSL reports."""

        section: str  # "" for a key before any section
        key: str
        value: str
        line: int

        @property
        def name(self) -> str:
            """`section.key` as written (what WSL's warnings show), or the bare key outside a section."""
            return f"{self.section}.{self.key}" if self.section else self.key

    class ConfigProblem(NamedTuple):
        """A syntax error, with WSL's warning text."""

        message: str
        line: int

else:
    # What ``typing.NamedTuple`` makes of the classes above, without loading ``typing``.
    def _named_tuple(name, doc, annotations):
        made = namedtuple(name, tuple(annotations))
        made.__doc__ = doc
        made.__annotations__ = annotations
        return made

    def _name(self):
        return f"{self.section}.{self.key}" if self.section else self.key

    _name.__doc__ = "`section.key` as written (what WSL's warnings show), or the bare key outside a section."
    ConfigValue = _named_tuple(
        "ConfigValue",
        "One `key = value` pair: names as written, the value as read, and the line WSL reports.",
        {"section": "str", "key": "str", "value": "str", "line": "int"},
    )
    ConfigValue.name = property(_name)
    ConfigProblem = _named_tuple(
        "ConfigProblem", "A syntax error, with WSL's warning text.", {"message": "str", "line": "int"}
    )


ConfigItem = ConfigValue | ConfigProblem
Sections = dict[str, dict[str, ConfigValue]]


def _is_letter(char: str | None) -> bool:
    return char is not None and char.isascii() and char.isalpha()


def _is_name_char(char: str | None) -> bool:
    return char is not None and char.isascii() and char.isalnum()


def _shown_char(char: str | None) -> str:
    """A character for a warning: nothing at the end of the file, control characters as ``\\xNN``."""
    if char is None:
        return ""
    return f"\\x{ord(char):02x}" if ord(char) < 0x20 or ord(char) == 0x7F else char


class _Invalid(Exception):
    """The current line is a syntax error; the reader skips it or stops."""


class _Reader:
    """WSL's reading of one file, character by character."""

    def __init__(self, text: str, source: str, skip_invalid_lines: bool) -> None:
        self.text = text
        self.position = 0
        self.at_end = False  # a read found the end of the text (C's feof)
        self.source = source
        self.skip_invalid_lines = skip_invalid_lines
        self.line = 0
        self.char: str | None = ""  # the character in hand ("" before the first read)
        self.trailing_comment = False
        # WSL keeps the section and key names in one buffer; a header that fails after its first
        # letter leaves its partial name there, which the next keys then carry.
        self.names = ""
        self.section_length = 0
        self.items: list[ConfigItem] = []

    def read(self) -> str | None:
        if self.position >= len(self.text):
            self.at_end = True
            return None
        char = self.text[self.position]
        self.position += 1
        return char

    def unread(self, char: str | None) -> None:
        if char is not None:
            self.position -= 1

    def problem(self, message: str) -> _Invalid:
        self.items.append(ConfigProblem(f"{message} in {self.source}:{self.line}", self.line))
        return _Invalid()

    def run(self) -> list[ConfigItem]:
        while True:
            if not self.trailing_comment:
                self.line += 1
            try:
                if not self._next_statement():
                    return self.items
            except _Invalid:
                if not self.skip_invalid_lines:
                    return self.items
                while self.char is not None and self.char != "\n":
                    self.char = self.read()

    def _next_statement(self) -> bool:
        """Read up to the end of the next header or pair; False at the end of the text."""
        while True:
            if self.char == "#":
                self._skip_comment()
            if self.at_end:
                return False
            self.char = self.read()
            self._skip_space()
            char = self.char
            if char is None or char == "#":
                continue
            if char in ("\r", "\n"):
                self._line_end(char)
            elif char == "[":
                self._section()
                return True
            elif not _is_letter(char):
                raise self.problem("Invalid key name")
            else:
                self._pair()
                return True

    def _line_end(self, char: str) -> None:
        """Count the line ``char`` ends: LF, or CR followed by LF (a CR alone ends no line, and
        what follows it is read again)."""
        if char == "\n":
            self.line += 1
            return
        following = self.read()
        if following == "\n":
            self.line += 1
        else:
            self.unread(following)

    def _skip_comment(self) -> None:
        while True:
            self.char = self.read()
            if self.char == "\r":
                self.char = self.read()
            if self.char == "\n":
                self.line += 1
            if self.char is None or self.char == "\n":
                break
        self.trailing_comment = False

    def _name(self) -> str:
        """Letters and digits from the character in hand on; leaves the next one in hand."""
        name = ""
        while _is_name_char(self.char):
            name += str(self.char)
            self.char = self.read()
        return name

    def _skip_space(self) -> None:
        while self.char is not None and self.char in _SPACE:
            self.char = self.read()

    def _section(self) -> None:
        self.char = self.read()
        if not _is_letter(self.char):
            raise self.problem("Invalid section name")
        self.names = self._name()
        if self.char != "]":
            raise self.problem("Expected ']'")
        self.char = self.read()
        self._skip_space()
        if self.char == "#":
            self.trailing_comment = True
        elif self.char not in (None, "\n", "\r"):
            raise self.problem("Expected ' ' or '\\n'")
        self.section_length = len(self.names)

    def _pair(self) -> None:
        prefix = (self.names + "\0" * self.section_length)[: self.section_length]
        key = self._name()
        self.names = f"{prefix}.{key}" if self.section_length else key
        self._skip_space()
        if self.char != "=":
            raise self.problem("Expected '='")
        self.char = self.read()
        self._skip_space()
        value = self._value()
        name = self.names.split("\0", 1)[0]  # a C string ends at its first NUL
        section, dot, key = name.partition(".")
        if not dot:
            section, key = "", name
        self.items.append(ConfigValue(section, key, value, self.line))

    def _value(self) -> str:
        value: list[str] = []
        kept = 0  # the length without trailing spaces
        quoted = False
        while self.char is not None and self.char not in "\n\r":
            char = self.char
            if char == '"':
                quoted = not quoted
            elif char == "\\":
                escaped = self.read()
                if escaped == "\n":
                    self.line += 1
                elif escaped != "\r":
                    if escaped is None or escaped not in _ESCAPES:
                        raise self.problem(f"Invalid escaped character: '{_shown_char(escaped)}'")
                    value.append(_ESCAPES[escaped])
            elif char == "#" and not quoted:
                self.trailing_comment = True
                break
            else:
                value.append(char)
            if char not in _SPACE:
                kept = len(value)
            self.char = self.read()
        if quoted:
            raise self.problem('Expected "')
        return "".join(value[:kept])


def read_config(text: str, source: str, *, skip_invalid_lines: bool) -> list[ConfigItem]:
    """Every pair and syntax error of a config file, in the order WSL's reader meets them."""
    if len(text) > MAX_CONFIG_BYTES:
        return [ConfigProblem(f"{source}: file larger than {MAX_CONFIG_BYTES} bytes, ignored", 0)]
    return _Reader(text, source, skip_invalid_lines).run()


def duplicate_warning(entry: ConfigValue, first: ConfigValue, source: str) -> str:
    """WSL's warning for a key seen again (the first value stays)."""
    return (
        f"Duplicated config key '{entry.name}' in {source}:{entry.line} "
        f"(Conflicting key: '{first.name}' in {source}:{first.line})"
    )


def unknown_key_warning(entry: ConfigValue, source: str) -> str:
    return f"Unknown key '{entry.name}' in {source}:{entry.line}"


def parse_config(text: str, source: str, *, skip_invalid_lines: bool = True) -> tuple[Sections, list[str]]:
    """Parse a config file; returns `{section: {key: ConfigValue}}` keyed in lower case, and warnings.

    The first occurrence of a key wins. A key outside any section is an unknown key.
    """
    sections: Sections = {}
    warnings: list[str] = []
    for item in read_config(text, source, skip_invalid_lines=skip_invalid_lines):
        if isinstance(item, ConfigProblem):
            warnings.append(item.message)
        elif not item.section:
            warnings.append(unknown_key_warning(item, source))
        else:
            entries = sections.setdefault(item.section.lower(), {})
            first = entries.get(item.key.lower())
            if first is not None:
                warnings.append(duplicate_warning(item, first, source))
            else:
                entries[item.key.lower()] = item
    return sections, warnings


def parse_bool(text: str) -> bool | None:
    """`true`/`false` in any case, or `1`/`0`, exactly; anything else is None."""
    lowered = text.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    return None


def parse_int(text: str) -> int | None:
    """C `strtol(text, &end, 0)` that must consume the whole string and fit a C `int`.

    Leading white space is allowed (strtol skips it), trailing is not; `0x` is hex, a leading `0`
    octal.
    """
    value = text.lstrip(_C_SPACE)
    sign = value[:1] if value[:1] in ("+", "-") else ""
    digits = value[len(sign) :]
    if digits[:2] in ("0x", "0X") and _only(digits[2:], _HEX_DIGITS, at_least=1):
        number = int(digits[2:], 16)
    elif digits[:1] == "0" and _only(digits[1:], _OCTAL_DIGITS, at_least=0):
        number = int(digits[1:] or "0", 8)
    elif digits[:1] in _NONZERO_DIGITS and _only(digits, _DECIMAL_DIGITS, at_least=1):
        number = int(digits, 10)
    else:
        return None
    number = -number if sign == "-" else number
    return number if INT_MIN <= number <= INT_MAX else None


_DECIMAL_DIGITS = frozenset("0123456789")
_NONZERO_DIGITS = frozenset("123456789")
_OCTAL_DIGITS = frozenset("01234567")
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def _only(text: str, allowed: frozenset[str], *, at_least: int) -> bool:
    """Whether `text` has at least `at_least` characters, all of them in `allowed` (what a
    character class with `+` or `*` matches, without loading `re` for it)."""
    return len(text) >= at_least and all(char in allowed for char in text)


def parse_memory_string(text: str) -> int | None:
    """Bytes from `4GB`, `512M`, `1T`, `1048576` (suffixes upper case only, binary multiples)."""
    text = text.strip()
    end = 0
    while end < len(text) and text[end].isdecimal():  # what `\d` matches
        end += 1
    unit = text[end:] or None
    if end == 0 or unit not in _MEMORY_UNITS:
        return None
    return int(text[:end]) * _MEMORY_UNITS[unit]
