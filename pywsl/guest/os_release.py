"""``/etc/os-release`` and ``/etc/wsl-distribution.conf`` of a distribution.

WSL reports a distribution's flavor (os-release ``ID``) and version (``VERSION_ID``) in
``ImportResult`` and ``InitializeResponse``, and takes the default name of an imported
distribution from ``/etc/wsl-distribution.conf`` ``[oobe] defaultName``. Both files are read
inside the distribution's tree (``rootfs.read_in_root``), bounded in size.
"""

from __future__ import annotations

from pywsl.guest.rootfs import read_in_root
from pywsl.wire.config_format import parse_config
from pywsl.wire.constants import WSL_DISTRIBUTION_CONF

MAX_OS_RELEASE_BYTES = 64 * 1024
MAX_DISTRIBUTION_CONF_BYTES = 64 * 1024
# os-release(5): /etc/os-release first, /usr/lib/os-release as the fallback.
OS_RELEASE_PATHS = ("/etc/os-release", "/usr/lib/os-release")
# A flavor or version longer than this is not a real value; it is dropped.
MAX_VALUE_LENGTH = 256


def parse_os_release(text: str) -> dict[str, str]:
    """``KEY=value`` lines with shell quoting, as os-release(5) describes; bad lines are skipped."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        key = key.strip()
        if not key.isidentifier():
            continue
        try:
            words = shell_words(raw)
        except ValueError:
            continue
        value = " ".join(words)
        if len(value) <= MAX_VALUE_LENGTH:
            values.setdefault(key, value)
    return values


def read_os_release(root_fd: int) -> dict[str, str]:
    """The os-release values of the tree ``root_fd`` (empty when there is no readable file)."""
    for path in OS_RELEASE_PATHS:
        try:
            data = read_in_root(root_fd, path, MAX_OS_RELEASE_BYTES)
        except ValueError:
            return {}
        if data is not None:
            return parse_os_release(data.decode("utf-8", "replace"))
    return {}


def flavor_and_version(root_fd: int) -> tuple[str | None, str | None]:
    values = read_os_release(root_fd)
    return values.get("ID") or None, values.get("VERSION_ID") or None


def default_name(root_fd: int) -> str | None:
    """``[oobe] defaultName`` of ``/etc/wsl-distribution.conf``, if set."""
    try:
        data = read_in_root(root_fd, WSL_DISTRIBUTION_CONF, MAX_DISTRIBUTION_CONF_BYTES)
    except ValueError:
        return None
    if data is None:
        return None
    sections, _warnings = parse_config(data.decode("utf-8", "replace"), WSL_DISTRIBUTION_CONF)
    entry = sections.get("oobe", {}).get("defaultname")
    if entry is None or not entry.value or len(entry.value) > MAX_VALUE_LENGTH:
        return None
    return entry.value


def shell_words(text: str) -> list[str]:
    """The words of `text` as ``shlex.split(text)`` splits them (POSIX rules, no comments): split
    at white space, with '...' and "..." quoting and backslash escapes; ValueError for an open
    quote or a trailing backslash. (`shlex` loads `re`, and with it `enum`, at the VM's start.)"""
    words: list[str] = []
    word: list[str] | None = None  # None between words
    index = 0
    while index < len(text):
        char = text[index]
        if char in _SHELL_SPACE:
            if word is not None:
                words.append("".join(word))
                word = None
            index += 1
            continue
        word = [] if word is None else word
        index = _shell_part(text, index, word)
    if word is not None:
        words.append("".join(word))
    return words


_SHELL_SPACE = " \t\r\n"


def _shell_part(text: str, index: int, word: list[str]) -> int:
    """Add what starts at `index` (a character, an escaped one, a quoted string) to `word`; the
    index after it."""
    char = text[index]
    if char == "\\":
        if index + 1 >= len(text):
            raise ValueError("No escaped character")
        word.append(text[index + 1])
        return index + 2
    if char == "'":
        end = text.find("'", index + 1)
        if end < 0:
            raise ValueError("No closing quotation")
        word.append(text[index + 1 : end])
        return end + 1
    if char == '"':
        return _double_quoted(text, index + 1, word)
    word.append(char)
    return index + 1


def _double_quoted(text: str, index: int, word: list[str]) -> int:
    """The rest of a "..." string from `index`: a backslash escapes only " and itself."""
    while index < len(text):
        char = text[index]
        if char == '"':
            return index + 1
        if char == "\\" and index + 1 < len(text) and text[index + 1] in '"\\':
            word.append(text[index + 1])
            index += 2
            continue
        word.append(char)
        index += 1
    raise ValueError("No closing quotation")
