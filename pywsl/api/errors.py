"""Errors of the user session: WSL's HRESULTs (`WSL_E_*` and the generic ones it uses) as one exception.

Every `ILxssUserSession` method in WSL fills an `LXSS_ERROR_INFO` with the failing HRESULT, a
user-facing message and an execution context (`Wsl/Service/RegisterDistro/...`); wsl.exe prints
the message and `Error code: <context>/<name of the HRESULT>`. `WslError` carries the same four
things and turns into a plain dict and back, so the service can send it over its socket.
"""

from __future__ import annotations

import contextvars
import errno
from collections.abc import Mapping

TYPE_CHECKING = False  # `typing` would cost a cold launch's boot its load
if TYPE_CHECKING:
    from types import TracebackType
    from typing import Any, NamedTuple, NoReturn
else:
    from pywsl.records import NamedTuple

__all__ = [
    "HRESULTS",
    "ErrorCode",
    "WslError",
    "code_for_hresult",
    "error_context",
    "from_os_error",
    "not_supported_by_backend",
]

_WSL_E_BASE = 0x80040300


def _win32(code: int) -> int:
    """HRESULT_FROM_WIN32."""
    return 0x80070000 | code


class ErrorCode(NamedTuple):
    """One HRESULT: its symbolic name, value and WSL's default user-facing text."""

    name: str
    hresult: int
    message: str


# The messages are the library's: they never advise command line options (the command line adds
# its own advice, as wsl.exe's texts have it: `pywsl.cli.report`).
_NO_DEFAULT_DISTRO = "pywsl has no installed distributions."

