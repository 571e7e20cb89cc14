"""The native interop client, built on the host: a host program call without an interpreter's start.

``interop_native.c`` does what ``interop_client`` does for the common case (connect, send the
request with descriptors 0-2, forward signals, exit with the host program's status) in well
under a millisecond, where the interpreter's start alone takes about ten. It is compiled once,
on the host before the VM's namespaces exist (mini_init), with ``cc`` from ``PATH``, into the
cache root (``$PYWSL_CACHE_ROOT``, default ``/var/cache/pywsl``) under a name made of the hash of
the source, the compiler and the flags: linked static when the host has a static C library (then
it is the launcher itself, no shell and no dynamic loader in between), else dynamic (run by the
host's loader from a launcher script). The file is made aside and renamed into place, and used
only when it and its folders belong to root or to this process's user and nobody else can
write them (a user's own VM uses the client root built, and builds none into root's folder).
Without a compiler, or when the build fails, the Python client serves every call (logged).
"""

from __future__ import annotations

import os
import stat

# The client is looked for at every start of the VM, built only once: what only a build needs
# (`subprocess`, `tempfile`) is loaded then; `hashlib` (OpenSSL), `shutil` and `dataclasses`
# would cost every start.
from pywsl.guest import guest_log
from pywsl.lean_context import suppress
from pywsl.sha256 import sha256

TYPE_CHECKING = False
if TYPE_CHECKING:
    from dataclasses import dataclass
else:
    from pywsl.records import dataclass

log = guest_log.getLogger("pywsl.interop")

__all__ = ["CACHE_ROOT_ENV", "DISABLE_ENV", "SOURCE", "NativeClient", "build", "cache_folder"]

CACHE_ROOT_ENV = "PYWSL_CACHE_ROOT"
DEFAULT_CACHE_ROOT = "/var/cache/pywsl"
DISABLE_ENV = "PYWSL_INTEROP_NATIVE"  # "0": no native client (the Python client serves every call)
SOURCE = os.path.join(os.path.dirname(os.path.realpath(__file__)), "interop_native.c")
FLAGS = ("-O2", "-s", "-Wall")
LINKS = (("-static",), ())  # tried in this order


@dataclass(frozen=True)
class NativeClient:
    """The built client on the host, and whether it needs no dynamic loader."""

    path: str
    static: bool


BUILD_TIMEOUT = 60.0


def cache_folder() -> str:
    return os.path.join(os.environ.get(CACHE_ROOT_ENV) or DEFAULT_CACHE_ROOT, "interop")


def _which(name: str) -> str | None:
    """``shutil.which(name)`` for a bare name: the first executable file of that name in the
    folders of ``PATH`` (the system's default path without one; none for an empty one)."""
    path = os.environ.get("PATH")
    if path is None:
        try:
            path = os.confstr("CS_PATH")
        except (AttributeError, ValueError):
            path = os.defpath
    if not path:
        return None
    seen: set[str] = set()
    for folder in path.split(os.pathsep):
        if folder in seen:
            continue
        seen.add(folder)
        candidate = os.path.join(folder, name)
        if (
            os.path.exists(candidate)
            and os.access(candidate, os.F_OK | os.X_OK)
            and not os.path.isdir(candidate)
        ):
            return candidate
    return None


def _compiler() -> tuple[str, os.stat_result] | None:
    found = _which("cc")
    if found is None:
        return None
    compiler = os.path.realpath(found)
    try:
        return compiler, os.stat(compiler)
    except OSError:
        return None


def _key(source: bytes, compiler: str, info: os.stat_result, link: tuple[str, ...]) -> str:
    digest = sha256(source)
    flags = " ".join((*FLAGS, *link))
    digest.update(f"\0{compiler}\0{info.st_size}\0{info.st_mtime_ns}\0{flags}".encode())
    return digest.hexdigest()[:24]


def _trusted(path: str, kind: int) -> bool:
    """Is ``path`` (not a link) of ``kind``, root's or this user's, and writable by nobody else?"""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    owner_ok = info.st_uid in (0, os.geteuid())
    return stat.S_IFMT(info.st_mode) == kind and owner_ok and not info.st_mode & 0o022


def _folder() -> str | None:
    """The cache folder, made when missing; None when it is not this user's alone."""
    folder = cache_folder()
    with suppress(OSError):
        os.makedirs(folder, 0o755, exist_ok=True)
    path = "/"
    for part in folder.strip("/").split("/"):
        path = os.path.join(path, part)
        info = os.lstat(path) if os.path.lexists(path) else None
        if info is None or not stat.S_ISDIR(info.st_mode):
            return None
        # A parent that someone else owns or can write (other than sticky /tmp-like roots) is refused.
        if info.st_uid not in (0, os.geteuid()) or (info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX):
            return None
    return folder if _trusted(folder, stat.S_IFDIR) else None


def _compile(compiler: str, link: tuple[str, ...], target: str, folder: str) -> None:
    import subprocess
    import tempfile

    fd, temporary = tempfile.mkstemp(dir=folder, prefix=".interop-native-")
    os.close(fd)
    try:
        subprocess.run(
            [compiler, *FLAGS, *link, "-o", temporary, SOURCE],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            check=True,
            timeout=BUILD_TIMEOUT,
        )
        os.chmod(temporary, 0o755)
        os.replace(temporary, target)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def build() -> NativeClient | None:
    """The native client on the host (built now when it is not cached); None when there is none
    (no compiler, switched off, a build that failed: logged)."""
    if os.environ.get(DISABLE_ENV) == "0":
        return None
    found = _compiler()
    if found is None:
        log.info("interop: no C compiler on the host: host programs start through the Python client")
        return None
    try:
        with open(SOURCE, "rb") as handle:
            source = handle.read()
    except OSError as error:
        log.warning("interop: no native client source: %s", error)
        return None
    folder = _folder()
    if folder is None:
        log.info("interop: %s is not this user's alone: no native client", cache_folder())
        return None
    targets = [(os.path.join(folder, f"interop-native-{_key(source, *found, link)}"), link) for link in LINKS]
    for target, link in targets:
        if _trusted(target, stat.S_IFREG):
            return NativeClient(target, bool(link))
    import subprocess

    for target, link in targets:
        try:
            _compile(found[0], link, target, folder)
        except (OSError, subprocess.SubprocessError) as error:
            detail = getattr(error, "stderr", b"") or b""
            log.info(
                "interop: cannot build the native client %s: %s %s",
                link,
                error,
                detail.decode(errors="replace"),
            )
            continue
        if _trusted(target, stat.S_IFREG):
            return NativeClient(target, bool(link))
    log.warning("interop: no native client could be built: host programs start through the Python client")
    return None
