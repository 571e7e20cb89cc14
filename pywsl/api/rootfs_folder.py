"""A distribution's folder and its `rootfs`: what WSL keeps as `BasePath` and the disk in it.

WSL's distribution is a VHD in the folder the registry names; here it is the directory
`<BasePath>/rootfs`, owned by the VM's root. `RootfsFolders` touches these folders for one user,
always with that user's rights (`credentials.acting_as`) so that root never follows a user's links:
it opens a root filesystem for the VM as a descriptor reached without symbolic links, creates an
empty one for an import, removes one, moves one to another folder (a rename, or across file
systems a copy through the VM's export and import workers) and exports one as a tar archive
(`ExportDistribution`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

from pywsl.api.credentials import (
    UserIdentity,
    acting_as,
    makedirs_as,
    open_directory_as,
    remove_tree,
    rename_tree,
)
from pywsl.api.errors import WslError, not_supported_by_backend
from pywsl.api.registry import Registration
from pywsl.api.transfer import Progress, Source, StderrCollector, open_export_target

if TYPE_CHECKING:
    from pywsl.vm import CoreVm

__all__ = ["EXPORT_FORMATS", "IdMap", "OpenVm", "RootfsFolders", "export_compression", "with_details"]

IdMap = list[tuple[int, int, int]]
OpenVm = Callable[[], AbstractContextManager["CoreVm"]]   # the user's VM, booted if needed
EXPORT_FORMATS = {"tar": "", "tar.gz": "gzip", "tgz": "gzip", "tar.xz": "xz", "txz": "xz"}
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def with_details(message: str, *details: str) -> str:
    """`message`, then every non-empty detail (an error, a tool's stderr) on its own line."""
    extra = [detail.strip() for detail in details if detail and detail.strip()]
    return "\n".join([message, *extra])


def export_compression(format: str) -> str:
    """The export worker's compression for an export `format` (tar, tar.gz/tgz, tar.xz/txz)."""
    if not isinstance(format, str):
        raise WslError("E_INVALIDARG", "The export format must be a string.")
    if format.lower() in ("vhd", "vhdx"):
        not_supported_by_backend("Exporting a VHD")
    compression = EXPORT_FORMATS.get(format.lower())
    if compression is None:
        raise WslError("E_INVALIDARG", f"Unknown export format {format!r}: use tar, tar.gz or tar.xz.")
    return compression


class RootfsFolders:
    """The distribution folders of one user.

    `trusted_folders` gives the folders a distribution's folder may be reached from through
    links (the user's install folder, data folder and home); it is asked on every use, since the
    install folder comes from .wslconfig, which WSL reads again each time.
    """

    def __init__(self, identity: UserIdentity, trusted_folders: Callable[[], Sequence[Path]]) -> None:
        self.identity = identity
        self._trusted_folders = trusted_folders

    def trusted_anchor(self, path: Path) -> tuple[Path, list[str]]:
        """The folder a distribution's folder is reached from, and the components below it.

        The anchor is the deepest trusted folder that holds `path`, or `/` for a folder elsewhere.
        The anchor itself is opened as it is; no component below it may be a symlink.
        """
        from pywsl.vm.directories import parts_below

        best: tuple[Path, list[str]] | None = None
        for anchor in self._trusted_folders():
            parts = parts_below(anchor, path)
            if parts is not None and (best is None or len(parts) < len(best[1])):
                best = (anchor, parts)
        if best is None:
            best = (Path("/"), parts_below("/", path) or [])
        return best

    @contextlib.contextmanager
    def open_rootfs(self, base_path: Path) -> Iterator[int]:
        """An open descriptor of `base_path/rootfs` for the VM, opened with the user's rights.

        Every component below the user's install, data or home folder (`trusted_anchor`) is
        opened with `O_NOFOLLOW`, one at a time, and the VM gets the descriptor, never the path:
        a folder swapped for a symlink after registration makes the start fail instead of
        leading the VM elsewhere. The distribution's folder must belong to the user.
        """
        from pywsl.vm.directories import SymlinkInPath, open_beneath, open_child

        anchor, parts = self.trusted_anchor(base_path)
        rootfs = base_path / "rootfs"
        try:
            with acting_as(self.identity):
                parent_fd = open_beneath(anchor, parts)
        except SymlinkInPath as error:
            raise WslError("E_ACCESSDENIED", f"{error.filename} is a symbolic link: the distribution's "
                           f"folder {base_path} is not reached through links.") from None
        except OSError as error:
            raise WslError("ERROR_PATH_NOT_FOUND", f"The distribution's folder {base_path} "
                           f"cannot be opened: {error.strerror}") from None
        try:
            owner = os.fstat(parent_fd).st_uid
            if self.identity.uid != 0 and owner != self.identity.uid:
                raise WslError("E_ACCESSDENIED", f"{base_path} does not belong to {self.identity.name}.")
            try:
                with acting_as(self.identity):
                    rootfs_fd = open_child(parent_fd, "rootfs", str(rootfs))
            except FileNotFoundError:
                raise WslError("ERROR_PATH_NOT_FOUND", f"The root filesystem {rootfs} is missing.") from None
            except SymlinkInPath:
                raise WslError("E_ACCESSDENIED", f"{rootfs} is a symbolic link, not the distribution's "
                               "root filesystem.") from None
            except OSError as error:
                raise WslError("E_ACCESSDENIED", f"{rootfs}: {error.strerror}") from None
        finally:
            os.close(parent_fd)
        try:
            yield rootfs_fd
        finally:
            os.close(rootfs_fd)

    def ensure_no_rootfs(self, base_path: Path) -> None:
        """An install location must not hold a root filesystem already (it would be replaced)."""
        with acting_as(self.identity):
            try:
                os.lstat(base_path / "rootfs")
            except (FileNotFoundError, NotADirectoryError):
                return
            except OSError as error:
                raise WslError("E_ACCESSDENIED", f"{base_path}: {error.strerror}") from None
        raise WslError("ERROR_FILE_EXISTS", "The supplied install location is already in use.")

    def make_folder(self, base_path: Path) -> bool:
        """Create a distribution's folder as the user; True if it was created. An existing folder
        must belong to the user (root may use any)."""
        if makedirs_as(self.identity, base_path, 0o755):
            return True
        if self.identity.uid != 0:
            with acting_as(self.identity):
                owner = os.stat(base_path).st_uid
            if owner != self.identity.uid:
                raise WslError("E_ACCESSDENIED", f"{base_path} does not belong to "
                               f"{self.identity.name}: choose a folder of your own.")
        return False

    def make_rootfs(self, folder: Path, uid_map: IdMap, gid_map: IdMap) -> None:
        """An empty `folder/rootfs`, made as the user and then given to the VM's root."""
        from pywsl.vm.idmap import host_id

        parent_fd = open_directory_as(self.identity, folder)
        try:
            try:
                with acting_as(self.identity):
                    os.mkdir("rootfs", 0o755, dir_fd=parent_fd)
            except FileExistsError:
                raise WslError("ERROR_FILE_EXISTS",
                               "The supplied install location is already in use.") from None
            fd = os.open("rootfs", _DIRECTORY_FLAGS, dir_fd=parent_fd)
            try:
                os.fchown(fd, host_id(uid_map, 0), host_id(gid_map, 0))
                os.fchmod(fd, 0o755)
            finally:
                os.close(fd)
        finally:
            os.close(parent_fd)

    def remove_files(self, registration: Registration) -> None:
        """Delete a distribution's root filesystem, and its folder if pywsl created it."""
        remove_tree(self.identity, registration.base_path, "rootfs")
        if registration.created_base_path:
            with acting_as(self.identity), contextlib.suppress(FileNotFoundError):
                try:
                    os.rmdir(registration.base_path)
                except OSError as error:
                    if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                        raise

    def remove_empty_folder(self, folder: Path) -> None:
        """Remove `folder` if it is empty; a folder that cannot go stays, silently."""
        with acting_as(self.identity), contextlib.suppress(OSError):
            os.rmdir(folder)

    def rename_rootfs(self, source_base: Path, target_base: Path) -> bool:
        """Move `source_base/rootfs` into `target_base` by a rename; False across file systems."""
        try:
            rename_tree(self.identity, source_base, target_base, "rootfs")
        except OSError as error:
            if error.errno != errno.EXDEV:
                raise
            return False
        return True

    def move_through_vm(self, source_base: Path, target_base: Path, uid_map: IdMap, gid_map: IdMap,
                        open_vm: OpenVm) -> None:
        """Move `source_base/rootfs` to another file system: a new root filesystem in `target_base`,
        a copy through the VM (export piped into import), then the old one deleted. A failure
        removes the new copy and leaves the old one."""
        self.make_rootfs(target_base, uid_map, gid_map)
        try:
            self.copy_rootfs(source_base, target_base, open_vm)
        except BaseException:
            remove_tree(self.identity, target_base, "rootfs")
            raise
        remove_tree(self.identity, source_base, "rootfs")

    def copy_rootfs(self, source_base: Path, target_base: Path, open_vm: OpenVm) -> None:
        """Copy `source_base/rootfs` into the empty `target_base/rootfs` through the VM."""
        stderr = StderrCollector()
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        failure: list[BaseException] = []
        with open_vm() as exporter, open_vm() as importer, \
                self.open_rootfs(source_base) as source, self.open_rootfs(target_base) as target:
            def export() -> None:
                try:
                    exporter.export_rootfs(source, write_end, stderr.fd, "")
                except BaseException as error:
                    failure.append(error)
                finally:
                    os.close(write_end)
            thread = threading.Thread(target=export, daemon=True)
            thread.start()
            try:
                importer.import_rootfs(target, read_end, stderr.fd)
            finally:
                os.close(read_end)
                thread.join()
        details = stderr.text()
        if failure:
            raise WslError("WSL_E_EXPORT_FAILED", with_details("Copying the distribution failed.",
                                                               str(failure[0]), details))

    def export_rootfs(self, base_path: Path, target: Source, compression: str, progress: Progress | None,
                      open_vm: OpenVm) -> None:
        """Write `base_path/rootfs` to `target` (a path, file object, descriptor or pipe) as a tar
        compressed with `compression`, through the VM's export worker. A file created for the
        export is removed again if it fails. `progress` gets the bytes written so far."""
        stderr = StderrCollector()
        try:
            with open_export_target(target, self.identity, progress=progress) as output, \
                    open_vm() as vm, self.open_rootfs(base_path) as rootfs:
                try:
                    vm.export_rootfs(rootfs, output.fd, stderr.fd, compression)
                except WslError:
                    raise
                except (OSError, ValueError) as error:
                    raise WslError("WSL_E_EXPORT_FAILED", with_details(
                        "Exporting the distribution failed.", str(error), stderr.text())) from None
                output.finish()
        finally:
            stderr.close_writer()