_TABLE: tuple[tuple[str, int, str], ...] = (
    ("WSL_E_DEFAULT_DISTRO_NOT_FOUND", _WSL_E_BASE + 0x01, _NO_DEFAULT_DISTRO),
    ("WSL_E_DISTRO_NOT_FOUND", _WSL_E_BASE + 0x02, "There is no distribution with the supplied name."),
    (
        "WSL_E_WSL1_NOT_SUPPORTED",
        _WSL_E_BASE + 0x03,
        "WSL1 is not supported with your current machine configuration.",
    ),
    ("WSL_E_VM_MODE_NOT_SUPPORTED", _WSL_E_BASE + 0x04, "The Legacy distribution does not support WSL 2."),
    (
        "WSL_E_TOO_MANY_DISKS_ATTACHED",
        _WSL_E_BASE + 0x05,
        "Too many virtual hard disks or physical disks are attached.",
    ),
    ("WSL_E_CONSOLE", _WSL_E_BASE + 0x06, "Unsupported console settings."),
    ("WSL_E_CUSTOM_KERNEL_NOT_FOUND", _WSL_E_BASE + 0x07, "The custom kernel was not found."),
    ("WSL_E_USER_NOT_FOUND", _WSL_E_BASE + 0x08, "User not found."),
    ("WSL_E_INVALID_USAGE", _WSL_E_BASE + 0x09, "Invalid command line."),
    ("WSL_E_EXPORT_FAILED", _WSL_E_BASE + 0x0A, "Exporting the distribution failed."),
    ("WSL_E_IMPORT_FAILED", _WSL_E_BASE + 0x0B, "Importing the distribution failed."),
    (
        "WSL_E_DISTRO_NOT_STOPPED",
        _WSL_E_BASE + 0x0C,
        "The operation could not be completed because the distribution's root filesystem is "
        "currently in use.",
    ),
    ("WSL_E_TTY_LIMIT", _WSL_E_BASE + 0x0D, "The maximum number of terminals has been reached."),
    (
        "WSL_E_CUSTOM_SYSTEM_DISTRO_ERROR",
        _WSL_E_BASE + 0x0E,
        "The custom system distribution failed to start.",
    ),
    (
        "WSL_E_LOWER_INTEGRITY",
        _WSL_E_BASE + 0x0F,
        "Cannot launch because another instance is running elevated.  "
        "Elevated and un-elevated instances are not permitted to run simultaneously.",
    ),
    (
        "WSL_E_HIGHER_INTEGRITY",
        _WSL_E_BASE + 0x10,
        "Cannot launch because another instance is running un-elevated.  "
        "Elevated and un-elevated instances are not permitted to run simultaneously.",
    ),
    ("WSL_E_FS_UPGRADE_NEEDED", _WSL_E_BASE + 0x11, "The distribution's filesystem needs an upgrade."),
    (
        "WSL_E_USER_VHD_ALREADY_ATTACHED",
        _WSL_E_BASE + 0x12,
        "A disk is already mounted, please unmount the disk before launching.",
    ),
    ("WSL_E_VM_MODE_INVALID_STATE", _WSL_E_BASE + 0x13, "The distribution is already the requested version."),
    (
        "WSL_E_VM_MODE_MOUNT_NAME_ALREADY_EXISTS",
        _WSL_E_BASE + 0x14,
        "A disk with that name is already mounted; please unmount the disk or choose a new name "
        "and try again.",
    ),
    (
        "WSL_E_ELEVATION_NEEDED_TO_MOUNT_DISK",
        _WSL_E_BASE + 0x15,
        "Administrator access is needed to mount a disk.",
    ),
    ("WSL_E_DISK_ALREADY_ATTACHED", _WSL_E_BASE + 0x18, "The disk is already attached."),
    ("WSL_E_DISK_ALREADY_MOUNTED", _WSL_E_BASE + 0x19, "That volume is already mounted inside WSL2."),
    ("WSL_E_DISK_MOUNT_FAILED", _WSL_E_BASE + 0x1A, "Mounting the disk failed."),
    ("WSL_E_DISK_UNMOUNT_FAILED", _WSL_E_BASE + 0x1B, "Unmounting the disk failed."),
    ("WSL_E_WSL2_NEEDED", _WSL_E_BASE + 0x1C, "This operation is only supported by WSL2."),
    (
        "WSL_E_VM_MODE_INVALID_MOUNT_NAME",
        _WSL_E_BASE + 0x1D,
        "The mount name cannot be empty, '.', '..', or contain '/'. Please retry with a valid mount name.",
    ),
    ("WSL_E_GUI_APPLICATIONS_DISABLED", _WSL_E_BASE + 0x1E, "GUI application support is disabled."),
    (
        "WSL_E_DISTRO_ONLY_AVAILABLE_FROM_STORE",
        _WSL_E_BASE + 0x1F,
        "This distribution is only available from the Microsoft Store.",
    ),
    ("WSL_E_WSL_MOUNT_NOT_SUPPORTED", _WSL_E_BASE + 0x20, "--mount is not supported on this machine."),
    (
        "WSL_E_WSL_OPTIONAL_COMPONENT_REQUIRED",
        _WSL_E_BASE + 0x21,
        "The Windows Subsystem for Linux optional component is not enabled.",
    ),
    ("WSL_E_VMSWITCH_NOT_FOUND", _WSL_E_BASE + 0x24, "The VmSwitch was not found."),
    ("WSL_E_VMSWITCH_NOT_SET", _WSL_E_BASE + 0x25, "Bridged networking requires wsl2.vmSwitch to be set."),
    ("WSL_E_NOT_A_LINUX_DISTRO", _WSL_E_BASE + 0x26, "The imported file is not a valid Linux distribution."),
    ("WSL_E_OS_NOT_SUPPORTED", _WSL_E_BASE + 0x27, "This operating system version is not supported."),
    ("WSL_E_INSTALL_PROCESS_FAILED", _WSL_E_BASE + 0x28, "The installation process failed."),
    ("WSL_E_INSTALL_COMPONENT_FAILED", _WSL_E_BASE + 0x29, "Installing a component failed."),
    ("WSL_E_PLUGIN_REQUIRES_UPDATE", _WSL_E_BASE + 0x2A, "A plugin requires a newer version."),
    ("WSL_E_DISK_MOUNT_DISABLED", _WSL_E_BASE + 0x2B, "Mounting disks is disabled by the computer policy."),
    ("WSL_E_WSL1_DISABLED", _WSL_E_BASE + 0x2C, "WSL1 is disabled by the computer policy."),
    (
        "WSL_E_VIRTUAL_MACHINE_PLATFORM_REQUIRED",
        _WSL_E_BASE + 0x2D,
        "The virtual machine platform is not available.",
    ),
    ("WSL_E_LOCAL_SYSTEM_NOT_SUPPORTED", _WSL_E_BASE + 0x2E, "Running WSL as local system is not supported."),
    (
        "WSL_E_DISK_CORRUPTED",
        _WSL_E_BASE + 0x2F,
        "The distribution failed to start because its virtual disk is corrupted.",
    ),
    (
        "WSL_E_DISTRIBUTION_NAME_NEEDED",
        _WSL_E_BASE + 0x30,
        "This distribution doesn't contain a default name.",
    ),
    ("WSL_E_INVALID_JSON", _WSL_E_BASE + 0x31, "Invalid JSON document."),
    ("WSL_E_VM_CRASHED", _WSL_E_BASE + 0x32, "The WSL2 Virtual Machine crashed."),
    ("E_INVALIDARG", 0x80070057, "The parameter is incorrect."),
    ("E_ACCESSDENIED", 0x80070005, "Access is denied."),
    ("E_NOTIMPL", 0x80004001, "Not implemented."),
    ("E_FAIL", 0x80004005, "Unspecified error."),
    ("E_UNEXPECTED", 0x8000FFFF, "Catastrophic failure."),
    ("E_ABORT", 0x80004004, "Operation aborted."),
    ("E_NOT_SET", _win32(1168), "Element not found."),
    (
        "E_ILLEGAL_STATE_CHANGE",
        0x8000000D,
        "An install, uninstall, or conversion is in progress for this distribution.",
    ),
    ("ERROR_FILE_NOT_FOUND", _win32(2), "The system cannot find the file specified."),
    ("ERROR_PATH_NOT_FOUND", _win32(3), "The system cannot find the path specified."),
    ("ERROR_NOT_SUPPORTED", _win32(50), "The request is not supported."),
    ("ERROR_FILE_EXISTS", _win32(80), "The file exists."),
    ("ERROR_INVALID_NAME", _win32(123), "The filename, directory name, or volume label syntax is incorrect."),
    ("ERROR_ALREADY_EXISTS", _win32(183), "Cannot create a file when that file already exists."),
    ("ERROR_DIR_NOT_EMPTY", _win32(145), "The directory is not empty."),
    ("ERROR_DISK_FULL", _win32(112), "There is not enough space on the disk."),
    ("ERROR_INVALID_DATA", _win32(13), "The data is invalid."),
    ("ERROR_VERSION_PARSE_ERROR", _win32(777), "The version string could not be parsed."),
    ("ERROR_CANCELLED", _win32(1223), "The operation was canceled by the user."),
    ("ERROR_SERVICE_NOT_ACTIVE", _win32(1062), "The service has not been started."),
    ("TRUST_E_BAD_DIGEST", 0x80096010, "The digital signature of the object did not verify."),
    ("RPC_E_DISCONNECTED", 0x80010108, "The object invoked has disconnected from its clients."),
    ("HCS_E_TERMINATED", 0x80370103, "The virtual machine has terminated."),
)

