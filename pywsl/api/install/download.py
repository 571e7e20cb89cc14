"""Fetching manifests and distribution images, as `wsl --install` does with WinHTTP.

WSL reads `file://` URLs in place and fetches everything else without caching; a distribution image
is written to a temporary file and removed once it has been imported (or the install failed). Here:

* `read_url` returns a small document (the manifest) from `https://`, `http://`, `file://` or a
  plain path, with a short timeout and a size bound.
* `download_to` streams an image into a temporary file created in a given folder, reporting bytes
  done/total. The file holds an exclusive `flock` while its owner lives, so `clean_stale_temporaries`
  can tell a file left by a killed install (lock free) from one in use by a concurrent install. On
  Windows an open file cannot be deleted, which marks it in use without a lock (no `fcntl` there).
* `verify_sha256` compares the file with the manifest's `Sha256` (hex, optional `0x`, any case).

Network failures become `WslError`s named after the WinINet/HTTP HRESULTs WSL would show.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import shutil
import socket
import stat
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from pywsl.api.errors import WslError, from_os_error

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_MANIFEST_BYTES",
    "TEMP_PREFIX",
    "TemporaryFile",
    "clean_stale_temporaries",
    "download_to",
    "local_path",
    "open_local_file",
    "read_url",
    "verify_sha256",
]

DEFAULT_TIMEOUT = 15.0
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
CHUNK = 1024 * 1024
TEMP_PREFIX = ".pywsl-install-"
STALE_AFTER = 10.0  # seconds; younger temporaries are never considered stale
# Open flags that only some systems have (O_BINARY: Windows' C runtime, text mode otherwise).
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOCTTY = getattr(os, "O_NOCTTY", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_BINARY = getattr(os, "O_BINARY", 0)

ByteProgress = Callable[[int, int | None], None]

# HRESULTs WSL reports for failed downloads (WinINet and HTTP status facilities).
_WININET = {
    "WININET_E_TIMEOUT": 0x80072EE2,
    "WININET_E_NAME_NOT_RESOLVED": 0x80072EE7,
    "WININET_E_CANNOT_CONNECT": 0x80072EFD,
    "WININET_E_CONNECTION_RESET": 0x80072EFF,
    "WININET_E_UNRECOGNIZED_SCHEME": 0x80072EE6,
}
_HTTP_STATUS = {
    400: "HTTP_E_STATUS_BAD_REQUEST",
    401: "HTTP_E_STATUS_DENIED",
    403: "HTTP_E_STATUS_FORBIDDEN",
    404: "HTTP_E_STATUS_NOT_FOUND",
    500: "HTTP_E_STATUS_SERVER_ERROR",
    503: "HTTP_E_STATUS_SERVICE_UNAVAIL",
}


def _network_error(code: str, url: str, reason: str) -> WslError:
    return WslError(code, f"{url}: {reason}", hresult=_WININET[code])


def _http_error(url: str, status: int, reason: str) -> WslError:
    code = _HTTP_STATUS.get(status, "HTTP_E_STATUS_UNEXPECTED")
    hresult = 0x80190000 + status if code != "HTTP_E_STATUS_UNEXPECTED" else 0x80190001
    return WslError(code, f"{url}: HTTP {status} {reason}".rstrip(), hresult=hresult)


def local_path(url: str) -> Path | None:
    """The local file a `file://` URL or a plain path names; None for network URLs."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise WslError("E_INVALIDARG", f"{url}: only local file:// URLs are supported")
        return Path(urllib.parse.unquote(parsed.path))
    if parsed.scheme in ("http", "https"):
        return None
    if parsed.scheme == "" or len(parsed.scheme) == 1:
        return Path(url)
    raise WslError(
        "WININET_E_UNRECOGNIZED_SCHEME",
        f"{url}: unsupported URL scheme {parsed.scheme!r}",
        hresult=_WININET["WININET_E_UNRECOGNIZED_SCHEME"],
    )


