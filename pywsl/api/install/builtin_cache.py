"""The service's store of built root filesystems: root's own folder, private, bounded in age.

The service builds a built-in distribution (`builtin_source.build_rootfs_archive`) for an
unprivileged user, as root. Everything of that build lives in one folder that only root can change,
`/var/cache/pywsl` (`$PYWSL_BUILD_CACHE` in the service's own environment moves it):

* the folder is 0700 and owned by root, and no folder above it can be changed by another user
  (each is root's, and not writable by group or others unless sticky, as `/tmp` is), so no path
  the build works on can be swapped by a user;
* every build gets its own 0700 folder in it, named and locked like an install's temporaries
  (`download.TemporaryFile`): removed when the build ends, or by the next build when the service
  died during one;
* a finished archive is kept as `<Name>-<suite>-<digest>.tar` (0600; the digest covers the vendor,
  suite and mirror), replaced atomically, and reused for `MAX_AGE_SECONDS`; an older one is removed
  and built again;
* debootstrap's log of a failed build stays in `logs/`.

A cached archive is handed out as a new read-only descriptor: the user's VM reads it, and can never
write to the copy other users get.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import time
from collections.abc import Mapping
from pathlib import Path

from pywsl.api.errors import WslError, from_os_error
from pywsl.api.install.apt_sources import host_apt_sources, mirror_for
from pywsl.api.install.builtin_catalog import BuiltinDistribution
from pywsl.api.install.builtin_source import BuildProgress, build_rootfs_archive
from pywsl.api.install.download import TemporaryFile, clean_stale_temporaries

__all__ = [
    "BUILD_CACHE_ENV",
    "DEFAULT_FOLDER",
    "MAX_AGE_SECONDS",
    "BuildCache",
    "check_root_only",
]

BUILD_CACHE_ENV = "PYWSL_BUILD_CACHE"
DEFAULT_FOLDER = Path("/var/cache/pywsl")
MAX_AGE_SECONDS = 7 * 24 * 3600
_CLOCK_SLACK_SECONDS = 300  # an archive dated further in the future than this is not trusted
_FORMAT = "1"  # bumped when the image a build makes changes, so that older archives are not reused


def _unsafe(path: Path, why: str) -> WslError:
    return WslError("E_ACCESSDENIED", f"The build folder {path} is not safe: {why}.")


def check_root_only(folder: Path) -> None:
    """Refuse `folder` unless only root can change it or any folder above it (no links on the way)."""
    current = Path(folder.anchor)
    for part in folder.parts[1:] if folder.is_absolute() else ():
        current = current / part
        try:
            info = os.lstat(current)
        except OSError as error:
            raise from_os_error(error, what=str(current)) from None
        if not stat.S_ISDIR(info.st_mode):
            raise _unsafe(folder, f"{current} is not a directory")
        if info.st_uid != 0:
            raise _unsafe(folder, f"{current} is owned by uid {info.st_uid}")
        if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
            raise _unsafe(folder, f"{current} is writable by other users")


class BuildCache:
    """Root's folder for building and keeping built-in root filesystems (see the module's text)."""

    def __init__(self, folder: Path = DEFAULT_FOLDER, *, max_age: float = MAX_AGE_SECONDS) -> None:
        if not folder.is_absolute():
            raise WslError("E_INVALIDARG", f"The build folder {folder} is not an absolute path.")
        self.folder = folder
        self.max_age = max_age

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> BuildCache:
        """The folder `$PYWSL_BUILD_CACHE` names (when absolute), else `/var/cache/pywsl`."""
        value = (os.environ if environ is None else environ).get(BUILD_CACHE_ENV, "")
        return cls(Path(value) if value and os.path.isabs(value) else DEFAULT_FOLDER)

    def prepare(self) -> None:
        """Create the folder (0700, root's) when missing; refuse one another user could change."""
        if os.geteuid() != 0:
            raise WslError("E_ACCESSDENIED", "Only the service, as root, builds distributions for users.")
        check_root_only(self.folder.parent)
        try:
            os.mkdir(self.folder, 0o700)
        except FileExistsError:
            pass
        except OSError as error:
            raise from_os_error(error, what=str(self.folder)) from None
        check_root_only(self.folder)
        fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.fchmod(fd, 0o700)
        finally:
            os.close(fd)

    def path_for(self, entry: BuiltinDistribution, mirror: str | None = None) -> Path:
        """Where the archive of `entry`, built from `mirror` (default: the host's), is kept."""
        source = mirror or mirror_for(entry.vendor, host_apt_sources())
        digest = hashlib.sha256("\0".join((_FORMAT, entry.vendor, entry.suite, source)).encode()).hexdigest()
        return self.folder / f"{entry.name}-{entry.suite}-{digest[:16]}.tar"

    def open_fresh(self, entry: BuiltinDistribution, mirror: str | None = None) -> int | None:
        """A read-only descriptor of the kept archive of `entry`, or None when there is none young
        enough (an expired one is removed)."""
        self.prepare()
        path = self.path_for(entry, mirror)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError:
            return None  # a link or something else root's folder should not hold: built again
        try:
            info = os.fstat(fd)
            age = time.time() - info.st_mtime
            usable = (
                stat.S_ISREG(info.st_mode)
                and info.st_uid == 0
                and not info.st_mode & 0o077
                and info.st_size > 0
                and -_CLOCK_SLACK_SECONDS <= age <= self.max_age
            )
        except OSError:
            usable = False
        if usable:
            return fd
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        return None

    def build(
        self, entry: BuiltinDistribution, *, progress: BuildProgress | None = None, mirror: str | None = None
    ) -> int:
        """Build `entry` in a private folder of its own, keep the archive, and return a read-only
        descriptor of it. The private folder is gone when this returns or raises."""
        self.prepare()
        clean_stale_temporaries(self.folder)
        lock = TemporaryFile(self.folder, f"build-{entry.name}", ".lock")
        private = lock.path.with_suffix("")
        try:
            os.mkdir(private, 0o700)
            archive = build_rootfs_archive(
                entry, private, progress=progress, mirror=mirror, log_dir=self.folder / "logs"
            )
            try:
                os.fchmod(archive.fd, 0o600)
                reader = os.open(f"/proc/self/fd/{archive.fd}", os.O_RDONLY | os.O_CLOEXEC)
                try:
                    os.replace(archive.path, self.path_for(entry, mirror))
                except BaseException:
                    os.close(reader)
                    raise
                return reader
            finally:
                archive.close()
        except OSError as error:
            raise from_os_error(error) from None
        finally:
            shutil.rmtree(private, ignore_errors=True)
            lock.close()
