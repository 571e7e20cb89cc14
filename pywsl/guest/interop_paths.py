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
    "DEFAULT_SOCKET",
    "HOST_PATH_FOLDER",
    "HOST_VIEW",
    "LAUNCHER",
    "MOUNT_POINT_ENTRY",
    "ROOTFS_ENTRY",
    "RUNTIME_DIR",
    "TranslationError",
    "WslenvEntry",
    "escape_folder",
    "forwarded_environment",
    "host_to_inside",
    "inside_to_host",
    "parse_wslenv",
    "translate_environment_in",
    "translate_environment_out",
    "translate_request",
    "unescape_folder",
    "wslpath",
]

# Inside a distribution: the interop runtime (``interop_init`` makes it, the client uses it).
RUNTIME_DIR = "/run/WSL/interop"
HOST_PATH_FOLDER = RUNTIME_DIR + "/path"  # one folder inside per host PATH folder
HOST_VIEW = RUNTIME_DIR + "/host"  # the host's files, read-only (the VM's host tree)
LAUNCHER = RUNTIME_DIR + "/launch"
DEFAULT_SOCKET = "/run/WSL/1_interop"  # WSL_INTEROP
MOUNT_POINT_ENTRY = "PYWSL_INTEROP_MOUNT_POINT"  # the caller's translation context, in a request
ROOTFS_ENTRY = "PYWSL_INTEROP_ROOTFS"
_FORWARDED_AS_THEY_ARE = ("PATH", "TERM", "WSLENV")


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


# -- a host program's request -------------------------------------------------------------------


def escape_folder(host_folder: str) -> str:
    """The name under ``HOST_PATH_FOLDER`` of a host folder (``/usr/bin`` -> ``%2Fusr%2Fbin``)."""
    return host_folder.replace("%", "%25").replace("/", "%2F")


def unescape_folder(name: str) -> str:
    return name.replace("%2F", "/").replace("%25", "%")


def forwarded_environment(
    environment: Mapping[str, str], mount_point: str | None, rootfs: str | None
) -> list[str]:
    """What a client inside sends of the caller's environment, untranslated (the host's worker
    translates it, ``translate_request``): the translation context (mount point, root filesystem
    folder), ``PATH``, ``TERM``, ``WSLENV`` and the variables ``WSLENV`` names, in that order.
    The native client (``interop_native.c``) builds the same list."""
    entries = [f"{MOUNT_POINT_ENTRY}={mount_point or ''}", f"{ROOTFS_ENTRY}={rootfs or ''}"]
    entries += [f"{name}={environment[name]}" for name in _FORWARDED_AS_THEY_ARE if name in environment]
    sent = {*_FORWARDED_AS_THEY_ARE, MOUNT_POINT_ENTRY, ROOTFS_ENTRY}
    for item in environment.get("WSLENV", "").split(":"):
        name = item.partition("/")[0]
        if name and "=" not in name and name not in sent:
            sent.add(name)
            if name in environment:
                entries.append(f"{name}={environment[name]}")
    return entries


def _host_path(inside_path: str) -> str:
    """The host folders of the host PATH folders an inside ``PATH`` holds."""
    prefix = HOST_PATH_FOLDER + "/"
    folders = [
        unescape_folder(item[len(prefix) :]) for item in inside_path.split(":") if item.startswith(prefix)
    ]
    return ":".join(folders)


def translate_request(cwd: str, entries: Sequence[str]) -> tuple[str, list[str]]:
    """(host working folder, host environment) of a request a client inside sent untranslated
    (``forwarded_environment``): the folder translated back to the host ("" when it has no host
    path: the owner's home), the host PATH folders the caller's ``PATH`` holds, ``TERM``, and the
    variables ``WSLENV`` shares, translated back. A request without the translation context is
    already the host's (WSL's own clients translate before they send) and stays as it is."""
    environment: dict[str, str] = {}
    for entry in entries:
        name, _, value = entry.partition("=")
        environment.setdefault(name, value)
    if MOUNT_POINT_ENTRY not in environment:
        return cwd, list(entries)
    mount_point = environment.pop(MOUNT_POINT_ENTRY) or None
    rootfs = environment.pop(ROOTFS_ENTRY, "") or None
    try:
        host_cwd = inside_to_host(cwd, mount_point, rootfs)
    except TranslationError:
        host_cwd = ""
    result: dict[str, str] = {}
    host_path = _host_path(environment.get("PATH", ""))
    if host_path:
        result["PATH"] = host_path
    if "TERM" in environment:
        result["TERM"] = environment["TERM"]
    result.update(translate_environment_out(environment, mount_point, rootfs))
    return host_cwd, [f"{name}={value}" for name, value in result.items()]


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
