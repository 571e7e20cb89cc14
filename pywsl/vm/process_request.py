"""``ProcessRequest``: a process to start in a distribution, and its ``CreateProcessUtilityVm`` values.

A plain class with slots rather than a named tuple or a dataclass: ``pywsl -d D -- cmd`` loads
this module, and ``typing`` (or ``dataclasses``) would cost a warm launch more than its round trips
to the VM. ``create_process_values`` is the one mapping from a request to the message's fields,
used by ``CoreInstance`` and by the launch client (``quick_launch``).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["ProcessRequest", "create_process_values", "process_flags"]

# LX_INIT_CREATE_PROCESS_FLAGS: StdInConsole, StdOutConsole, StdErrConsole (a test checks the enum).
CONSOLE_FLAGS = (0x1, 0x2, 0x4)
SHELL_OPTIONS_LOGIN = 0x1  # CREATE_PROCESS_SHELL_OPTIONS.ShellOptionsLogin

_FIELDS = (
    "filename",
    "command_line",
    "cwd",
    "environment",
    "username",
    "default_uid",
    "login_shell",
    "console",
    "rows",
    "columns",
    "nt_path",
    "host_environment",
)


class ProcessRequest:
    """A process to start in a distribution (becomes LX_INIT_CREATE_PROCESS_UTILITY_VM)."""

    __slots__ = _FIELDS

    def __init__(
        self,
        filename: str,  # "" = the user's shell
        command_line: list[str],  # shell mode: ["-c", "<string>"] with filename ""; exec: argv
        cwd: str,  # "" = home; "~..." or "/..."
        environment: list[str],  # "K=V"
        username: str,  # "" = default user chain
        default_uid: int,
        login_shell: bool,
        console: tuple[bool, bool, bool],  # stdin/stdout/stderr are terminals
        rows: int,
        columns: int,
        nt_path: str = "",  # the caller's host PATH (NtPath): host PATH folders for interop
        host_environment: tuple[str, ...] = (),  # NtEnvironment: host facts the api checked (GUI sockets)
    ) -> None:
        self.filename = filename
        self.command_line = command_line
        self.cwd = cwd
        self.environment = environment
        self.username = username
        self.default_uid = default_uid
        self.login_shell = login_shell
        self.console = console
        self.rows = rows
        self.columns = columns
        self.nt_path = nt_path
        self.host_environment = host_environment

    def _replace(self, **changes: Any) -> ProcessRequest:
        """A copy with some fields changed (as a named tuple's ``_replace``)."""
        unknown = set(changes) - set(_FIELDS)
        if unknown:
            raise TypeError(f"ProcessRequest has no field {sorted(unknown)[0]!r}")
        values = {name: getattr(self, name) for name in _FIELDS}
        values.update(changes)
        return ProcessRequest(**values)

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in _FIELDS)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ProcessRequest):
            return NotImplemented
        return self._values() == other._values()

    __hash__ = None  # type: ignore[assignment]  # its lists are mutable

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in _FIELDS)
        return f"ProcessRequest({fields})"


def process_flags(request: ProcessRequest) -> int:
    """``Common.Flags`` of a request: which std streams are terminals."""
    flags = 0
    for is_console, flag in zip(request.console, CONSOLE_FLAGS, strict=True):
        if is_console:
            flags |= flag
    return flags


def create_process_values(request: ProcessRequest) -> dict[str, Any]:
    """The field values of ``LX_INIT_CREATE_PROCESS_UTILITY_VM`` for `request` (the codec's names)."""
    return {
        "Rows": request.rows,
        "Columns": request.columns,
        "Common": {
            "Filename": request.filename,
            "CurrentWorkingDirectory": request.cwd,
            "CommandLine": list(request.command_line),
            "Environment": list(request.environment),
            "NtEnvironment": list(request.host_environment),
            "NtPath": request.nt_path,
            "Username": request.username,
            "ShellOptions": SHELL_OPTIONS_LOGIN if request.login_shell else 0,
            "DefaultUid": request.default_uid,
            "Flags": process_flags(request),
        },
    }
