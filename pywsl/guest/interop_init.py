"""Interop inside a distribution: the client runtime, the interop socket, the host PATH folders.

WSL's init serves an interop socket (``/run/WSL/<pid>_interop``, named by ``WSL_INTEROP``),
registers ``/init`` as the binfmt interpreter of Windows executables, and links
``/usr/bin/wslpath`` to ``/init``. pywsl's init does the equivalent with the host's interpreter:

* **Runtime**: a read-only copy of the VM's host tree (nosuid, nodev, the host's ``proc``,
  ``sys`` and ``dev`` masked, see ``host_view``) at :data:`HOST_VIEW`. :data:`LAUNCHER` is a
  link to the native client (``interop_native``) there when it is static, else a ``#!/bin/sh``
  script that runs the host's dynamic loader with ``--library-path`` on it, or, without one, on
  the host's interpreter with ``interop_client`` from pywsl's own folder in that view
  (:data:`PYTHON_LAUNCHER`, which the native client runs for what it leaves to Python): a
  distribution needs nothing at all, or ``/bin/sh``. ``/usr/bin/wslpath`` is a link to the launcher
  when the distribution has none (WSL links it to ``/init``).
* **Interop socket** :data:`SOCKET_PATH` (``WSL_INTEROP``), mode 0666: init accepts a connection
  only from a process of its own pid namespace (``SO_PEERCRED`` pid non-zero) and passes it to
  mini_init, which passes it to the VM monitor, whose worker runs the program on the host as the
  VM's owner (``interop_server``). With ``[interop] enabled=false`` init answers every connection
  with ``LX_INIT_CREATE_PROCESS_RESPONSE`` ``Result = EPERM`` itself.
* **Host PATH folders**: for each folder of the caller's host ``PATH`` (WSL's ``NtPath``), a
  folder ``<PATH_FOLDER>/<escaped host folder>`` whose entries (links to the launcher, one per
  executable of the host folder) run the host's program on the host. Each is a link to a
  generation folder named after the host folder's inode and modification time, so a launch costs
  one ``stat`` and one ``readlink`` per folder and only a changed host folder is listed again.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import stat
import struct
import time

from pywsl.guest import forking, guest_log, interop_native, interop_paths, mounts
from pywsl.guest.file_locks import lock_within
from pywsl.guest.interop_paths import HOST_PATH_FOLDER as PATH_FOLDER
from pywsl.guest.interop_paths import LAUNCHER, RUNTIME_DIR, escape_folder
from pywsl.wire.channel import MessageChannel
from pywsl.wire.launch_codec import CREATE_PROCESS_RESPONSE as _CREATE_PROCESS_RESPONSE

TYPE_CHECKING = False  # `dataclasses` would cost the VM's start (`records`: the same classes)
if TYPE_CHECKING:
    from dataclasses import dataclass

    from pywsl.guest.wsl_conf import WslConf
else:
    from pywsl.records import dataclass

log = guest_log.getLogger("pywsl.interop")

HOST_VIEW = RUNTIME_DIR + "/host"
PYTHON_LAUNCHER = RUNTIME_DIR + "/launch-python"  # INVOKED [ARGUMENT...]: the Python client
CONTEXT_FILE = RUNTIME_DIR + "/context"  # mount point NUL root filesystem folder NUL (native client)
SOCKET_PATH = interop_paths.DEFAULT_SOCKET
WSLPATH_LINK = "/usr/bin/wslpath"
FORWARD_REQUEST = b"I"  # init -> mini_init -> monitor, with the connection's descriptor
MAX_PATH_FOLDERS = 64
MAX_FOLDER_ENTRIES = 20000
BUILDER_WAIT = 2.0  # s a launch waits for another process making the same host PATH folder
SEND_TIMEOUT = 2.0
_GENERATIONS = PATH_FOLDER + "/.generations"
# The generations mini_init made for the VM's booting caller's PATH (`vm_path_folders`), shared
# read-only by every instance; ``BUILDING`` is locked while they are being made.
VM_GENERATIONS = RUNTIME_DIR + "/vm-path"
BUILDING = ".building"
_UCRED = struct.Struct("iII")


@dataclass(frozen=True)
class HostRuntime:
    """Where the running interpreter's pieces are on the host (real paths)."""

    loader: str
    library_path: tuple[str, ...]
    executable: str
    package_parent: str  # the folder holding the ``pywsl`` package
    native_client: str = ""  # the built native client (``interop_native``), "" when there is none
    native_static: bool = False  # it needs no dynamic loader: it is the launcher itself