HRESULTS: Mapping[str, ErrorCode] = {name: ErrorCode(name, value, text) for name, value, text in _TABLE}
_BY_HRESULT: Mapping[int, ErrorCode] = {entry.hresult: entry for entry in HRESULTS.values()}

# The context of the code running now: the client's part ("Wsl") then the service's ("Service") then
# the operations entered, like WSL's nested ExecutionContext objects.
_CONTEXT: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("pywsl_error_context", default=())
_CLIENT_CONTEXT = ("Wsl", "Service")


def code_for_hresult(hresult: int) -> ErrorCode | None:
    """The known error with that HRESULT value, if any."""
    return _BY_HRESULT.get(hresult & 0xFFFFFFFF)


class WslError(Exception):
    """A failed `ILxssUserSession` call: `code` (e.g. "WSL_E_DISTRO_NOT_FOUND"), `hresult`,
    `message` (the text to show the user) and `context` (e.g. "Wsl/Service/RegisterDistro")."""

    def __init__(
        self, code: str, message: str | None = None, *, context: str = "", hresult: int | None = None
    ) -> None:
        known = HRESULTS.get(code)
        if hresult is None:
            if known is None:
                raise ValueError(f"unknown error code {code!r}: pass its hresult")
            hresult = known.hresult
        self.code = code
        self.hresult = hresult & 0xFFFFFFFF
        self.message = message if message is not None else (known.message if known else code)
        self.context = context
        super().__init__(self.message)

    @property
    def error_code(self) -> str:
        """What wsl.exe prints after "Error code: "."""
        return f"{self.context}/{self.code}" if self.context else self.code

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return (
            f"WslError({self.code!r}, {self.message!r}, context={self.context!r}, hresult={self.hresult:#x})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.to_dict(),))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly form, for the service's wire."""
        return {"code": self.code, "hresult": self.hresult, "message": self.message, "context": self.context}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WslError:
        """The inverse of `to_dict`; rejects anything that is not a well-formed error."""
        code = data.get("code")
        hresult = data.get("hresult")
        message = data.get("message")
        context = data.get("context", "")
        if not isinstance(code, str) or not code or len(code) > 128:
            raise ValueError("error: 'code' must be a non-empty string")
        if not isinstance(hresult, int) or isinstance(hresult, bool) or not 0 <= hresult <= 0xFFFFFFFF:
            raise ValueError("error: 'hresult' must be a 32-bit unsigned integer")
        if not isinstance(message, str):
            raise ValueError("error: 'message' must be a string")
        if not isinstance(context, str):
            raise ValueError("error: 'context' must be a string")
        return cls(code, message, context=context, hresult=hresult)


def _rebuild(data: Mapping[str, Any]) -> WslError:
    return WslError.from_dict(data)


class error_context:  # (used as a function: `with error_context("Name"):`)
    """Enter one operation of the execution context (WSL's `ExecutionContext(Context::Name)`).

    A `WslError` that leaves the block without a context gets the full path (`Wsl/Service/Name`
    for the outermost block); an `OSError` becomes a `WslError` on the way. (A class rather than
    `contextlib.contextmanager`: a cold launch's boot loads no `contextlib`.)
    """

    __slots__ = ("_name", "_path", "_token")

    def __init__(self, name: str) -> None:
        self._name = name
        self._path: tuple[str, ...] = ()
        self._token: contextvars.Token[tuple[str, ...]] | None = None

    def __enter__(self) -> None:
        outer = _CONTEXT.get()
        self._path = (*outer, self._name) if outer else (*_CLIENT_CONTEXT, self._name)
        self._token = _CONTEXT.set(self._path)

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        token, self._token = self._token, None
        if token is not None:
            _CONTEXT.reset(token)
        if isinstance(error, WslError):
            if not error.context:
                error.context = "/".join(self._path)
        elif isinstance(error, OSError):
            raise from_os_error(error, context="/".join(self._path)) from error


def from_os_error(error: OSError, *, context: str = "", what: str | None = None) -> WslError:
    """The HRESULT WSL would report for a failed file operation, with the OS's explanation."""
    mapping = {
        errno.ENOENT: "ERROR_FILE_NOT_FOUND",
        errno.ENOTDIR: "ERROR_PATH_NOT_FOUND",
        errno.EACCES: "E_ACCESSDENIED",
        errno.EPERM: "E_ACCESSDENIED",
        errno.ELOOP: "E_ACCESSDENIED",
        errno.EEXIST: "ERROR_FILE_EXISTS",
        errno.ENOTEMPTY: "ERROR_DIR_NOT_EMPTY",
        errno.ENOSPC: "ERROR_DISK_FULL",
        errno.EDQUOT: "ERROR_DISK_FULL",
        errno.ENAMETOOLONG: "ERROR_INVALID_NAME",
        errno.EINVAL: "E_INVALIDARG",
    }
    code = mapping.get(error.errno or 0, "E_FAIL")
    reason = error.strerror or str(error)
    target = what or error.filename
    message = f"{target}: {reason}" if target else reason
    return WslError(code, message, context=context)


def not_supported_by_backend(feature: str, *, context: str = "") -> NoReturn:
    """Raise the error for a disk-image operation, which a directory-based root filesystem cannot do."""
    raise WslError(
        "ERROR_NOT_SUPPORTED",
        f"{feature} is not supported by the namespaces backend: a distribution's root filesystem is a "
        "directory here, not a disk image. The qemu backend ([pywsl] backend = qemu) supports it.",
        context=context,
    )