@contextlib.contextmanager
def _open_http(url: str, timeout: float) -> Iterator[http.client.HTTPResponse]:
    """GET `url` without caches; failures become WslErrors."""
    request = urllib.request.Request(
        url,
        headers={
            "Cache-Control": "no-cache",
            "Pragma": "no-cache",
            "User-Agent": "pywsl",
        },
    )
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        raise _http_error(url, error.code, str(error.reason)) from None
    except urllib.error.URLError as error:
        raise _translate_network_error(url, error.reason) from None
    except (OSError, http.client.HTTPException, ValueError) as error:
        raise _translate_network_error(url, error) from None
    with response:
        yield response


def _translate_network_error(url: str, reason: object) -> WslError:
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return _network_error("WININET_E_TIMEOUT", url, "the operation timed out")
    if isinstance(reason, socket.gaierror):
        return _network_error("WININET_E_NAME_NOT_RESOLVED", url, "the server name could not be resolved")
    if isinstance(reason, ConnectionResetError):
        return _network_error("WININET_E_CONNECTION_RESET", url, "the connection was reset")
    if isinstance(reason, (ConnectionError, OSError)):
        return _network_error("WININET_E_CANNOT_CONNECT", url, f"cannot connect ({reason})")
    if isinstance(reason, http.client.HTTPException):
        return _network_error("WININET_E_CONNECTION_RESET", url, f"bad HTTP response ({reason!r})")
    return _network_error("WININET_E_CANNOT_CONNECT", url, str(reason))


def _read_bounded(stream: BinaryIO, limit: int, url: str) -> bytes:
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise WslError("ERROR_INVALID_DATA", f"{url}: larger than {limit} bytes")
    return data


def open_local_file(path: Path, url: str) -> int:
    """A local document or archive (`file://` or a path), opened without waiting for a FIFO's
    writer; anything but a regular file (a FIFO, `/dev/zero`) is refused."""
    fd = os.open(path, os.O_RDONLY | _O_NONBLOCK | _O_NOCTTY | _O_CLOEXEC | _O_BINARY)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise WslError("ERROR_INVALID_DATA", f"{url}: not a regular file")
    if _O_NONBLOCK:
        os.set_blocking(fd, True)
    return fd


def read_url(url: str, *, timeout: float = DEFAULT_TIMEOUT, limit: int = MAX_MANIFEST_BYTES) -> bytes:
    """The whole body at `url` (a small document such as the manifest)."""
    path = local_path(url)
    if path is not None:
        try:
            with os.fdopen(open_local_file(path, url), "rb") as stream:
                return _read_bounded(stream, limit, url)
        except OSError as error:
            raise from_os_error(error, what=url) from None
    with _open_http(url, timeout) as response:
        try:
            return _read_bounded(response, limit, url)
        except (OSError, http.client.HTTPException) as error:
            raise _translate_network_error(url, error) from None


class TemporaryFile:
    """A file created beside its destination and deleted on `close()` unless `keep()` was called.

    Its name starts with `TEMP_PREFIX`; an exclusive `flock` held on it marks it as in use.
    """

    def __init__(self, directory: Path, label: str, suffix: str) -> None:
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in label)[:64] or "distribution"
        fd, name = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{safe}-", suffix=suffix, dir=directory)
        self.path = Path(name)
        self.fd = fd
        if not _try_lock(fd):  # only if another install opened it in between
            os.close(fd)
            raise BlockingIOError(f"{name}: locked by another install")

    def close(self) -> None:
        """Delete the file (if still there) and drop the lock (on Windows: close, then delete)."""
        if self.fd < 0:
            return
        if sys.platform == "win32":
            os.close(self.fd)
            self.fd = -1
            with contextlib.suppress(FileNotFoundError, PermissionError):  # a later install cleans it
                os.unlink(self.path)
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self.fd)
        self.fd = -1

    def __enter__(self) -> TemporaryFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _try_lock(fd: int) -> bool:
    """Take the exclusive lock that marks a temporary in use; False when somebody holds it. On
    Windows the open file itself is the mark (it cannot be deleted while open)."""
    if sys.platform == "win32":
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _stale_candidates(directory: Path) -> list[Path]:
    """The temporaries in `directory` old enough to be stale (folders go with their lock file)."""
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []
    found: list[Path] = []
    for entry in entries:
        if not entry.name.startswith(TEMP_PREFIX) or entry.is_symlink():
            continue
        if entry.is_dir(follow_symlinks=False):
            continue  # handled through its lock file
        try:
            if time.time() - entry.stat(follow_symlinks=False).st_mtime < STALE_AFTER:
                continue  # may be between its creation and its lock
        except OSError:
            continue
        found.append(Path(entry.path))
    return found