_runtime: HostRuntime | None = None


def detect_runtime() -> HostRuntime | None:
    """Find the loader and libraries of this interpreter (``/proc/self/maps``); run on the host,
    before the VM's namespaces exist. The result is kept for the forked roles."""
    global _runtime
    loader = ""
    folders: list[str] = []
    try:
        with open("/proc/self/maps") as handle:
            for line in handle:
                fields = line.split(maxsplit=5)
                if len(fields) < 6 or not fields[5].startswith("/"):
                    continue
                path = fields[5].strip()
                name = os.path.basename(path)
                if ".so" not in name:
                    continue
                if name.startswith(("ld-linux", "ld-musl", "ld64.so")):
                    loader = path
                folder = os.path.dirname(path)
                if folder not in folders:
                    folders.append(folder)
    except OSError as error:
        log.warning("interop: cannot read this interpreter's mappings: %s", error)
        return None
    import sys

    if not loader:
        log.warning("interop: this interpreter has no dynamic loader: no host programs, no wslpath")
        return None
    package = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
    _compile_client()
    native = interop_native.build()
    _runtime = HostRuntime(
        os.path.realpath(loader),
        tuple(folders),
        os.path.realpath(sys.executable),
        package,
        native.path if native else "",
        native.static if native else False,
    )
    return _runtime


CLIENT_MODULES = ("interop_client", "interop_messages", "interop_paths")


def _compile_client() -> None:
    """Byte-compile the client's modules where their cache is missing or older than the source:
    the client sees pywsl through the read-only host view and could not cache them itself, so
    every host program call would compile them again."""
    import importlib.util

    folder = os.path.dirname(os.path.realpath(__file__))
    for name in CLIENT_MODULES:
        source = os.path.join(folder, name + ".py")
        cached = importlib.util.cache_from_source(source)
        if _cache_is_current(source, cached, importlib.util.MAGIC_NUMBER):
            continue
        import py_compile  # (on the host, before the namespaces: only when a cache is missing)

        try:
            py_compile.compile(source, cfile=cached, doraise=True)
        except (OSError, py_compile.PyCompileError) as error:
            log.info("interop: %s is not byte-compiled (each call compiles it): %s", name, error)


def _cache_is_current(source: str, cached: str, magic: bytes) -> bool:
    """Would the interpreter use ``cached`` for ``source`` (this version's magic number, and the
    source's modification time and size recorded; hash-based caches check themselves)?"""
    try:
        with open(cached, "rb") as handle:
            header = handle.read(16)
        info = os.stat(source)
    except OSError:
        return False
    if len(header) < 16 or header[:4] != magic:
        return False
    if int.from_bytes(header[4:8], "little") != 0:
        return True
    recorded = (int.from_bytes(header[8:12], "little"), int.from_bytes(header[12:16], "little"))
    return recorded == (int(info.st_mtime) & 0xFFFFFFFF, info.st_size & 0xFFFFFFFF)


def _inside(path: str) -> str:
    return HOST_VIEW + path


def _python_words(runtime: HostRuntime, mount_point: str | None, rootfs: str | None) -> list[str]:
    """The host's loader on the host's interpreter on the Python client, up to ``$0``."""
    # The packages ``pywsl`` and ``pywsl.guest`` as bare module objects: their ``__init__`` would
    # import what the client never uses (a start-up cost paid on every host program call).
    package = _inside(runtime.package_parent) + "/pywsl"
    measured = _coverage_code(mount_point)
    code = (
        "import sys; m = type(sys); p = m('pywsl'); g = m('pywsl.guest'); "
        f"p.__path__ = [{package!r}]; g.__path__ = [{package + '/guest'!r}]; p.guest = g; "
        "sys.modules.update({'pywsl': p, 'pywsl.guest': g}); "
        f"{measured + '; ' if measured else ''}"
        "from pywsl.guest.interop_client import main; sys.exit(main(sys.argv[1:]))"
    )
    python = [_inside(runtime.executable), "-I", "-S", "-B", "-X", "frozen_modules=on", "-c", code]
    return [*_loader_words(runtime), *python, mount_point or "", rootfs or ""]


