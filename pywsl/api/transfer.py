"""Moving archive bytes between the caller's files and the VM's import and export workers.

WSL's service relays the client's file handle to the guest's `bsdtar` over an hvsocket
(`InterruptableRelay`) and streams bsdtar's stderr back to the client. Here the VM's workers take
file descriptors directly, so this module only has to turn what the caller gave (a path, a file
object, a descriptor, a pipe) into a descriptor:

* import: the archive is handed over as it is (the VM's worker detects and undoes gzip, xz,
  bzip2 and zstd compression itself, inside the VM); a disk image (VHD, VHDX) is refused with a
  clear error; a pipe or a file object is read ahead (to look at its first bytes) and relayed;
* export: the VM writes to the target descriptor; a file object without a descriptor is fed
  through a pipe;
* progress: when asked for, the bytes go through a pipe and are counted;
* the worker's stderr is collected (its tail goes into the error message of a failure).

Paths are opened with the user's rights (`credentials.open_as`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
from collections.abc import Callable, Iterator
from typing import IO, Any, BinaryIO

from pywsl.api.credentials import UserIdentity, open_as
from pywsl.api.errors import WslError

__all__ = [
    "ArchiveSource",
    "ExportTarget",
    "Progress",
    "StderrCollector",
    "detect_format",
    "open_archive_source",
    "open_export_target",
]

Progress = Callable[[int], Any]
Source = str | os.PathLike[str] | BinaryIO | IO[bytes] | int
_CHUNK = 1 << 20
_HEAD = 512
_STDERR_TAIL = 16 * 1024


def detect_format(head: bytes) -> str:
    """What the first bytes of an archive say it is: tar, gzip, xz, bzip2, zstd, vhdx, vhd or unknown."""
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head.startswith(b"BZh"):
        return "bzip2"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return "zstd"
    if head.startswith(b"vhdxfile"):
        return "vhdx"
    if head.startswith(b"conectix"):
        return "vhd"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    if len(head) >= 512 and not head.strip(b"\0"):
        return "tar"   # an empty archive: end-of-archive blocks only
    return "unknown"


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class _Pump(threading.Thread):
    """Copies `read` → `write` on its own thread; keeps the first error for `join_checked`."""

    def __init__(self, read: Callable[[], bytes], write: Callable[[bytes], None],
                 on_end: Callable[[], None], progress: Progress | None = None) -> None:
        super().__init__(daemon=True)
        self._read, self._write, self._on_end, self._progress = read, write, on_end, progress
        self.error: BaseException | None = None
        self.count = 0

    def run(self) -> None:
        try:
            while chunk := self._read():
                self._write(chunk)
                self.count += len(chunk)
                if self._progress is not None:
                    self._progress(self.count)
        except BaseException as error:   # reported by join_checked
            self.error = error
        finally:
            with contextlib.suppress(OSError):
                self._on_end()


class StderrCollector:
    """A pipe for a worker's stderr; keeps the last bytes written to it."""

    def __init__(self) -> None:
        self._read_fd, self.fd = os.pipe2(os.O_CLOEXEC)
        self._tail = bytearray()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        try:
            while chunk := os.read(self._read_fd, 65536):
                self._tail.extend(chunk)
                del self._tail[:-_STDERR_TAIL]
        except OSError:
            pass
        finally:
            os.close(self._read_fd)

    def close_writer(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def text(self, timeout: float = 5.0) -> str:
        """Everything kept so far (waits for the writers to finish, at most `timeout` seconds)."""
        self.close_writer()
        self._thread.join(timeout)
        return bytes(self._tail).decode("utf-8", errors="replace").strip()


class ArchiveSource:
    """The archive stream for the import worker (`fd`), and whatever feeds it."""

    def __init__(self) -> None:
        self.fd = -1
        self._owned: list[int] = []
        self._pumps: list[_Pump] = []
        self.format = "tar"

    def _own(self, fd: int) -> int:
        self._owned.append(fd)
        return fd

    def close(self) -> None:
        """Release the descriptors; stops feeding (a pump blocked on a full pipe sees EPIPE)."""
        for fd in self._owned:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._owned.clear()
        for pump in self._pumps:
            pump.join(5)

    def check(self) -> None:
        """Raise if reading the archive failed."""
        for pump in self._pumps:
            pump.join()
            error = pump.error
            if error is None or (isinstance(error, OSError) and error.errno == errno.EPIPE):
                continue
            reason = error.strerror if isinstance(error, OSError) else str(error)
            raise WslError("WSL_E_IMPORT_FAILED", f"Reading the archive failed: {reason}")


def _reader_of(stream: IO[bytes]) -> Callable[[], bytes]:
    def read() -> bytes:
        return stream.read(_CHUNK) or b""
    return read


def _fd_reader(fd: int) -> Callable[[], bytes]:
    def read() -> bytes:
        return os.read(fd, _CHUNK)
    return read


def _fileno(stream: Any) -> int | None:
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None
    return fd if isinstance(fd, int) and fd >= 0 else None


@contextlib.contextmanager
def open_archive_source(source: Source, identity: UserIdentity, *, progress: Progress | None = None
                        ) -> Iterator[ArchiveSource]:
    """A descriptor the import worker reads `source` from (see the module docstring); closes what
    it opened."""
    result = ArchiveSource()
    try:
        stream: IO[bytes] | None = None
        if isinstance(source, bool):
            raise WslError("E_INVALIDARG", "The archive must be a path, a file object or a descriptor.")
        if isinstance(source, int):
            fd = source
        elif isinstance(source, str | os.PathLike):
            try:
                fd = result._own(open_as(identity, source, os.O_RDONLY | os.O_NOCTTY))
            except OSError as error:
                raise WslError("ERROR_FILE_NOT_FOUND" if error.errno == errno.ENOENT else "E_ACCESSDENIED"
                               if error.errno in (errno.EACCES, errno.EPERM) else "E_INVALIDARG",
                               f"{os.fspath(source)}: {error.strerror}") from None
        else:
            number = _fileno(source)
            if number is None:
                stream = source
                fd = -1
            else:
                fd = number
        if fd >= 0 and stat.S_ISDIR(os.fstat(fd).st_mode):
            raise WslError("E_INVALIDARG", "The archive is a directory, not a file.")
        regular = fd >= 0 and stat.S_ISREG(os.fstat(fd).st_mode)
        try:
            if regular:
                head = os.pread(fd, _HEAD, os.lseek(fd, 0, os.SEEK_CUR))
                rest: Callable[[], bytes] = _fd_reader(fd)
            else:
                read = _reader_of(stream) if stream is not None else _fd_reader(fd)
                head = _read_head(read)
        except (OSError, ValueError) as error:
            reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
            raise WslError("WSL_E_IMPORT_FAILED", f"Reading the archive failed: {reason}") from None
        if not regular:
            first = [head]

            def rest() -> bytes:
                return first.pop() if first else read()
        kind = detect_format(head)
        result.format = kind
        if kind in ("vhd", "vhdx"):
            from pywsl.api.errors import not_supported_by_backend

            not_supported_by_backend("Importing a VHD")
        if regular and progress is None:
            result.fd = fd
            yield result
            return
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        result._own(read_end)
        result._own(write_end)
        result.fd = read_end
        _start_feed(result, rest, write_end, progress)
        yield result
    finally:
        result.close()


def _read_head(read: Callable[[], bytes]) -> bytes:
    head = b""
    while len(head) < _HEAD:
        chunk = read()
        if not chunk:
            break
        head += chunk
    return head


def _closer(result: ArchiveSource, fd: int) -> Callable[[], None]:
    def close() -> None:
        if fd in result._owned:
            result._owned.remove(fd)
            os.close(fd)
    return close


def _start_feed(result: ArchiveSource, read: Callable[[], bytes], write_end: int,
                progress: Progress | None) -> None:
    def feed(data: bytes) -> None:
        _write_all(write_end, data)

    pump = _Pump(read, feed, _closer(result, write_end), progress)
    result._pumps.append(pump)
    pump.start()


class ExportTarget:
    """Where the export worker writes (`fd`), and what carries it on to the caller's target."""

    def __init__(self) -> None:
        self.fd = -1
        self._owned: list[int] = []
        self._pumps: list[_Pump] = []
        self.created_path: str | None = None
        self._identity: UserIdentity | None = None

    def finish(self) -> None:
        """Wait until every byte reached the target; raise if writing it failed."""
        self._close_own(self.fd)
        for pump in self._pumps:
            pump.join()
            if pump.error is not None:
                reason = pump.error.strerror if isinstance(pump.error, OSError) else str(pump.error)
                raise WslError("WSL_E_EXPORT_FAILED", f"Writing the archive failed: {reason}")

    def _close_own(self, fd: int) -> None:
        if fd in self._owned:
            self._owned.remove(fd)
            os.close(fd)

    def abort(self) -> None:
        """Drop a partial result: remove the file this export created."""
        self._close_all()
        if self.created_path is not None and self._identity is not None:
            from pywsl.api.credentials import acting_as

            with acting_as(self._identity), contextlib.suppress(OSError):
                os.unlink(self.created_path)

    def _close_all(self) -> None:
        for fd in list(self._owned):
            self._close_own(fd)
        for pump in self._pumps:
            pump.join(5)


@contextlib.contextmanager
def open_export_target(target: Source, identity: UserIdentity, *, progress: Progress | None = None
                       ) -> Iterator[ExportTarget]:
    """A descriptor the export worker can write to; on an exception the partial file is removed."""
    result = ExportTarget()
    result._identity = identity
    try:
        stream: IO[bytes] | None = None
        if isinstance(target, bool):
            raise WslError("E_INVALIDARG", "The target must be a path, a file object or a descriptor.")
        if isinstance(target, int):
            fd = target
        elif isinstance(target, str | os.PathLike):
            path = os.path.abspath(os.fspath(target))
            try:
                fd = open_as(identity, path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOCTTY, 0o666)
            except OSError as error:
                raise WslError("ERROR_PATH_NOT_FOUND" if error.errno in (errno.ENOENT, errno.ENOTDIR)
                               else "E_ACCESSDENIED" if error.errno in (errno.EACCES, errno.EPERM)
                               else "E_INVALIDARG", f"{path}: {error.strerror}") from None
            result._owned.append(fd)
            result.created_path = path
        else:
            with contextlib.suppress(AttributeError, OSError, ValueError):
                target.flush()
            number = _fileno(target)
            if number is None:
                stream = target
                fd = -1
            else:
                fd = number
        if stream is None and progress is None:
            result.fd = fd
        else:
            read_end, write_end = os.pipe2(os.O_CLOEXEC)
            result._owned.extend((read_end, write_end))
            result.fd = write_end
            if stream is not None:
                sink = stream

                def write(data: bytes) -> None:
                    sink.write(data)
            else:
                def write(data: bytes) -> None:
                    _write_all(fd, data)

            pump = _Pump(_fd_reader(read_end), write, lambda: result._close_own(read_end), progress)
            result._pumps.append(pump)
            pump.start()
        yield result
        if stream is not None:
            with contextlib.suppress(AttributeError, OSError, ValueError):
                stream.flush()
    except BaseException:
        result.abort()
        raise
    finally:
        result._close_all()
