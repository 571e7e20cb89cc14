"""What a launched Linux process gets: its user, environment, program, argv and working directory.

These are the decisions WSL's relay child makes between parsing ``LX_INIT_CREATE_PROCESS_COMMON``
and calling ``execvpe`` (wsl-reference §4.3 step 6), as pure functions:

* the user: ``Username`` if given (unknown = ``LX_INIT_USER_NOT_FOUND``), else the wsl.conf
  ``[user] default``, else ``DefaultUid``, else root;
* the environment: the request's ``Environment`` list, then ``NAME`` (the host name),
  ``WSL_DISTRO_NAME``, ``LANG`` from the distribution's ``/etc/default/locale`` or
  ``/etc/locale.conf`` (``locale_conf``), ``HOME``, ``USER``, ``LOGNAME`` and ``SHELL``;
* the program: an empty ``Filename`` means the user's shell (``/bin/sh`` when ``pw_shell`` is
  empty), whose argv[0] is ``-<basename>`` for a login shell, followed by ``CommandLine``;
  otherwise ``Filename`` is run with ``CommandLine`` as its whole argv;
* the working directory: empty = home, ``~`` and ``~/...`` are relative to home, ``/...`` as is;
  ``host:/...`` is a directory of the host, which the distribution sees under its automount
  root (``/mnt/host/...``), as WSL translates a Windows directory ``C:\\x`` to ``/mnt/c/x``.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence

from pywsl.guest.users import PasswdEntry, UserDatabase

TYPE_CHECKING = False  # the type checker sees dataclasses; `records` gives the same classes cheaply
if TYPE_CHECKING:
    from dataclasses import dataclass
else:
    from pywsl.records import dataclass

__all__ = [
    "DEFAULT_PATH",
    "DEFAULT_SHELL",
    "HOST_DIRECTORY_PREFIX",
    "ROOT_FALLBACK",
    "Program",
    "UserNotFound",
    "build_environment",
    "resolve_program",
    "resolve_user",
    "resolve_working_directory",
    "translate_host_directory",
]

# WSL's registry DefaultEnvironment PATH, used when the request carries none.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/games:/usr/local/games"
# A working directory of the host: "host:" + its absolute path (the host is the drive "host").
HOST_DIRECTORY_PREFIX = "host:"
# The shell of a user whose pw_shell is empty (as login(1) and WSL do).
DEFAULT_SHELL = "/bin/sh"
# Root when the distribution's /etc/passwd has no entry for uid 0.
ROOT_FALLBACK = PasswdEntry("root", 0, 0, "root", "/root", DEFAULT_SHELL)


class UserNotFound(LookupError):
    """The requested user name is not in the distribution's /etc/passwd (LX_INIT_USER_NOT_FOUND)."""


@dataclass(frozen=True)
class Program:
    """What to execute: the file (a path or a name searched on PATH) and the whole argv."""

    file: str
    argv: list[str]


def resolve_user(
    database: UserDatabase,
    username: str | None,
    *,
    default_user: str | None,
    default_uid: int,
    fallback_uid: int | None = None,
) -> PasswdEntry:
    """The user of a new process: ``username``, else ``default_user``, else ``default_uid``, else root.

    A given ``username`` that does not exist raises ``UserNotFound``; the defaults fall through
    to the next one when they do not resolve. ``fallback_uid`` is tried after ``default_uid``.
    """
    if username:
        entry = database.user_by_name(username)
        if entry is None:
            raise UserNotFound(username)
        return entry
    if default_user:
        entry = database.user_by_name(default_user)
        if entry is not None:
            return entry
    for uid in (default_uid, fallback_uid):
        if uid is not None:
            entry = database.user_by_uid(uid)
            if entry is not None:
                return entry
    return database.user_by_uid(0) or ROOT_FALLBACK


def user_shell(user: PasswdEntry) -> str:
    return user.shell or DEFAULT_SHELL


def build_environment(
    request_environment: Sequence[str],
    user: PasswdEntry,
    *,
    distribution_name: str,
    hostname: str,
    language: str | None = None,
) -> dict[str, str]:
    """The environment of the new process.

    Entries of the request are ``K=V``; an entry without ``=`` or with an empty name is skipped
    (the later of two equal names wins). PATH falls back to WSL's default when absent. Then, in
    WSL's order (a name the request has keeps its place): ``NAME``, ``WSL_DISTRO_NAME``, ``LANG``
    when the distribution's locale file sets one (``language``, see ``locale_conf``), ``HOME``,
    ``USER``, ``LOGNAME`` and ``SHELL``.
    """
    environment: dict[str, str] = {}
    for entry in request_environment:
        name, separator, value = entry.partition("=")
        if not separator or not name or "\0" in entry:
            continue
        environment[name] = value
    environment.setdefault("PATH", DEFAULT_PATH)
    environment["NAME"] = hostname
    environment["WSL_DISTRO_NAME"] = distribution_name
    if language is not None and "\0" not in language:
        environment["LANG"] = language
    environment["HOME"] = user.home
    environment["USER"] = user.name
    environment["LOGNAME"] = user.name
    environment["SHELL"] = user_shell(user)
    return environment


def resolve_program(filename: str, command_line: Sequence[str], user: PasswdEntry, *, login: bool) -> Program:
    """The file to execute and its argv.

    Shell mode (empty ``filename``): the user's shell, argv[0] = the shell (``-<basename>`` for a
    login shell), then ``command_line`` (``["-c", "<string>"]`` for a command). Exec mode:
    ``filename`` with ``command_line`` as the whole argv (``[filename]`` when it is empty).
    """
    if not filename:
        shell = user_shell(user)
        argv0 = "-" + posixpath.basename(shell) if login else shell
        return Program(shell, [argv0, *command_line])
    return Program(filename, list(command_line) if command_line else [filename])


def resolve_working_directory(cwd: str, home: str) -> str:
    """The directory to start in: ``""`` = home, ``~``/``~/x`` relative to home, ``/x`` as is.

    Anything else (a relative or Windows path, ``~user``) raises ValueError.
    """
    if not cwd or cwd == "~":
        return home or "/"
    if cwd.startswith("~/"):
        return posixpath.join(home or "/", cwd[2:])
    if cwd.startswith("/"):
        return cwd
    raise ValueError(f"{cwd!r} is not a Linux path (expected '/...' or '~/...')")


def translate_host_directory(cwd: str, host_mount_point: str | None) -> str | None:
    """Where the host directory ``host:/x`` is inside the distribution (``/mnt/host/x``).

    None when ``cwd`` is not a host directory, is not absolute, or the host is not mounted
    (``[automount] enabled = false``: ``host_mount_point`` None).
    """
    if not cwd.startswith(HOST_DIRECTORY_PREFIX) or host_mount_point is None:
        return None
    path = cwd[len(HOST_DIRECTORY_PREFIX) :]
    if not path.startswith("/"):
        return None
    relative = posixpath.normpath(path).lstrip("/")
    return posixpath.join(host_mount_point, relative) if relative else host_mount_point