def _coverage_code(mount_point: str | None) -> str:
    """When the test suite measures this process, the client measures itself as well: its launcher
    passes on no variables of the suite's (``pywsl.coverage_startup``, loaded only then)."""
    import sys

    startup = sys.modules.get("pywsl.coverage_startup")
    return startup.client_code(HOST_VIEW, mount_point) if startup is not None else ""


def _loader_words(runtime: HostRuntime) -> list[str]:
    return [
        _inside(runtime.loader),
        "--library-path",
        ":".join(_inside(item) for item in runtime.library_path),
    ]


_UNQUOTED = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_@%+=:,./-")


def _quote(word: str) -> str:
    """``shlex.quote`` (``shlex`` would cost the VM's start, and init writes the launcher after
    ``pivot_root``, where no module can be loaded any more)."""
    if not word:
        return "''"
    if _UNQUOTED.issuperset(word):
        return word
    return "'" + word.replace("'", "'\"'\"'") + "'"


def _script(words: list[str], arguments: str) -> str:
    return "#!/bin/sh\nexec " + " ".join(_quote(word) for word in words) + f" {arguments}\n"


def python_launcher_script(runtime: HostRuntime, mount_point: str | None, rootfs: str | None) -> str:
    """:data:`PYTHON_LAUNCHER` (``INVOKED [ARGUMENT...]``): the Python client, which the native one
    runs for ``wslpath``, a caller with a terminal and ``PYWSL_INTEROP_CLIENT=python``."""
    return _script(_python_words(runtime, mount_point, rootfs), '"$@"')


def launcher_script(runtime: HostRuntime, mount_point: str | None, rootfs: str | None) -> str:
    """The ``#!/bin/sh`` launcher when the native client is not static: the host's loader runs the
    native client (``--context``) or, without one, the host's interpreter on the Python client."""
    if not runtime.native_client:
        return _script(_python_words(runtime, mount_point, rootfs), '"$0" "$@"')
    native = [
        *_loader_words(runtime),
        _inside(runtime.native_client),
        "--context",
        mount_point or "",
        rootfs or "",
    ]
    return _script(native, '"$0" "$@"')


def _replace(path: str, text: str | None = None, link: str | None = None, mode: int = 0o755) -> None:
    """Put a file (``text``) or a symbolic link (``link``) at ``path`` atomically."""
    temporary = f"{path}.new"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary)
    if link is not None:
        os.symlink(link, temporary)
    else:
        with open(temporary, "w", encoding="utf-8", errors="surrogateescape") as handle:
            handle.write(text or "")
        os.chmod(temporary, mode)
    os.rename(temporary, path)


def install_runtime(mount_point: str | None, rootfs: str | None) -> None:
    """After pivot_root: the launcher, the PATH folder and the wslpath link (errors are logged)."""
    if _runtime is None:
        return
    try:
        os.makedirs(_GENERATIONS, 0o755, exist_ok=True)
        _replace(CONTEXT_FILE, f"{mount_point or ''}\0{rootfs or ''}\0", mode=0o644)
        _replace(PYTHON_LAUNCHER, python_launcher_script(_runtime, mount_point, rootfs))
        if _runtime.native_static:
            _replace(LAUNCHER, link=_inside(_runtime.native_client))
        else:
            _replace(LAUNCHER, launcher_script(_runtime, mount_point, rootfs))
    except OSError as error:
        log.warning("interop: cannot install the launcher: %s", error)
        return
    try:
        if os.path.isdir(os.path.dirname(WSLPATH_LINK)) and not os.path.lexists(WSLPATH_LINK):
            os.symlink(LAUNCHER, WSLPATH_LINK)
    except OSError as error:
        log.info("interop: no %s: %s", WSLPATH_LINK, error)


# -- the interop socket ---------------------------------------------------------------------------


