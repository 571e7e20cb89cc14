"""A distribution's folder and its `rootfs`: what WSL keeps as `BasePath` and the disk in it.

WSL's distribution is a VHD in the folder the registry names; here it is the directory
`<BasePath>/rootfs`, owned by the VM's root, in a folder of mode 0700 that belongs to the user (no
other host user reaches a root filesystem or its setuid files). `RootfsFolders` touches these
folders for one user: it reaches them with that user's rights (`credentials.acting_as`) through
descriptors, one component at a time without symbolic links, and checks their owner. It opens a
root filesystem for the VM as such a descriptor, creates an empty one for an import, removes one,
moves one to another folder (a rename, or across file systems a copy through the VM's export and
import workers) and exports one as a tar archive (`ExportDistribution`). The steps that need root's
rights (handing the new `rootfs` to the VM's root, deleting and moving the VM's files) work from
those verified descriptors and touch only what the user or the VM's ids own (`owned_tree.py`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

from pywsl.api.credentials import UserIdentity, acting_as, makedirs_as
from pywsl.api.errors import WslError, from_os_error, not_supported_by_backend
from pywsl.api.files.owned_tree import ForeignContent, TreeOwners, move_tree, remove_tree

if TYPE_CHECKING:
    from pywsl.api.files.transfer import Progress, Source
    from pywsl.api.session.registry import Registration

if TYPE_CHECKING:
    from pywsl.vm import CoreVm
    from pywsl.vm.disk_image import DiskImage

__all__ = [
    "EXPORT_FORMATS",
    "FOLDER_MODE",
    "IdMap",
    "OpenVm",
    "RootfsFolders",
    "export_compression",
    "with_details",
]

IdMap = list[tuple[int, int, int]]
OpenVm = Callable[[], AbstractContextManager["CoreVm"]]  # the user's VM, booted if needed
EXPORT_FORMATS = {"tar": "", "tar.gz": "gzip", "tgz": "gzip", "tar.xz": "xz", "txz": "xz"}
FOLDER_MODE = 0o700  # a distribution's folder: its owner only (root filesystems hold setuid files)
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
    install folder comes from .wslconfig, which WSL reads again each time. `uid_map` gives the uid
    map of the user's VM (by default the user's range, `idmap.maps_for_owner`): root deletes, moves
    and hands over only what the user or those ids own (`owned_tree.TreeOwners`).
    """

    def __init__(
        self,
        identity: UserIdentity,
        trusted_folders: Callable[[], Sequence[Path]],
        uid_map: Callable[[], IdMap] | None = None,
    ) -> None:
        self.identity = identity
        self._trusted_folders = trusted_folders
        self._uid_map = uid_map or self._default_uid_map

    def _default_uid_map(self) -> IdMap:
        from pywsl.vm.idmap import IdMapError, maps_for_owner

        try:
            return maps_for_owner(self.identity.uid, self.identity.gid)[0]
        except IdMapError:
            return []

    def owners(self) -> TreeOwners:
        """Whose files root may touch in this user's distribution folders."""
        return TreeOwners.for_vm(self.identity.uid, self._uid_map())

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

    def open_folder(self, base_path: Path) -> int:
        """`base_path` as an `O_PATH` descriptor, reached with the user's rights from its trusted
        anchor without links (`trusted_anchor`) and checked to belong to the user (root may use
        any folder). FileNotFoundError when it does not exist."""
        from pywsl.vm.directories import SymlinkInPath, open_beneath

        anchor, parts = self.trusted_anchor(base_path)
        try:
            with acting_as(self.identity):
                fd = open_beneath(anchor, parts)
        except SymlinkInPath as error:
            raise WslError(
                "E_ACCESSDENIED",
                f"{error.filename} is a symbolic link: the distribution's "
                f"folder {base_path} is not reached through links.",
            ) from None
        except FileNotFoundError:
            raise
        except OSError as error:
            raise WslError(
                "ERROR_PATH_NOT_FOUND",
                f"The distribution's folder {base_path} cannot be opened: {error.strerror}",
            ) from None
        owner = os.fstat(fd).st_uid
        if self.identity.uid != 0 and owner != self.identity.uid:
            os.close(fd)
            raise WslError(
                "E_ACCESSDENIED",
                f"{base_path} does not belong to {self.identity.name}: choose a folder of your own.",
            )
        return fd

    def _open_existing_folder(self, base_path: Path) -> int:
        try:
            return self.open_folder(base_path)
        except FileNotFoundError:
            raise WslError(
                "ERROR_PATH_NOT_FOUND", f"The distribution's folder {base_path} does not exist."
            ) from None

    @contextlib.contextmanager
    def open_rootfs(self, base_path: Path) -> Iterator[int]:
        """An open descriptor of `base_path/rootfs` for the VM, opened with the user's rights.

        Every component below the user's install, data or home folder (`trusted_anchor`) is
        opened with `O_NOFOLLOW`, one at a time, and the VM gets the descriptor, never the path:
        a folder swapped for a symlink after registration makes the start fail instead of
        leading the VM elsewhere. The distribution's folder must belong to the user, its `rootfs`
        to the VM's root or the user, on the folder's file system.
        """
        from pywsl.vm.directories import SymlinkInPath, open_child

        rootfs = base_path / "rootfs"
        parent_fd = self._open_existing_folder(base_path)
        try:
            try:
                with acting_as(self.identity):
                    rootfs_fd = open_child(parent_fd, "rootfs", str(rootfs))
            except FileNotFoundError:
                raise WslError("ERROR_PATH_NOT_FOUND", f"The root filesystem {rootfs} is missing.") from None
            except SymlinkInPath:
                raise WslError(
                    "E_ACCESSDENIED", f"{rootfs} is a symbolic link, not the distribution's root filesystem."
                ) from None
            except OSError as error:
                raise WslError("E_ACCESSDENIED", f"{rootfs}: {error.strerror}") from None
            try:
                self._check_top(parent_fd, rootfs_fd, rootfs)
            except BaseException:
                os.close(rootfs_fd)
                raise
        finally:
            os.close(parent_fd)
        try:
            yield rootfs_fd
        finally:
            os.close(rootfs_fd)

    def _check_top(self, parent_fd: int, rootfs_fd: int, rootfs: Path) -> None:
        info = os.fstat(rootfs_fd)
        if info.st_dev != os.fstat(parent_fd).st_dev:
            raise WslError(
                "E_ACCESSDENIED", f"{rootfs} is a mount point, not the distribution's root filesystem."
            )
        if not self.owners().may_be_top(info.st_uid):
            raise WslError(
                "E_ACCESSDENIED",
                f"{rootfs} belongs to uid {info.st_uid}, not to the root of "
                f"{self.identity.name}'s VM: it is not the distribution's root filesystem.",
            )

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
        """Create a distribution's folder, and the folders that lead to it (WSL's
        `CreateDirectoryDeep`), as the user, mode 0700; True if `base_path` itself was created.

        Below its trusted anchor (`trusted_anchor`) every folder is made through its parent's
        descriptor and opened without following links. An existing folder must belong to the user
        (root may use any) and is made 0700 too: nobody else may reach a root filesystem (its
        setuid files belong to the VM's ids)."""
        created = self._make_path(base_path)
        fd = self._open_existing_folder(base_path)
        try:
            with acting_as(self.identity):
                readable = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
            try:
                if (os.fstat(readable).st_dev, os.fstat(readable).st_ino) != (
                    os.fstat(fd).st_dev,
                    os.fstat(fd).st_ino,
                ):
                    raise WslError("E_ACCESSDENIED", f"{base_path} changed while it was being opened.")
                with acting_as(self.identity):
                    os.fchmod(readable, FOLDER_MODE)
            finally:
                os.close(readable)
        finally:
            os.close(fd)
        return created

    def _make_path(self, base_path: Path) -> bool:
        """`mkdir -p base_path` as the user, one descriptor at a time from the trusted anchor
        (which is made as it is when missing: the user's own install, data or home folder);
        True if `base_path` itself was created."""
        from pywsl.vm.directories import SymlinkInPath, open_child

        anchor, parts = self.trusted_anchor(base_path)
        shown = str(anchor)
        try:
            created = makedirs_as(self.identity, anchor, FOLDER_MODE)
            with acting_as(self.identity):
                fd = os.open(anchor, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    for name in parts:
                        shown = os.path.join(shown, name)
                        try:
                            os.mkdir(name, FOLDER_MODE, dir_fd=fd)
                            created = True
                        except FileExistsError:
                            created = False
                        child = open_child(fd, name, shown)
                        os.close(fd)
                        fd = child
                finally:
                    os.close(fd)
        except SymlinkInPath:
            raise WslError(
                "E_ACCESSDENIED",
                f"{shown} is a symbolic link: the distribution's folder "
                f"{base_path} is not reached through links.",
            ) from None
        except OSError as error:
            raise WslError(
                from_os_error(error).code,
                f"The distribution's folder {base_path} cannot be created: {shown}: {error.strerror}",
            ) from None
        return created

    def make_rootfs(self, folder: Path, uid_map: IdMap, gid_map: IdMap) -> None:
        """An empty `folder/rootfs`, made as the user and then given to the VM's root.

        The new folder is opened as the user (`O_NOFOLLOW`) and checked before root changes its
        owner through that descriptor: a directory of the user, on the folder's file system, empty.
        Whatever the user puts under the name meanwhile, root only ever hands over that one."""
        from pywsl.vm.directories import is_empty_directory
        from pywsl.vm.idmap import host_id

        rootfs = folder / "rootfs"
        parent_fd = self._open_existing_folder(folder)
        try:
            try:
                with acting_as(self.identity):
                    os.mkdir("rootfs", 0o700, dir_fd=parent_fd)
            except FileExistsError:
                raise WslError(
                    "ERROR_FILE_EXISTS", "The supplied install location is already in use."
                ) from None
            try:
                with acting_as(self.identity):
                    fd = os.open("rootfs", _DIRECTORY_FLAGS, dir_fd=parent_fd)
            except OSError as error:
                raise WslError(
                    "E_ACCESSDENIED", f"{rootfs} changed while it was being created: {error.strerror}"
                ) from None
            try:
                info = os.fstat(fd)
                if (
                    not stat.S_ISDIR(info.st_mode)
                    or info.st_uid != self.identity.uid
                    or info.st_dev != os.fstat(parent_fd).st_dev
                    or not is_empty_directory(fd)
                ):
                    with acting_as(self.identity), contextlib.suppress(OSError):
                        os.rmdir("rootfs", dir_fd=parent_fd)  # the user's own right: an empty folder
                    raise WslError(
                        "E_ACCESSDENIED",
                        f"{rootfs} was replaced while it was being created: "
                        "it is not the empty folder made for the distribution.",
                    )
                os.fchown(fd, host_id(uid_map, 0), host_id(gid_map, 0))
                os.fchmod(fd, 0o755)
            finally:
                os.close(fd)
        finally:
            os.close(parent_fd)

    def remove_rootfs(self, base_path: Path) -> bool:
        """Delete `base_path/rootfs` (`owned_tree.remove_tree`); False when there is none.

        Content that belongs to neither the user nor the VM's ids, another file system, or a
        `rootfs` that is not the folder made for the distribution is left in place and reported
        (E_ACCESSDENIED)."""
        try:
            parent_fd = self.open_folder(base_path)
        except FileNotFoundError:
            return False
        try:
            return remove_tree(parent_fd, "rootfs", self.owners(), str(base_path / "rootfs"))
        except ForeignContent as error:
            raise WslError(
                "E_ACCESSDENIED",
                f"{error.strerror} Remove them as root (or put the "
                "distribution's folder back), then try again.",
            ) from None
        except NotADirectoryError as error:
            raise WslError(
                "E_ACCESSDENIED", f"{error.filename}: {error.strerror}; it was left in place."
            ) from None
        except FileNotFoundError as error:
            # Moved away while it was being removed: reported like a folder that cannot be reached.
            raise WslError(
                "ERROR_PATH_NOT_FOUND",
                f"{error.filename or base_path / 'rootfs'} disappeared while it was being removed.",
            ) from None
        finally:
            os.close(parent_fd)

    def remove_files(self, registration: Registration, *, only_created_folder: bool = False) -> None:
        """WSL's `_DeleteDistribution`: delete a distribution's root filesystem, then its folder
        when that is left empty (`remove_empty_folder`). With `only_created_folder` (a failed
        import) the folder goes only if pywsl created it: a folder the user gave stays. A
        distribution on a disk has its image deleted instead (as the user)."""
        if registration.on_disk:
            from pywsl.api.files.disk_files import DiskFiles

            DiskFiles(self).remove(registration.base_path, registration.vhd_file_name)
        else:
            self.remove_rootfs(registration.base_path)
        if registration.created_base_path or not only_created_folder:
            self.remove_empty_folder(registration.base_path)

    def remove_empty_folder(self, folder: Path) -> bool:
        """Remove the distribution's folder `folder` if it is empty; True if it was removed.

        The folder is reached as `open_folder` does (the user's, without links) and removed as the
        user through its parent's descriptor, only while its name still names that folder. A
        folder that is not empty, belongs to somebody else, is a trusted folder itself (the user's
        home, data or install folder) or cannot go for another reason stays, silently, as in WSL.
        """
        from pywsl.vm.directories import open_beneath

        anchor, parts = self.trusted_anchor(folder)
        if not parts:
            return False
        try:
            fd = self.open_folder(folder)
        except (OSError, WslError):
            return False
        try:
            expected = os.fstat(fd)
            with acting_as(self.identity):
                parent_fd = open_beneath(anchor, parts[:-1])
                try:
                    current = os.stat(parts[-1], dir_fd=parent_fd, follow_symlinks=False)
                    if (current.st_dev, current.st_ino) != (expected.st_dev, expected.st_ino):
                        return False
                    os.rmdir(parts[-1], dir_fd=parent_fd)
                finally:
                    os.close(parent_fd)
        except OSError:
            return False
        finally:
            os.close(fd)
        return True

    def rename_rootfs(self, source_base: Path, target_base: Path) -> bool:
        """Move `source_base/rootfs` into `target_base` by a rename (`owned_tree.move_tree`); False
        across file systems."""
        source_fd = self._open_existing_folder(source_base)
        try:
            target_fd = self._open_existing_folder(target_base)
            try:
                move_tree(source_fd, target_fd, "rootfs", self.owners(), str(source_base / "rootfs"))
            finally:
                os.close(target_fd)
        except ForeignContent as error:
            raise WslError("E_ACCESSDENIED", error.strerror) from None
        except OSError as error:
            if error.errno != errno.EXDEV:
                raise
            return False
        finally:
            os.close(source_fd)
        return True

    def move_through_vm(
        self, source_base: Path, target_base: Path, uid_map: IdMap, gid_map: IdMap, open_vm: OpenVm
    ) -> None:
        """Move `source_base/rootfs` to another file system: a new root filesystem in `target_base`,
        a copy through the VM (export piped into import), then the old one deleted. A failure
        removes the new copy and leaves the old one."""
        self.make_rootfs(target_base, uid_map, gid_map)
        try:
            self.copy_rootfs(source_base, target_base, open_vm)
        except BaseException:
            self.remove_rootfs(target_base)
            raise
        self.remove_rootfs(source_base)

    def copy_rootfs(self, source_base: Path, target_base: Path, open_vm: OpenVm) -> None:
        """Copy `source_base/rootfs` into the empty `target_base/rootfs` through the VM."""
        from pywsl.api.files.transfer import StderrCollector  # not on the launch path

        stderr = StderrCollector()
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        failure: list[BaseException] = []
        with (
            open_vm() as exporter,
            open_vm() as importer,
            self.open_rootfs(source_base) as source,
            self.open_rootfs(target_base) as target,
        ):

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
            raise WslError(
                "WSL_E_EXPORT_FAILED",
                with_details("Copying the distribution failed.", str(failure[0]), details),
            )

    def export_rootfs(
        self,
        base_path: Path,
        target: Source,
        compression: str,
        progress: Progress | None,
        open_vm: OpenVm,
        *,
        open_root: Callable[[], AbstractContextManager[int | DiskImage]] | None = None,
    ) -> None:
        """Write `base_path/rootfs` (or what `open_root` opens: a distribution's disk) to `target`
        (a path, file object, descriptor or pipe) as a tar compressed with `compression`, through
        the VM's export worker. A file created for the export is removed again if it fails.
        `progress` gets the bytes written so far."""
        from pywsl.api import cancellation
        from pywsl.api.files.transfer import StderrCollector, open_export_target

        stderr = StderrCollector()
        try:
            with (
                open_export_target(target, self.identity, progress=progress) as output,
                open_vm() as vm,
                (open_root or (lambda: self.open_rootfs(base_path)))() as rootfs,
            ):
                try:
                    vm.export_rootfs(rootfs, output.fd, stderr.fd, compression, cancel=cancellation.current())
                except WslError:
                    raise
                except (OSError, ValueError) as error:
                    raise WslError(
                        "WSL_E_EXPORT_FAILED",
                        with_details("Exporting the distribution failed.", str(error), stderr.text()),
                    ) from None
                output.finish()
        finally:
            stderr.close_writer()