def _remove_unless_open(path: Path) -> list[Path]:
    """Windows: delete a temporary nobody has open (deleting an open file fails there)."""
    try:
        os.unlink(path)
    except OSError:
        return []
    return [path]


def _remove_unless_locked(path: Path) -> list[Path]:
    """Delete a temporary whose lock is free, with the folder it locks (`<folder>.lock`)."""
    removed: list[Path] = []
    lock_target = path.with_suffix("") if path.name.endswith(".lock") else None
    try:
        fd = os.open(path, os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC)
    except OSError:
        return removed
    try:
        if not _try_lock(fd):
            return removed  # a live install owns it
        if lock_target is not None and lock_target.is_dir() and not lock_target.is_symlink():
            _remove_tree(lock_target)
            removed.append(lock_target)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        removed.append(path)
    finally:
        os.close(fd)
    return removed


def clean_stale_temporaries(directory: Path) -> list[Path]:
    """Delete temporaries another install left behind when it was killed; returns what was removed.

    A temporary is stale when nobody holds its lock. Folders (a root filesystem being built) are
    stale when their lock file, `<folder>.lock`, is; they are removed with their lock file.
    """
    remove = _remove_unless_open if sys.platform == "win32" else _remove_unless_locked
    removed: list[Path] = []
    for path in _stale_candidates(directory):
        removed.extend(remove(path))
    return removed


def _remove_tree(path: Path) -> None:
    """Remove a folder tree without following links (shutil.rmtree's fd-based walk)."""
    shutil.rmtree(path, ignore_errors=True)


def download_to(
    url: str, target: TemporaryFile, *, progress: ByteProgress | None = None, timeout: float = DEFAULT_TIMEOUT
) -> int:
    """Stream `url` into `target`; returns the number of bytes written."""
    done = 0
    with _open_http(url, timeout) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length is not None and length.isdigit() else None
        if progress is not None:
            progress(0, total)
        while True:
            try:
                chunk = response.read(CHUNK)
            except (OSError, http.client.HTTPException) as error:
                raise _translate_network_error(url, error) from None
            if not chunk:
                break
            try:
                _write_all(target.fd, chunk)
            except OSError as error:
                raise from_os_error(error, what=str(target.path)) from None
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    if total is not None and done != total:
        raise _network_error(
            "WININET_E_CONNECTION_RESET", url, f"the download ended after {done} of {total} bytes"
        )
    return done


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _normalise_hex(text: str) -> bytes | None:
    value = text.strip()
    if value[:2].lower() == "0x":
        value = value[2:]
    try:
        return bytes.fromhex(value)
    except ValueError:
        return None


def file_sha256(fd: int) -> str:
    """Lower-case hex SHA-256 of the whole file behind `fd` (read from its start)."""
    digest = hashlib.sha256()
    offset = 0
    while True:
        chunk = _read_at(fd, offset)
        if not chunk:
            return digest.hexdigest()
        digest.update(chunk)
        offset += len(chunk)


def _read_at(fd: int, offset: int) -> bytes:
    """Up to CHUNK bytes at `offset` (`pread`; Windows has none: seek, then read)."""
    if hasattr(os, "pread"):
        return os.pread(fd, CHUNK, offset)
    os.lseek(fd, offset, os.SEEK_SET)
    return os.read(fd, CHUNK)


def verify_sha256(fd: int, expected: str) -> None:
    """Raise TRUST_E_BAD_DIGEST (with both hashes, as WSL's message) unless the file matches."""
    actual = file_sha256(fd)
    wanted = _normalise_hex(expected)
    if wanted is None or wanted != bytes.fromhex(actual):
        raise WslError(
            "TRUST_E_BAD_DIGEST",
            f"The distribution hash doesn't match. Expected: {expected}, actual hash: {actual}",
        )
