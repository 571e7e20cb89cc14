"""Paths between the host and a distribution: ``wslpath`` and ``WSLENV`` translation.

On a Linux host the "Windows side" of WSL is the host itself, so a host path ``/srv/x`` is
``<automount root>host/srv/x`` inside a distribution (``/mnt/host/srv/x``), as WSL's ``C:\\x`` is
``/mnt/c/x``. The other way, a path under that mount point is the host path again, and a path of
the distribution's own tree is under the host folder of its root filesystem when there is one
(WSL gives ``\\\\wsl.localhost\\<distro>\\...`` there).

Only the standard library is used: the interop client that runs these functions inside a
distribution starts a bare interpreter and must start fast.
"""

from __future__ import annotations

import os
import posixpath

TYPE_CHECKING = False
if TYPE_CHECKING:  # the interop client imports this module: nothing beyond built-in modules at run time
    from collections.abc import Mapping, Sequence

__all__ = [
    "TranslationError",
    "WslenvEntry",
    "host_to_inside",
    "inside_to_host",
    "parse_wslenv",
    "translate_environment_in",
    "translate_environment_out",
    "wslpath",
]


class TranslationError(ValueError):
    """A path that has no counterpart on the other side."""


def _clean(path: str) -> str:
    cleaned = posixpath.normpath(path)
    return "/" + cleaned.lstrip("/") if cleaned.startswith("/") else cleaned


def host_to_inside(path: str, mount_point: str | None) -> str:
    """The path inside the distribution of the absolute host path ``path``."""
    if not path.startswith("/"):
        raise TranslationError(f"{path}: not an absolute host path")
    if mount_point is None:
        raise TranslationError(f"{path}: the host's files are not mounted ([automount] enabled=false)")
    relative = _clean(path).lstrip("/")
    return posixpath.join(mount_point, relative) if relative else mount_point


def inside_to_host(path: str, mount_point: str | None, rootfs: str | None) -> str:
    """The host path of the absolute path ``path`` inside the distribution."""
    if not path.startswith("/"):
        raise TranslationError(f"{path}: not an absolute path")
    cleaned = _clean(path)
    if mount_point is not None:
        if cleaned == mount_point:
            return "/"
        if cleaned.startswith(mount_point.rstrip("/") + "/"):
            return "/" + cleaned[len(mount_point.rstrip("/")) + 1 :]
    if rootfs:
        return rootfs.rstrip("/") + cleaned if cleaned != "/" else rootfs
    raise TranslationError(f"{path}: the distribution's files have no host path")


# -- WSLENV ---------------------------------------------------------------------------------------


class WslenvEntry:
    """One ``NAME/flags`` item of ``WSLENV``: p (path), l (path list), u (into Linux only),
    w (out of Linux only)."""

    __slots__ = ("flags", "name")

    def __init__(self, name: str, flags: str) -> None:
        self.name = name
        self.flags = flags

    @property
    def path(self) -> bool:
        return "p" in self.flags

    @property
    def path_list(self) -> bool:
        return "l" in self.flags

    @property
    def into_linux(self) -> bool:
        return "w" not in self.flags or "u" in self.flags

    @property
    def out_of_linux(self) -> bool:
        return "u" not in self.flags or "w" in self.flags


def parse_wslenv(value: str) -> list[WslenvEntry]:
    """The entries of a ``WSLENV`` value (``A:B/p:C/lu``); malformed names are skipped."""
    entries: list[WslenvEntry] = []
    seen: set[str] = set()
    for item in value.split(":"):
        name, _, flags = item.partition("/")
        if not name or "=" in name or "\0" in name or name in seen:
            continue
        seen.add(name)
        entries.append(WslenvEntry(name, flags))
    return entries


def _translate_value(value: str, entry: WslenvEntry, translate: object) -> str:
    assert callable(translate)
    if entry.path_list:
        return ":".join(_translate_one(item, translate) for item in value.split(":"))
    if entry.path:
        return _translate_one(value, translate)
    return value


def _translate_one(value: str, translate: object) -> str:
    """A path translated; a relative path, an empty one or one with no counterpart stays as is."""
    assert callable(translate)
    if not value.startswith("/"):
        return value
    try:
        result: str = translate(value)
    except TranslationError:
        return value
    return result


def translate_environment_in(environment: Mapping[str, str], mount_point: str | None) -> dict[str, str]:
    """Host values of the variables ``WSLENV`` shares, translated for the distribution.

    ``environment`` holds ``WSLENV`` and the host's values; the result holds the variables that
    go into the distribution (``/w``-only ones left out), ``/p`` and ``/l`` paths translated.
    """
    result: dict[str, str] = {}
    for entry in parse_wslenv(environment.get("WSLENV", "")):
        if not entry.into_linux or entry.name not in environment:
            continue
        result[entry.name] = _translate_value(
            environment[entry.name], entry, lambda path: host_to_inside(path, mount_point)
        )
    return result


def translate_environment_out(
    environment: Mapping[str, str], mount_point: str | None, rootfs: str | None
) -> dict[str, str]:
    """The distribution's variables that ``WSLENV`` shares with a host program, translated back
    (``/u``-only ones left out), plus ``WSLENV`` itself."""
    result: dict[str, str] = {}
    wslenv = environment.get("WSLENV")
    if wslenv is None:
        return result
    for entry in parse_wslenv(wslenv):
        if not entry.out_of_linux or entry.name not in environment:
            continue
        result[entry.name] = _translate_value(
            environment[entry.name], entry, lambda path: inside_to_host(path, mount_point, rootfs)
        )
    result["WSLENV"] = wslenv
    return result


# -- wslpath --------------------------------------------------------------------------------------

USAGE = """wslpath: Invalid argument
Usage:
    -a    force result to absolute path format
    -u    translate from a host path to a path inside (default)
    -w    translate from a path inside to a host path
    -m    translate from a path inside to a host path, with forward slashes
"""


def _wslpath_options(argv: Sequence[str]) -> tuple[bool, str, list[str]] | None:
    """(``-a`` given, mode letter, operands) of wslpath's command line; None for a bad option."""
    absolute = False
    mode = "u"
    arguments = list(argv)
    while arguments and arguments[0].startswith("-") and len(arguments[0]) > 1:
        option = arguments.pop(0)
        if option == "--":
            break
        for letter in option[1:]:
            if letter == "a":
                absolute = True
            elif letter in "uwm":
                mode = letter
            else:
                return None
    return absolute, mode, arguments


def wslpath(
    argv: Sequence[str], *, cwd: str, mount_point: str | None, rootfs: str | None
) -> tuple[int, str, str]:
    """``wslpath [-a] [-u|-w|-m] PATH``: (exit code, stdout text, stderr text), as WSL's wslpath."""
    options = _wslpath_options(argv)
    if options is None or len(options[2]) != 1 or not options[2][0]:
        return 1, "", USAGE
    absolute, mode, (path,) = options
    try:
        if mode == "u":
            if path.startswith("/"):
                result = host_to_inside(path, mount_point)
            else:
                result = posixpath.normpath(posixpath.join(cwd, path)) if absolute else path
        elif path.startswith("/") or absolute:
            result = inside_to_host(posixpath.join(cwd, path), mount_point, rootfs)
        else:
            result = path
    except TranslationError:
        return 1, "", f"wslpath: {path}: Invalid argument\n"
    return 0, result + "\n", ""


def current_directory() -> str:
    try:
        return os.getcwd()
    except OSError:
        return "/"
