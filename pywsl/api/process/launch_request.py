"""The request of `CreateLxProcess`: what WSL's `ParseArguments` and environment block make of a call.

`process_request` turns the arguments of `UserSession.create_lx_process` into the `ProcessRequest`
that becomes `LX_INIT_CREATE_PROCESS_UTILITY_VM`: shell mode or a program with its argv, the
working folder (a Linux path, or the caller's host folder as `host_directory` writes it), and
the environment (the distribution's `DefaultEnvironment`, TERM of a terminal
caller, the variables `WSLENV` shares, then the explicit ones). Pure functions: nothing here
touches the registry, the VM or a file.
"""

from __future__ import annotations

from pywsl.vm.process_request import ProcessRequest

TYPE_CHECKING = False  # a launch builds its request here: `typing` would cost it more than this module
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = [
    "HOST_DIRECTORY_PREFIX",
    "host_directory",
    "host_search_path",
    "parse_wslenv",
    "process_environment",
    "process_request",
]

# A working directory of the host travels as "host:" + its absolute path, as WSL sends the Windows
# directory ("C:\\x"); the distribution finds it under its automount root (/mnt/host/x).
HOST_DIRECTORY_PREFIX = "host:"


def host_directory(path: str) -> str:
    """The `cwd` that starts a process in the host folder `path` (absolute): inside the
    distribution, `<automount root>host<path>`; the user's home when that is not reachable."""
    if not path.startswith("/"):
        raise _invalid_argument(f"The host directory {path!r} is not an absolute path.")
    return HOST_DIRECTORY_PREFIX + path


def _valid_cwd(cwd: str) -> bool:
    if cwd.startswith(HOST_DIRECTORY_PREFIX):
        return cwd[len(HOST_DIRECTORY_PREFIX) :].startswith("/")
    return not cwd or cwd.startswith(("/", "~"))


def parse_wslenv(value: str) -> list[str]:
    """The variable names `WSLENV` shares with Linux (`NAME`, `NAME/p`, ...; `/w`-only ones excluded).

    Their host values travel as they are, with `WSLENV` itself: the distribution translates `/p`
    and `/l` paths to its own view of the host (`<automount root>host/...`). `/w` alone means
    "from Linux to the host only" and is left out.
    """
    names: list[str] = []
    for item in value.split(":"):
        name, _, flags = item.partition("/")
        if not name or "=" in name or "\0" in name:
            continue
        if "w" in flags and "u" not in flags:
            continue
        if name not in names:
            names.append(name)
    return names


def process_request(
    command_line: Sequence[str],
    *,
    filename: str | None,
    cwd: str,
    username: str,
    login: bool,
    environment: Mapping[str, str] | None,
    wslenv_source: Mapping[str, str],
    console: tuple[bool, bool, bool],
    rows: int,
    columns: int,
    default_environment: Sequence[str],
    default_uid: int,
    host_environment: Sequence[str] = (),
) -> ProcessRequest:
    """`ParseArguments` + the environment block of a new process of a distribution whose registry
    values are `default_environment` and `default_uid`; E_INVALIDARG for arguments WSL refuses."""
    arguments = [str(item) for item in command_line]
    for value in (*arguments, cwd, username, filename or ""):
        if "\0" in value:
            raise _invalid_argument("An argument contains a NUL character.")
    if filename is None:
        program = ""
        argv = ["-c", " ".join(arguments)] if arguments else []
    else:
        if login:
            raise _invalid_argument("A login shell cannot be combined with a program to run.")
        if not filename:
            raise _invalid_argument("The program name is empty.")
        program = filename
        argv = arguments or [filename]
    if not _valid_cwd(cwd):
        raise _invalid_argument(
            f"The working directory {cwd!r} must be an absolute Linux path, "
            f"start with ~, or be a host directory ({HOST_DIRECTORY_PREFIX}/...).",
        )
    return ProcessRequest(
        nt_path=host_search_path(wslenv_source),
        filename=program,
        command_line=argv,
        cwd=cwd,
        environment=process_environment(default_environment, any(console), environment, wslenv_source),
        username=username,
        default_uid=default_uid,
        login_shell=login,
        console=console,
        rows=max(0, int(rows)),
        columns=max(0, int(columns)),
        host_environment=tuple(host_environment),
    )


def host_search_path(source: Mapping[str, str]) -> str:
    """The caller's host `PATH` (WSL's `NtPath`): its absolute folders, which the distribution
    appends as host PATH folders when `[interop] enabled` and `appendWindowsPath` allow it."""
    value = source.get("PATH", "")
    if "\0" in value:
        return ""
    return ":".join(item for item in value.split(":") if item.startswith("/"))


def process_environment(
    default_environment: Sequence[str],
    terminal: bool,
    environment: Mapping[str, str] | None,
    source: Mapping[str, str],
) -> list[str]:
    """DefaultEnvironment, TERM of a terminal caller, WSLENV's variables, explicit ones."""
    result: dict[str, str] = {}
    for item in default_environment:
        name, _, value = item.partition("=")
        result[name] = value
    if terminal and source.get("TERM"):
        result["TERM"] = source["TERM"]
    if source.get("WSLENV"):
        result["WSLENV"] = source["WSLENV"]
    for name in parse_wslenv(source.get("WSLENV", "")):
        if name in source:
            result[name] = source[name]
    for name, value in (environment or {}).items():
        if not name or "=" in name or "\0" in name or "\0" in value:
            raise _invalid_argument(f"Invalid environment variable {name!r}.")
        result[name] = value
    return [f"{name}={value}" for name, value in result.items()]


def _invalid_argument(message: str) -> Exception:
    """E_INVALIDARG with `message` (`pywsl.api.errors` is loaded only when an argument is wrong)."""
    from pywsl.api.errors import WslError

    return WslError("E_INVALIDARG", message)
