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
* **Host PATH folders** (``path_folders``): for each folder of the caller's host ``PATH`` (WSL's
  ``NtPath``), a folder whose entries (links to the launcher, one per executable of the host
  folder) run the host's program on the host; init has the booting caller's made once the
  distribution has started and answered its first requests (:func:`prepare_path_folders`).
"""

from __future__ import annotations

import errno
import os
import struct

from pywsl.guest import forking, guest_log, interop_native, interop_paths, mounts
from pywsl.guest.interop_paths import HOST_VIEW, LAUNCHER, RUNTIME_DIR
from pywsl.guest.path_folders import GENERATIONS, VM_GENERATIONS, host_path_folders
from pywsl.lean_context import suppress
from pywsl.wire import unix_sockets as socket
from pywsl.wire.channel import MessageChannel
from pywsl.wire.launch_codec import CREATE_PROCESS_RESPONSE as _CREATE_PROCESS_RESPONSE

TYPE_CHECKING = False  # `dataclasses` would cost the VM's start (`records`: the same classes)
if TYPE_CHECKING:
    from dataclasses import dataclass

    from pywsl.guest.wsl_conf import WslConf
else:
    from pywsl.records import dataclass

log = guest_log.getLogger("pywsl.interop")

PYTHON_LAUNCHER = RUNTIME_DIR + "/launch-python"  # INVOKED [ARGUMENT...]: the Python client
CONTEXT_FILE = RUNTIME_DIR + "/context"  # mount point NUL root filesystem folder NUL (native client)
SOCKET_PATH = interop_paths.DEFAULT_SOCKET
WSLPATH_LINK = "/usr/bin/wslpath"
FORWARD_REQUEST = b"I"  # init -> mini_init -> monitor, with the connection's descriptor
SEND_TIMEOUT = 2.0
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
    # What `importlib.util` gives of it, without loading `importlib.util` (and `warnings`) at
    # every VM start: every interpreter has loaded this one to import anything.
    import _frozen_importlib_external as bootstrap

    folder = os.path.dirname(os.path.realpath(__file__))
    for name in CLIENT_MODULES:
        source = os.path.join(folder, name + ".py")
        cached = bootstrap.cache_from_source(source)
        if _cache_is_current(source, cached, bootstrap.MAGIC_NUMBER):
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
    with suppress(FileNotFoundError):
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
        os.makedirs(GENERATIONS, 0o755, exist_ok=True)
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
        with suppress(FileNotFoundError):
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
    with suppress(OSError, TimeoutError):
        channel.send(_CREATE_PROCESS_RESPONSE, Result=error, SignalPipeId=0, Flags=0, timeout=SEND_TIMEOUT)
    with suppress(OSError):
        connection.shutdown(socket.SHUT_WR)


# -- host PATH folders ----------------------------------------------------------------------------


def prepare_path_folders(host_path: str, conf: WslConf) -> int | None:
    """Make the folders of `host_path` (the VM's booting caller's host PATH, which the launches
    that follow most likely have) in a child process, while the distribution serves; a
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