class InteropListener:
    """init's interop socket; ``forward`` gets each accepted connection of this instance."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        os.makedirs(os.path.dirname(SOCKET_PATH), 0o755, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(SOCKET_PATH)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            self.sock.bind(SOCKET_PATH)
            os.chmod(SOCKET_PATH, 0o666)
            self.sock.listen(64)
            self.sock.setblocking(False)
        except BaseException:
            self.sock.close()
            raise

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def accept(self, control: socket.socket | None) -> None:
        """Take every pending connection: forward it to mini_init over ``control`` or refuse it."""
        while True:
            try:
                connection, _address = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                log.warning("interop: accept failed: %s", error)
                return
            try:
                self._handle(connection, control)
            finally:
                connection.close()

    def _handle(self, connection: socket.socket, control: socket.socket | None) -> None:
        credentials = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        pid, _uid, _gid = _UCRED.unpack(credentials)
        if pid <= 0:
            log.warning("interop: refused a connection from outside the distribution")
            return
        if not self.enabled:
            _refuse(connection, errno.EPERM)
            return
        if control is None:
            _refuse(connection, errno.ESHUTDOWN)
            return
        try:
            socket.send_fds(control, [FORWARD_REQUEST], [connection.fileno()], socket.MSG_DONTWAIT)
        except OSError as error:
            log.warning("interop: cannot pass a connection on: %s", error)
            _refuse(connection, errno.EAGAIN)


def _refuse(connection: socket.socket, error: int) -> None:
    channel = MessageChannel(connection, name="interop connection")
    with contextlib.suppress(OSError, TimeoutError):
        channel.send(_CREATE_PROCESS_RESPONSE, Result=error, SignalPipeId=0, Flags=0, timeout=SEND_TIMEOUT)
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_WR)


# -- host PATH folders ----------------------------------------------------------------------------


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


def host_path_folders(nt_path: str) -> list[str]:
    """The folders inside that stand for the host ``PATH`` ``nt_path`` (made or refreshed here).

    Only absolute host folders that exist and can be listed count; at most ``MAX_PATH_FOLDERS``.
    """
    folders: list[str] = []
    for host_folder in candidate_folders(nt_path):
        if len(folders) >= MAX_PATH_FOLDERS:
            break
        inside = PATH_FOLDER + "/" + escape_folder(host_folder)
        try:
            _refresh(host_folder, inside)
        except OSError as error:
            log.debug("interop: host folder %s skipped: %s", host_folder, error)
            continue
        folders.append(inside)
    return folders


def prepare_path_folders(host_path: str, conf: WslConf) -> int | None:
    """Make the folders of `host_path` (the VM's booting caller's host PATH, which the launches
    that follow most likely have) in a child process, while the distribution goes on starting; a
    launch that finds one being made waits for it (`_wait_for_builder`) rather than making it
    again. The child's pid, or None when there is nothing to make (interop or
    ``appendWindowsPath`` off, no folder)."""
    if not host_path or not relay_settings(conf).append_host_path:
        return None
    try:
        pid = os.fork()
    except OSError as error:
        log.debug("interop: host PATH folders not made ahead: %s", error)
        return None
    if pid == 0:
        code = 1
        try:
            forking.become_child([0, 1, 2])
            host_path_folders(host_path)
            code = 0
        finally:
            forking.exit_now(code)
    return pid


def generation_name(host_folder: str, view: str | None = None) -> str:
    """The name of the generation of `host_folder` as it is now (seen at `view` + the folder):
    ``<escaped folder>@<device>-<inode>-<modification time>``."""
    info = os.stat((HOST_VIEW if view is None else view) + host_folder)
    if not stat.S_ISDIR(info.st_mode):
        raise OSError(errno.ENOTDIR, "not a folder")
    return f"{escape_folder(host_folder)}@{info.st_dev:x}-{info.st_ino:x}-{info.st_mtime_ns:x}"


def _refresh(host_folder: str, inside: str) -> None:
    generation = generation_name(host_folder)
    target = f"{_GENERATIONS}/{generation}"
    with contextlib.suppress(OSError):
        # This folder's generation, or the same folder's under another name (`/bin`, `/usr/bin`).
        if os.readlink(inside).rpartition("@")[2] == generation.rpartition("@")[2]:
            return
    if not os.path.isdir(target):
        target = _generation_of_same_folder(_GENERATIONS, generation) or target
    if not os.path.isdir(target):
        target = _vm_generation(generation) or target
    if not os.path.isdir(target):
        _wait_for_builder(target)
    if not os.path.isdir(target):
        folder_fd = os.open(_GENERATIONS, _FOLDER_FLAGS)
        try:
            generate(real_host_folder(host_folder), generation, folder_fd)
        finally:
            os.close(folder_fd)
    temporary = f"{inside}.{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
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
    host_folder = generation.rpartition("@")[2]
    with contextlib.suppress(OSError):
        for name in os.listdir(folder):
            if name.rpartition("@")[2] == host_folder and not name.endswith(".new"):
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
        _remove_tree(building, folder_fd)
        raise
    try:
        os.rename(building, generation, src_dir_fd=folder_fd, dst_dir_fd=folder_fd)
    except OSError as error:
        _remove_tree(building, folder_fd)
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


def _remove_tree(name: str, folder_fd: int) -> None:
    """Remove the folder `name` of `folder_fd` and the links in it."""
    with contextlib.suppress(OSError):
        fd = os.open(name, _FOLDER_FLAGS, dir_fd=folder_fd)
        try:
            for entry in os.listdir(fd):
                with contextlib.suppress(OSError):
                    os.unlink(entry, dir_fd=fd)
        finally:
            os.close(fd)
        os.rmdir(name, dir_fd=folder_fd)


# -- init's steps ---------------------------------------------------------------------------------


def attach_host_view(root_fd: int, tree_fd: int, folders_fd: int = -1) -> None:
    """Before pivot_root: the read-only host view at :data:`HOST_VIEW` (``tree_fd`` is a detached
    copy of the VM's host tree) and the VM's host PATH folders, read-only, at
    :data:`VM_GENERATIONS` (``folders_fd``, -1 for none); both fds are closed here. A failure is
    logged: the distribution still starts (and makes the folders it needs itself)."""
    try:
        if tree_fd >= 0 and _runtime is not None:
            mounts.apply_plan(
                root_fd, [mounts.AttachTree(HOST_VIEW, "interop", read_only=True)], {"interop": tree_fd}
            )
            if folders_fd >= 0:
                steps = [mounts.AttachTree(VM_GENERATIONS, "folders", read_only=True)]
                mounts.apply_plan(root_fd, steps, {"folders": folders_fd})
    except OSError as error:
        log.warning("interop: cannot mount the host view: %s", error)
    finally:
        for fd in (tree_fd, folders_fd):
            if fd >= 0:
                os.close(fd)


def start_listener(enabled: bool) -> InteropListener | None:
    """After pivot_root: the interop socket (None, logged, when it cannot be made)."""
    try:
        return InteropListener(enabled)
    except OSError as error:
        log.warning("interop: cannot serve %s: %s", SOCKET_PATH, error)
        return None


@dataclass(frozen=True)
class InteropSettings:
    """What a launch needs of ``[interop]``: host programs at all, and the host PATH appended."""

    enabled: bool
    append_host_path: bool


def relay_settings(conf: WslConf) -> InteropSettings:
    """``[interop] enabled`` and ``appendWindowsPath`` (both off without a client runtime)."""
    enabled = conf.interop_enabled and _runtime is not None
    return InteropSettings(enabled, enabled and conf.interop_append_windows_path)


def launch_environment(
    environment: dict[str, str], settings: InteropSettings | None, nt_path: str, host_mount_point: str | None
) -> dict[str, str]:
    """The environment of a launched process with interop: ``WSLENV``'s variables translated into
    the distribution, ``WSL_INTEROP``, and the host PATH folders after the distribution's own."""
    result = dict(environment)
    result.update(interop_paths.translate_environment_in(environment, host_mount_point))
    if settings is None or not settings.enabled:
        return result
    result["WSL_INTEROP"] = SOCKET_PATH
    if settings.append_host_path and nt_path:
        folders = host_path_folders(nt_path)
        if folders:
            own = result.get("PATH", "")
            result["PATH"] = ":".join([own, *folders]) if own else ":".join(folders)
    return result
