"""`--import` and `--export`: a distribution from and to a tar archive (wsl.exe's
`ImportDistribution` and `ExportDistribution`).

Import: the install location is made absolute and created if missing, one level as wsl.exe's
`CreateDirectoryW` (`import_location`), and removed again if the import fails; a file named
`.vhd`/`.vhdx` is refused without `--vhd`; `-` reads the archive from stdin; the new distribution
does not run the out-of-box experience.
Export: `--format` is tar, tar.gz or tar.xz (values are case-sensitive, as in wsl.exe), or else
inferred from the file name; the file is created before the distribution is looked up, as wsl.exe
does; `-` writes to stdout; a partly written file is deleted when the export fails. The file is
opened here, with the caller's rights, and its descriptor handed to the session; on a terminal the
progress display watches that descriptor, or counts the bytes of an export to a pipe
(`pywsl.cli.counted_pipe`). Disk images (`--vhd`, `--format vhd`) need a disk-image backend.
On Windows the installed WslService has one: `--import --vhd` registers a disk image, `--export
--vhd` (or `--format vhd`) copies one, `--version` may be 1 or 2 (the user's default when absent),
and the folder is created as wsl.exe's `CreateDirectoryW` creates it (`pywsl.cli.windows`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, BinaryIO, TextIO

from pywsl.cli import messages
from pywsl.cli.context import current_session
from pywsl.cli.counted_pipe import CountedPipe
from pywsl.cli.operations import parse_version
from pywsl.cli.progress import FdWatcher, TransferProgress
from pywsl.cli.report import UsageFailure, invalid_usage, print_success

if TYPE_CHECKING:
    from pywsl.api.errors import WslError

__all__ = [
    "STDIO_NAME",
    "export_command",
    "export_format_for",
    "import_command",
    "stdio_source",
]

STDIO_NAME = "-"
_SUFFIX_FORMATS = ((".tar.gz", "tar.gz"), (".tgz", "tar.gz"), (".tar.xz", "tar.xz"), (".txz", "tar.xz"))
_VHD_SUFFIXES = (".vhd", ".vhdx")
# Flags Windows lacks (O_BINARY: its C runtime's binary mode).
_OPEN_FLAGS = getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)


def _os_error(error: OSError) -> WslError:
    from pywsl.api.errors import from_os_error

    return from_os_error(error, context="Wsl")


def _create_error(error: OSError) -> WslError:
    """A file that cannot be created: ENOENT there means a missing folder, which CreateFileW reports
    as ERROR_PATH_NOT_FOUND."""
    from pywsl.api.errors import WslError

    found = _os_error(error)
    if error.errno == errno.ENOENT:
        return WslError("ERROR_PATH_NOT_FOUND", found.message, context="Wsl")
    return found


def export_format_for(file_name: str, explicit: str | None) -> str:
    """The export format: `--format` when given, else from the file name (tar by default)."""
    if explicit is not None:
        return explicit
    lowered = file_name.lower()
    return next((fmt for suffix, fmt in _SUFFIX_FORMATS if lowered.endswith(suffix)), "tar")


def stdio_source(reading: bool) -> int | BinaryIO:
    """The descriptor behind sys.stdin (reading) or sys.stdout, or its byte buffer when it has none."""
    stream: TextIO = sys.stdin if reading else sys.stdout
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return stream.buffer


def _watch(
    source: int | BinaryIO, mode: str, display: TransferProgress
) -> contextlib.AbstractContextManager[object]:
    return FdWatcher(source, mode, display) if isinstance(source, int) else contextlib.nullcontext()


def _import_folder(location: str) -> contextlib.AbstractContextManager[str]:
    """wsl.exe's `CreateDirectoryW` of the install folder, removed again when the import fails."""
    from pywsl.cli.windows import created_folder, on_windows

    if on_windows():
        return created_folder(location)
    from pywsl.api.files.import_location import import_location

    return import_location(location)


def import_command(distro: str, location: str, file_name: str, version: str | None, vhd: bool) -> int:
    from pywsl.cli.windows import on_windows

    number = 0 if version is None else parse_version(version, allow_wsl1=on_windows())
    disk = {"vhd": True} if vhd else {}
    with _import_folder(location) as target:
        if not vhd and file_name != STDIO_NAME and file_name.lower().endswith(_VHD_SUFFIXES):
            raise UsageFailure(messages.PASS_VHD_FLAG)
        source: int | BinaryIO
        if file_name == STDIO_NAME:
            source = stdio_source(True)
        else:
            try:
                source = os.open(file_name, os.O_RDONLY | _OPEN_FLAGS)
            except OSError as error:
                raise _os_error(error) from None
        try:
            register: Any = current_session().register_distribution  # Windows': vhd= as well
            with TransferProgress(messages.IMPORT_PROGRESS) as display, _watch(source, "read", display):
                register(
                    distro,
                    source,
                    location=target,
                    version=number if on_windows() else 2,
                    run_oobe=False,
                    **disk,
                )
        finally:
            if file_name != STDIO_NAME and isinstance(source, int):
                os.close(source)
    print_success()
    return 0


@contextlib.contextmanager
def _export_sink(target: int | BinaryIO, display: TransferProgress) -> Iterator[int | BinaryIO]:
    """What the session writes to: the target itself (its size watched when it is a regular file),
    or, while a bar is drawn for a target without a size (a pipe), a pipe whose bytes are counted."""
    if not isinstance(target, int):
        yield target
        return
    from pywsl.cli.windows import on_windows

    if stat.S_ISREG(os.fstat(target).st_mode) or not display.drawing or on_windows():
        with FdWatcher(target, "write", display):
            yield target
        return
    with CountedPipe(target, display) as counted:
        yield counted.write_fd
    if counted.error is not None:
        raise _os_error(counted.error)


def export_command(distro: str, file_name: str, output_format: str | None, vhd: bool) -> int:
    """wsl.exe's order: the file is created (and deleted on failure) before the name is looked up."""

    fmt = export_format_for(file_name, output_format)
    if vhd and output_format == "tar.gz":  # wsl.exe: gzip and vhd together are a usage error
        raise invalid_usage()
    if vhd:
        fmt = "vhd"
    to_stdout = file_name == STDIO_NAME
    target: int | BinaryIO
    if to_stdout:
        sys.stdout.flush()
        target = stdio_source(False)
    else:
        try:
            target = os.open(file_name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _OPEN_FLAGS, 0o666)
        except OSError as error:
            raise _create_error(error) from None
    try:
        session = current_session()
        distro_id = session.get_distribution_id(distro)
        with TransferProgress(messages.EXPORT_PROGRESS) as display, _export_sink(target, display) as sink:
            session.export_distribution(distro_id, sink, format=fmt)
    except BaseException:
        if not to_stdout:
            with contextlib.suppress(OSError):
                os.unlink(file_name)
        raise
    finally:
        if isinstance(target, int) and not to_stdout:
            os.close(target)
    if not to_stdout:
        print_success()
    return 0
