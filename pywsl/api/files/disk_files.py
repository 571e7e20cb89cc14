"""Disk images in a distribution's folder (the ``qemu`` backend), touched with the user's rights.

A distribution on a disk keeps its root filesystem in an ext4 image in its folder, as WSL keeps
``ext4.vhdx``: a new one is a sparse raw image, ``ext4.img``, of ``[wsl2] defaultVhdSize`` (WSL's
1 TB: only what is written takes space), formatted and filled by the VM. An imported VHD or VHDX
keeps its format and its name (QEMU reads and writes both). The host never mounts an image: the
VM's kernel does, from a descriptor opened here.

Every file is reached as ``RootfsFolders.open_folder`` reaches the folder (the user's, without
links), then opened in it with ``O_NOFOLLOW`` and the user's rights, and checked to be a regular
file of the user's; the VM gets the descriptor. Converting to another format (``--export
--vhd``) runs ``qemu-img`` as the user, on descriptors.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from pywsl.api.credentials import acting_as
from pywsl.api.errors import WslError
from pywsl.vm.disk_image import disk_format

if TYPE_CHECKING:
    from pywsl.api.files.rootfs_folder import RootfsFolders

__all__ = ["NEW_DISK_NAME", "DiskFiles", "image_name_for_import", "vhd_target_format"]

NEW_DISK_NAME = "ext4.img"  # a new distribution's disk: sparse raw
MIN_DISK_SIZE = 64 * 1024 * 1024
COPY_CHUNK = 16 * 1024 * 1024  # WSL's relay buffer
QEMU_IMG_TIMEOUT = 3600.0
_FILE_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC
VHD_OPTIONS = "subformat=dynamic"  # qemu-img's options for the VHDX or VHD it writes


def image_name_for_import(source_name: str) -> str:
    """The file name a VHD imported with ``--vhd`` keeps in the distribution's folder (WSL keeps
    the source's name; one from a pipe is ``ext4.vhdx``)."""
    name = os.path.basename(source_name)
    if disk_format(name) == "raw":
        raise WslError("E_INVALIDARG", "A VHD must be a .vhd or .vhdx file.")
    return name


def vhd_target_format(target: str | os.PathLike[str] | None) -> tuple[str, str]:
    """``qemu-img``'s output format and options for an export to ``target`` (.vhdx by default)."""
    driver = disk_format(os.fspath(target)) if target is not None else "raw"
    return (driver if driver != "raw" else "vhdx"), VHD_OPTIONS


