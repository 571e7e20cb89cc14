"""The install location of `--import`, which wsl.exe makes itself before it calls the service.

wsl.exe's `ImportDistribution` calls `CreateDirectoryW(installPath)`: one folder, whose parent must
exist (ERROR_PATH_NOT_FOUND otherwise; an existing folder is used as it is), and removes it again
(`RemoveDirectory`) when the import fails. The service itself makes any folder it is given, with
the folders that lead to it (`RegisterDistribution`'s `CreateDirectoryDeep`), which
`--install --location` and the Python API rely on.

This runs in the caller's process, with the caller's rights. The parent is opened once; the folder
is made through that descriptor, mode 0700 (nobody else may reach a root filesystem), and removed
through it only while its name still names the folder made here, and only when it is empty.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator

from pywsl.api.errors import WslError, from_os_error

__all__ = ["LOCATION_MODE", "import_location"]

LOCATION_MODE = 0o700
_PATH_ERRORS = (errno.ENOENT, errno.ENOTDIR)


def _path_error(error: OSError, path: str) -> WslError:
    if error.errno in _PATH_ERRORS:
        return WslError("ERROR_PATH_NOT_FOUND", context="Wsl")
    return from_os_error(error, context="Wsl", what=path)


@contextlib.contextmanager
def import_location(location: str | os.PathLike[str]) -> Iterator[str]:
    """The absolute install folder `location`, created (one level) when it is missing; a folder
    created here is removed again when the block fails."""
    path = os.path.abspath(os.fspath(location))
    parent, name = os.path.split(path)
    if not name:  # the root folder exists
        yield path
        return
    try:
        parent_fd = os.open(parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as error:
        raise _path_error(error, path) from None
    try:
        try:
            os.mkdir(name, LOCATION_MODE, dir_fd=parent_fd)
        except FileExistsError:
            yield path
            return
        except OSError as error:
            raise _path_error(error, path) from None
        try:
            made = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        except OSError as error:
            raise _path_error(error, path) from None
        try:
            yield path
        except BaseException:
            _remove_made(parent_fd, name, made)
            raise
    finally:
        os.close(parent_fd)


def _remove_made(parent_fd: int, name: str, made: os.stat_result) -> None:
    """rmdir `name` if it is still the folder `made` and empty; anything else stays."""
    with contextlib.suppress(OSError):
        current = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        if (current.st_dev, current.st_ino) == (made.st_dev, made.st_ino):
            os.rmdir(name, dir_fd=parent_fd)
