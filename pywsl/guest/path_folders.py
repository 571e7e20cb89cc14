"""The host PATH folders inside a distribution (WSL's ``appendWindowsPath``).

For each folder of the caller's host ``PATH`` (WSL's ``NtPath``) a launch appends
``<PATH_FOLDER>/<escaped host folder>`` to the distribution's own ``PATH``: a link to a
*generation* folder named after the host folder's device, inode and modification time, which
holds one link to the interop launcher per executable of the host folder (links followed as the
host follows them, through the host view at :data:`HOST_VIEW`). A launch costs one ``stat`` and
one ``readlink`` per folder; only a changed host folder is listed again, made aside and renamed
into place, so that concurrent launches never see half of one.

Generations come from, in this order: the instance's own (:data:`GENERATIONS`), the VM's
(:data:`VM_GENERATIONS`, made once per VM by ``vm_path_folders``: waited for while
:data:`BUILDING` is locked), one another process of the instance is making (waited for), or one
made here.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time

from pywsl.guest import guest_log
from pywsl.guest.file_locks import lock_within
from pywsl.guest.interop_paths import HOST_PATH_FOLDER as PATH_FOLDER
from pywsl.guest.interop_paths import HOST_VIEW, LAUNCHER, RUNTIME_DIR, escape_folder
from pywsl.lean_context import suppress

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "BUILDING",
    "GENERATIONS",
    "VM_GENERATIONS",
    "candidate_folders",
    "folder_identity",
    "generate",
    "generation_name",
    "host_path_folders",
    "real_host_folder",
    "remove_tree",
]

log = guest_log.getLogger("pywsl.interop")

MAX_PATH_FOLDERS = 64
MAX_FOLDER_ENTRIES = 20000
BUILDER_WAIT = 2.0  # s a launch waits for another process making the same host PATH folder
GENERATIONS = PATH_FOLDER + "/.generations"
# The generations mini_init made for the VM's booting caller's PATH (`vm_path_folders`), shared
# read-only by every instance; ``BUILDING`` is locked while they are being made.
VM_GENERATIONS = RUNTIME_DIR + "/vm-path"
BUILDING = ".building"


def candidate_folders(nt_path: str) -> list[str]:
    """The host folders of the host ``PATH`` ``nt_path`` that can have a folder inside: absolute,
    normalised, each once, in order."""
    folders: list[str] = []
    for host_folder in nt_path.split(":"):
        if host_folder.startswith("/") and "\0" not in host_folder:
            host_folder = os.path.normpath(host_folder)
            if host_folder not in folders:
                folders.append(host_folder)
    return folders


def host_path_folders(nt_path: str, stop: Callable[[], bool] | None = None) -> list[str]:
    """The folders inside that stand for the host ``PATH`` ``nt_path`` (made or refreshed here).

    Only absolute host folders that exist and can be listed count; at most ``MAX_PATH_FOLDERS``.
    ``stop`` (asked before each folder) ends the work early: the folders made so far are returned.
    """
    folders: list[str] = []
    for host_folder in candidate_folders(nt_path):
        if len(folders) >= MAX_PATH_FOLDERS or (stop is not None and stop()):
            break
        inside = PATH_FOLDER + "/" + escape_folder(host_folder)
        try:
            _refresh(host_folder, inside)
        except OSError as error:
            log.debug("interop: host folder %s skipped: %s", host_folder, error)
            continue
        folders.append(inside)
    return folders


def generation_name(host_folder: str, view: str | None = None) -> str:
    """The name of the generation of `host_folder` as it is now (seen at `view` + the folder):
    ``<escaped folder>@<device>-<inode>-<modification time>``."""
    info = os.stat((HOST_VIEW if view is None else view) + host_folder)
    if not stat.S_ISDIR(info.st_mode):
        raise OSError(errno.ENOTDIR, "not a folder")
    return f"{escape_folder(host_folder)}@{info.st_dev:x}-{info.st_ino:x}-{info.st_mtime_ns:x}"


def folder_identity(generation: str) -> str:
    """What of a generation's name (or a path ending in one) names the real host folder as it
    is now: the same for every name of that folder (``/bin`` and ``/usr/bin``)."""
    return generation.rpartition("@")[2]


def _refresh(host_folder: str, inside: str) -> None:
    generation = generation_name(host_folder)
    target = f"{GENERATIONS}/{generation}"
    with suppress(OSError):
        # This folder's generation, or the same folder's under another name (`/bin`, `/usr/bin`).
        if folder_identity(os.readlink(inside)) == folder_identity(generation):
            return
    if not os.path.isdir(target):
        target = _generation_of_same_folder(GENERATIONS, generation) or target
    if not os.path.isdir(target):
        target = _vm_generation(generation) or target
    if not os.path.isdir(target):
        _wait_for_builder(target)
    if not os.path.isdir(target):
        folder_fd = os.open(GENERATIONS, _FOLDER_FLAGS)
        try:
            generate(real_host_folder(host_folder), generation, folder_fd)
        finally:
            os.close(folder_fd)
    temporary = f"{inside}.{os.getpid()}"
    with suppress(FileNotFoundError):
        os.unlink(temporary)
    os.symlink(target, temporary)
    os.rename(temporary, inside)


def _vm_generation(generation: str) -> str | None:
    """The VM's generation of that folder (`vm_path_folders`), once mini_init's builder is done
    (waited for at most `BUILDER_WAIT` s); None when it has none."""
    try:
        lock = os.open(f"{VM_GENERATIONS}/{BUILDING}", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None  # no VM generations in this instance
    try:
        if not lock_within(lock, fcntl.LOCK_SH, BUILDER_WAIT, 0.001):
            return None
    finally:
        os.close(lock)
    target = f"{VM_GENERATIONS}/{generation}"
    return target if os.path.isdir(target) else _generation_of_same_folder(VM_GENERATIONS, generation)


def real_host_folder(host_folder: str, view: str | None = None) -> str:
    """`host_folder` with its links resolved as the host resolves them (an absolute target is a
    host path, `..` leaves the folder a link led to): its entries' relative links are then
    followed from the folder they are really in. `/bin` on a merged-/usr host is `/usr/bin`, and
    its `../lib/x` is `/usr/lib/x`, as for the name `/usr/bin` (both names share a generation)."""
    view = HOST_VIEW if view is None else view
    pending = [part for part in host_folder.split("/") if part]
    real: list[str] = []
    links = 0
    while pending:
        name = pending.pop(0)
        if name == ".":
            continue
        if name == "..":
            if real:
                real.pop()
            continue
        try:
            target = os.readlink(view + "/" + "/".join([*real, name]))
        except OSError:  # not a link (or nothing there: the folder's own open says so)
            real.append(name)
            continue
        links += 1
        if links > _MAX_FOLDER_LINKS:
            raise OSError(errno.ELOOP, "too many links", host_folder)
        if target.startswith("/"):
            real = []
        pending[:0] = [part for part in target.split("/") if part]
    return "/" + "/".join(real)


def _wait_for_builder(target: str) -> None:
    """While another live process makes the generation `target` (its ``<target>.<pid>.new``),
    wait for it, at most `BUILDER_WAIT` seconds: listing the folder again would take as long."""
    folder, _, name = target.rpartition("/")
    deadline = time.monotonic() + BUILDER_WAIT
    while time.monotonic() < deadline:
        try:
            builders = [
                entry[len(name) + 1 : -len(".new")]
                for entry in os.listdir(folder)
                if entry.startswith(name + ".") and entry.endswith(".new")
            ]
        except OSError:
            return
        if not any(pid.isdigit() and _alive(int(pid)) for pid in builders) or os.path.isdir(target):
            return
        time.sleep(0.001)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid != os.getpid()


def _generation_of_same_folder(folder: str, generation: str) -> str | None:
    """A generation in `folder` made for another name of the same host folder (``/bin`` and
    ``/usr/bin`` when one is a link to the other): its links are the same, so it is shared
    rather than made again."""
    identity = folder_identity(generation)
    with suppress(OSError):
        for name in os.listdir(folder):
            if folder_identity(name) == identity and not name.endswith(".new"):
                return f"{folder}/{name}"
    return None


def generate(host_folder: str, generation: str, folder_fd: int, view: str | None = None) -> None:
    """The generation `generation` in the folder `folder_fd`: a link to the launcher for each
    executable of the host folder (seen at `view` + the folder), made aside and renamed."""
    building = f"{generation}.{os.getpid()}.new"
    os.mkdir(building, 0o755, dir_fd=folder_fd)
    try:
        _fill(host_folder, building, folder_fd, view)
    except OSError:
        remove_tree(building, folder_fd)
        raise
    try:
        os.rename(building, generation, src_dir_fd=folder_fd, dst_dir_fd=folder_fd)
    except OSError as error:
        remove_tree(building, folder_fd)
        if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise  # else another launch made the same generation first


def _fill(host_folder: str, building: str, folder_fd: int, view: str | None) -> None:
    """The links in ``building`` (in `folder_fd`): the host folder is opened once and its entries
    are looked at relative to it (the entry's type from the listing tells a folder and a link
    without a ``stat``); each link is made relative to ``building``."""
    building_fd = os.open(building, _FOLDER_FLAGS, dir_fd=folder_fd)
    try:
        folder = _HostFolder(host_folder, view)
        try:
            with os.scandir(folder.fd) as entries:
                count = 0
                for entry in entries:
                    if count >= MAX_FOLDER_ENTRIES:
                        break
                    try:
                        if not folder.executable(entry):
                            continue
                        os.symlink(LAUNCHER, entry.name, dir_fd=building_fd)
                        count += 1
                    except OSError:
                        continue
        finally:
            os.close(folder.fd)
    finally:
        os.close(building_fd)


_FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_MAX_LINK_STEPS = 16
_MAX_FOLDER_LINKS = 40  # the kernel's limit on the links of one path


class _HostFolder:
    """A host folder opened through the host view, and what was learnt of host paths while its
    entries were looked at, so that links sharing a target (``/etc/alternatives/...``) walk it
    once: a host path's step is its answer (an executable file or not; False as well for what
    cannot be looked at) or, for a link, its target's host path."""

    def __init__(self, host_folder: str, view: str | None = None) -> None:
        self.view = HOST_VIEW if view is None else view
        self.fd = os.open(self.view + host_folder, _FOLDER_FLAGS)
        self.folder = host_folder
        self.prefix = os.path.join(host_folder, "")  # + a name: os.path.join(host_folder, name)
        self.steps: dict[str, str | bool] = {}

    def executable(self, entry: os.DirEntry[str]) -> bool:
        """Is the entry a file with an execute bit? Links are followed as the host would (at most
        16 steps): an absolute target is a host path, looked up in the host view too. The
        listing's type of an entry saves its ``lstat`` for a folder and a link."""
        if entry.is_dir(follow_symlinks=False):
            return False  # (a mount point on a folder is a folder as well)
        if entry.is_symlink():
            try:
                target = os.readlink(entry.name, dir_fd=self.fd)
            except OSError:
                return False
            self.steps[self.prefix + entry.name] = self._following(self.folder, target)
        else:
            mode = entry.stat(follow_symlinks=False).st_mode
            if not stat.S_ISLNK(mode):  # (one made since the listing is followed)
                return stat.S_ISREG(mode) and bool(mode & 0o111)
        return self._walk(self.prefix + entry.name)

    def _walk(self, host_path: str) -> bool:
        steps = self.steps
        for _ in range(_MAX_LINK_STEPS):  # a step: one lstat, and one readlink for a link
            step = steps.get(host_path)
            if step is None:
                step = steps[host_path] = self._step(host_path)
            if isinstance(step, bool):
                return step
            host_path = step
        return False

    def _step(self, host_path: str) -> str | bool:
        name = host_path[len(self.prefix) :] if host_path.startswith(self.prefix) else ""
        try:
            if name and "/" not in name:  # in this folder
                info = os.lstat(name, dir_fd=self.fd)
                if not stat.S_ISLNK(info.st_mode):
                    return stat.S_ISREG(info.st_mode) and bool(info.st_mode & 0o111)
                return self._following(self.folder, os.readlink(name, dir_fd=self.fd))
            info = os.lstat(self.view + host_path)
            if not stat.S_ISLNK(info.st_mode):
                return stat.S_ISREG(info.st_mode) and bool(info.st_mode & 0o111)
            return self._following(os.path.dirname(host_path), os.readlink(self.view + host_path))
        except OSError:
            return False

    def _following(self, folder: str, target: str) -> str:
        """The host path a link in ``folder`` (a normal path) to ``target`` leads to."""
        if "/" in target or target in (".", ".."):
            return os.path.normpath(os.path.join(folder, target))
        return self.prefix + target if folder == self.folder else os.path.join(folder, target)


def remove_tree(name: str, folder_fd: int) -> None:
    """Remove the folder `name` of `folder_fd` and the links in it."""
    with suppress(OSError):
        fd = os.open(name, _FOLDER_FLAGS, dir_fd=folder_fd)
        try:
            for entry in os.listdir(fd):
                with suppress(OSError):
                    os.unlink(entry, dir_fd=fd)
        finally:
            os.close(fd)
        os.rmdir(name, dir_fd=folder_fd)
