"""Where a launched process's ``LANG`` comes from: the distribution's locale file, as in WSL.

WSL's relay reads the first of ``/etc/default/locale`` (Debian, Ubuntu) and ``/etc/locale.conf``
(Fedora, Arch, ...) that it can open, as root and before the process gets its user. In that file:

* everything from a ``#`` on is a comment, even inside quotes;
* a line containing ``LANG=`` anywhere (``export LANG=x`` too) sets ``LANG`` to the rest of the
  line, trimmed, then unquoted and unescaped as a shell would (``"en_US.UTF-8"``, ``'C'``); an
  unbalanced quote or a trailing backslash leaves the trimmed text as it is;
* the last such line wins; none at all (or no file) leaves the ``LANG`` of the request, WSL's
  default environment ``en_US.UTF-8``.

Unlike WSL (which would wait forever on a FIFO there), only a regular file of at most
``MAX_LOCALE_FILE_BYTES`` is read; anything else counts as a file without ``LANG``.
"""

from __future__ import annotations

import os

from pywsl.guest.distribution_files import UnusableFile, read_regular_file

__all__ = [
    "LOCALE_FILES",
    "MAX_LOCALE_FILE_BYTES",
    "language_from_text",
    "read_language",
    "read_language_at",
    "unescape_shell",
]

LOCALE_FILES = ("/etc/default/locale", "/etc/locale.conf")
MAX_LOCALE_FILE_BYTES = 64 * 1024
_MARKER = "LANG="
_TRIMMED = " \t\n\r\f\v\0"
_DOUBLE_QUOTE_ESCAPES = '"\\$`'


def unescape_shell(text: str) -> str:
    """``text`` without shell quotes and escapes; ``text`` itself when a quote or escape is unfinished."""
    output: list[str] = []
    quote: str | None = None
    index = 0
    while index < len(text):
        char = text[index]
        index += 1
        if char == "\\" and quote != "'":
            if index == len(text):
                return text
            output.append(_escaped(text[index], quote))
            index += 1
        else:
            quote = _quote_after(char, quote, output)
    return "".join(output) if quote is None else text


def _escaped(char: str, quote: str | None) -> str:
    """What a backslash and the ``char`` after it stand for, outside quotes or inside double quotes."""
    if char == "\n":
        return ""  # a line continuation
    if quote is None or char in _DOUBLE_QUOTE_ESCAPES:
        return char
    return "\\" + char  # inside double quotes, other backslashes stay


def _quote_after(char: str, quote: str | None, output: list[str]) -> str | None:
    """The quote in force after ``char`` (not an escape); appends ``char`` to ``output`` when it is text."""
    if quote == "'" and char == "'":
        return None
    if quote is None and char == "'":
        return "'"
    if quote != "'" and char == '"':
        return None if quote == '"' else '"'
    output.append(char)
    return quote


def language_from_text(text: str) -> str | None:
    """The ``LANG`` a locale file sets (the last ``LANG=`` line), or None when it sets none."""
    language: str | None = None
    for line in text.split("\n"):
        line = line.split("\0", 1)[0].split("#", 1)[0]  # C strings end at NUL; '#' starts a comment
        start = line.find(_MARKER)
        if start >= 0:
            language = unescape_shell(line[start + len(_MARKER) :].strip(_TRIMMED))
    return language


def read_language(root_fd: int) -> str | None:
    """The ``LANG`` of the distribution whose tree is ``root_fd``; None to keep the request's."""
    for path in LOCALE_FILES:
        try:
            data = read_regular_file(root_fd, path, MAX_LOCALE_FILE_BYTES)
        except UnusableFile as problem:
            if problem.not_opened:
                continue  # as when fopen fails: the next file is tried
            return None  # opened, but nothing to read a LANG from
        if data is not None:
            return language_from_text(data.decode("utf-8", "replace"))
    return None


def read_language_at(root: str) -> str | None:
    """``read_language`` of the tree at the path ``root`` (``/`` inside a distribution)."""
    try:
        fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return read_language(fd)
    finally:
        os.close(fd)
