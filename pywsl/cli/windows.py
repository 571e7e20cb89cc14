"""The disk-image verbs: on Windows the installed WslService's, on Linux the qemu backend's.

On Windows the session is WSL's own service (`pywsl.api.com`), whose distributions live in disk
images: `--mount`, `--unmount`, `--import-in-place`, `--manage --resize/--set-sparse`, `--import
--vhd`, `--export --vhd` and `--set-version` reach it as wsl.exe calls it (`WslClient.cpp`: `Mount`,
`Unmount`, `ImportDistributionInplace`, `Manage`, `SetVersion`), with its checks, texts and exit
statuses. On Linux the same verbs reach pywsl's own session, which does them in the qemu
backend's VM (distributions on disk images) and refuses them with the namespaces backend.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

from pywsl.cli import messages
from pywsl.cli.context import current_session
from pywsl.cli.report import fail, print_success

if TYPE_CHECKING:
    from pywsl.api.com.session import ComUserSession

__all__ = [
    "DISK_MOUNT_FAILED_STATUS",
    "created_folder",
    "import_in_place_command",
    "mount_command",
    "on_windows",
    "parse_bool",
    "parse_partition",
    "parse_size",
    "unmount_command",
]

DISK_MOUNT_FAILED_STATUS = 1  # wsl.exe's exit status for a disk attached but not mounted
_ALREADY_ATTACHED = frozenset({"WSL_E_DISK_ALREADY_ATTACHED", "WSL_E_USER_VHD_ALREADY_ATTACHED"})


def on_windows() -> bool:
    """Whether the session is the installed WslService (the command line runs on Windows)."""
    return sys.platform == "win32"


def _stdout(text: str) -> None:
    """A verb's result text: wsl.exe prints the disk messages on stdout."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _service_session() -> ComUserSession:
    """The command line's session, which on Windows is the installed WslService."""
    return cast("ComUserSession", current_session())


def _unquoted(path: str) -> str:
    """wsl.exe's `UnquotePath`: a path given inside double quotes, without them."""
    if len(path) >= 2 and path.startswith('"') and path.endswith('"'):
        return path[1:-1]
    return path


def parse_size(text: str) -> int:
    """wsl.exe's `SizeString`: bytes from a memory string (`10GB`, `512M`, `1048576`)."""
    from pywsl.wire.config_format import parse_memory_string

    size = parse_memory_string(text)
    if size is None:
        raise fail("E_INVALIDARG", messages.INVALID_SIZE.format(value=text))
    return size


def parse_bool(text: str) -> bool:
    """wsl.exe's `ParsedBool`: `true`/`false` in any case, or `1`/`0`."""
    from pywsl.wire.config_format import parse_bool as parse

    value = parse(text)
    if value is None:
        raise fail("E_INVALIDARG", messages.INVALID_BOOLEAN.format(value=text))
    return value


def parse_partition(text: str | None) -> int:
    """`--partition N` (0, the whole disk, when absent): a non-negative 32-bit integer."""
    if text is None:
        return 0
    digits = text.strip()
    if not digits.isdigit() or not digits.isascii() or int(digits) > 0xFFFFFFFF:
        raise fail("E_INVALIDARG", messages.INVALID_INTEGER.format(value=text))
    return int(digits)


def mount_command(
    disk: str,
    vhd: bool,
    bare: bool,
    name: str | None,
    fs_type: str | None,
    options: str | None,
    partition: str | None,
) -> int:
    """`--mount`: `AttachDisk`, then (unless `--bare`) `MountDisk`. A disk already attached is
    mounted again (one more partition); a failed mount after the attach is exit status 1."""
    from pywsl.api.errors import WslError

    index = parse_partition(partition)
    path = os.path.abspath(_unquoted(disk)) if vhd else _unquoted(disk)
    session = current_session()
    try:
        session.attach_disk(path, vhd=vhd)
    except WslError as error:
        if bare or error.code not in _ALREADY_ATTACHED:
            raise
    if bare:
        print_success()
        return 0
    mounted, failure = _mount(path, vhd=vhd, partition=index, name=name, fs_type=fs_type, options=options)
    if failure is not None:
        _stdout(messages.DISK_MOUNT_FAILED.format(error=failure, disk=path))
        return DISK_MOUNT_FAILED_STATUS
    _stdout(messages.DISK_MOUNTED.format(name=mounted, disk=path))
    return 0


def _mount(path: str, **options: Any) -> tuple[str, str | None]:
    """`MountDisk` of an attached disk: (the name under /mnt/wsl, None), or ("", why it failed).
    WslService reports a failed mount as a status; pywsl's session as `WSL_E_DISK_MOUNT_FAILED`."""
    from pywsl.api.errors import WslError

    if on_windows():
        status = _service_session().mount_disk_status(path, **options)
        return status.mount_name, os.strerror(-status.result) if status.result != 0 else None
    try:
        return current_session().mount_disk(path, **options), None
    except WslError as error:
        if error.code != "WSL_E_DISK_MOUNT_FAILED":
            raise
        return "", error.message


def unmount_command(disk: str | None) -> int:
    """`--unmount [DISK]`: `DetachDisk` (every disk without one); a path the service does not know
    is tried again as an absolute path, as wsl.exe does."""
    from pywsl.api.errors import WslError
    from pywsl.cli.report import FAILURE_EXIT_STATUS

    if not on_windows():
        return _unmount_here(disk)
    session = _service_session()
    try:
        status = session.detach_disk_status(disk)
    except WslError as error:
        if error.code != "ERROR_FILE_NOT_FOUND" or disk is None:
            raise
        status = session.detach_disk_status(os.path.abspath(_unquoted(disk)))
    if status.result != 0:
        _stdout(messages.DETACH_FAILED.format(error=os.strerror(-status.result)))
        return FAILURE_EXIT_STATUS
    print_success()
    return 0


def _unmount_here(disk: str | None) -> int:
    """`--unmount [DISK]` with pywsl's own session; a relative path is tried as an absolute one."""
    from pywsl.api.errors import WslError

    session = current_session()
    try:
        session.detach_disk(disk)
    except WslError as error:
        if error.code != "ERROR_FILE_NOT_FOUND" or disk is None or os.path.isabs(_unquoted(disk)):
            raise
        session.detach_disk(os.path.abspath(_unquoted(disk)))
    print_success()
    return 0


def import_in_place_command(distro: str, vhd_path: str) -> int:
    """`--import-in-place NAME VHD`: register the disk image where it lies (an absolute path)."""
    current_session().import_distribution_inplace(distro, os.path.abspath(vhd_path))
    print_success()
    return 0


@contextlib.contextmanager
def created_folder(location: str) -> Iterator[str]:
    """wsl.exe's install folder for `--import`: the absolute path, created if missing (one level,
    `CreateDirectoryW`) and removed again when the import fails."""
    from pywsl.api.errors import from_os_error

    path = os.path.abspath(location)
    try:
        os.mkdir(path)
        created = True
    except FileExistsError:
        created = False
    except OSError as error:
        raise from_os_error(error, context="Wsl") from None
    try:
        yield path
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                os.rmdir(path)
        raise