class DiskFiles:
    """The disk images in one user's distribution folders."""

    def __init__(self, folders: RootfsFolders) -> None:
        self.folders = folders

    @contextlib.contextmanager
    def _folder(self, base_path: Path) -> Iterator[int]:
        fd = self.folders.open_folder(base_path)
        try:
            yield fd
        finally:
            os.close(fd)

    def create(self, base_path: Path, name: str, size: int, *, allocate: bool = False) -> None:
        """A new, empty image of ``size`` bytes, mode 0600: sparse (nothing allocated), or with
        every block allocated at once (``allocate``, WSL's fixed-size disk)."""
        size = max(size, MIN_DISK_SIZE)
        with self._folder(base_path) as folder, acting_as(self.folders.identity):
            try:
                fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | _FILE_FLAGS, 0o600, dir_fd=folder)
            except FileExistsError:
                raise WslError(
                    "ERROR_FILE_EXISTS", "The supplied install location is already in use."
                ) from None
            try:
                os.ftruncate(fd, size)
                if allocate:
                    os.posix_fallocate(fd, 0, size)
            except OSError as error:
                os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=folder)
                raise WslError("E_FAIL", f"{base_path / name} cannot be made: {error.strerror}") from None
            os.close(fd)

    @contextlib.contextmanager
    def open(self, base_path: Path, name: str, *, writable: bool = True) -> Iterator[int]:
        """The image ``base_path/name``, opened with the user's rights (never through a link)."""
        path = base_path / name
        with self._folder(base_path) as folder:
            try:
                with acting_as(self.folders.identity):
                    fd = os.open(name, (os.O_RDWR if writable else os.O_RDONLY) | _FILE_FLAGS, dir_fd=folder)
            except FileNotFoundError:
                raise WslError(
                    "ERROR_PATH_NOT_FOUND", f"The distribution's disk {path} is missing."
                ) from None
            except OSError as error:
                reason = "is a symbolic link" if error.errno == errno.ELOOP else error.strerror
                raise WslError("E_ACCESSDENIED", f"{path}: {reason}") from None
        try:
            info = os.fstat(fd)
            identity = self.folders.identity
            if not stat.S_ISREG(info.st_mode) or (identity.uid != 0 and info.st_uid != identity.uid):
                raise WslError("E_ACCESSDENIED", f"{path} is not a disk image of {identity.name}'s.")
            yield fd
        finally:
            os.close(fd)

    def remove(self, base_path: Path, name: str) -> bool:
        """Delete the image (as the user); False when it is not there."""
        try:
            with self._folder(base_path) as folder, acting_as(self.folders.identity):
                os.unlink(name, dir_fd=folder)
        except FileNotFoundError:
            return False
        except WslError as error:
            if error.code == "ERROR_PATH_NOT_FOUND":
                return False
            raise
        return True

    def copy_in(self, source_fd: int, base_path: Path, name: str) -> None:
        """Copy an image from ``source_fd`` (a file or a pipe) into a new file ``base_path/name``,
        keeping holes where the source has them."""
        with self._folder(base_path) as folder, acting_as(self.folders.identity):
            try:
                target = os.open(
                    name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _FILE_FLAGS, 0o600, dir_fd=folder
                )
            except FileExistsError:
                raise WslError("ERROR_FILE_EXISTS", f"{base_path / name} exists already.") from None
        try:
            _copy_sparse(source_fd, target)
        finally:
            os.close(target)

    def convert(self, image_fd: int, source_format: str, output_fd: int, target: str | None) -> None:
        """Write the image as a VHDX (or VHD, by ``target``'s name) to ``output_fd`` with
        ``qemu-img convert``, run as the user on both descriptors."""
        output_format, options = vhd_target_format(target)
        identity = self.folders.identity
        argv = [
            "qemu-img",
            "convert",
            "-f",
            source_format,
            "-O",
            output_format,
            "-o",
            options,
            f"/proc/self/fd/{image_fd}",
            f"/proc/self/fd/{output_fd}",
        ]
        try:
            done = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                pass_fds=(image_fd, output_fd),
                user=identity.uid if identity.uid else None,
                group=identity.gid if identity.uid else None,
                extra_groups=list(identity.groups) if identity.uid else None,
                timeout=QEMU_IMG_TIMEOUT,
                check=False,
            )
        except FileNotFoundError:
            raise WslError(
                "WSL_E_EXPORT_FAILED", "Exporting a VHD needs qemu-img (Debian: qemu-utils)."
            ) from None
        except subprocess.TimeoutExpired:
            raise WslError("WSL_E_EXPORT_FAILED", "qemu-img did not finish.") from None
        if done.returncode != 0:
            raise WslError(
                "WSL_E_EXPORT_FAILED", done.stderr.decode(errors="replace").strip() or "qemu-img failed"
            )


def _copy_sparse(source: int, target: int) -> None:
    """Copy ``source`` to ``target``: data extents only for a regular file (holes stay holes), the
    whole stream otherwise."""
    info = os.fstat(source)
    if not stat.S_ISREG(info.st_mode):
        while chunk := os.read(source, COPY_CHUNK):
            os.write(target, chunk)
        return
    size = info.st_size
    offset = os.lseek(source, 0, os.SEEK_CUR)
    while offset < size:
        try:
            data = os.lseek(source, offset, os.SEEK_DATA)
        except OSError as error:
            if error.errno != errno.ENXIO:
                raise
            break  # only a hole is left
        hole = os.lseek(source, data, os.SEEK_HOLE)
        while data < hole:
            copied = os.copy_file_range(source, target, hole - data, data, data)
            if copied == 0:
                break
            data += copied
        offset = hole
    os.ftruncate(target, size)
