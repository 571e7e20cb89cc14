"""Moving archive bytes between the caller's files and the VM's import and export workers.

WSL's service relays the client's file handle to the guest's `bsdtar` over an hvsocket
(`InterruptableRelay`) and streams bsdtar's stderr back to the client. Here the VM's workers take
file descriptors directly, so this module only has to turn what the caller gave (a path, a file
object, a descriptor, a pipe) into a descriptor:

* import: what the source is decides how it travels. A regular file is handed over as it is (the
  VM's worker detects and undoes gzip, xz, bzip2 and zstd compression itself, inside the VM). A
  pipe, a FIFO or a stream socket ("-", standard input) is read here and relayed through a pipe
  of our own: every wait on it is bounded (`ARCHIVE_IDLE_TIMEOUT` without a byte fails the
  import) and ends at once when the import stops or the client goes away (the request's
  `cancellation` token), so a source that never ends or never sends cannot hold the service.
  Anything else (a character or block device such as `/dev/zero`, an eventfd or other anonymous
  descriptor, a directory, a descriptor not open for reading) is refused up front, and so is a
  source whose first bytes are not a tar archive (plain or compressed) or that is empty. A disk
  image (VHD, VHDX) is refused with a clear error;
* export: the VM writes to the target descriptor; a file object without a descriptor (or a
  progress callback) is fed through a pipe, relayed with the same bounded, cancellable waits;
* progress: when asked for, the bytes go through a pipe and are counted;
* the worker's stderr is collected (its tail goes into the error message of a failure).

Paths are opened with the user's rights (`credentials.open_as`), without blocking (a FIFO) and
without a controlling terminal.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO, Any, BinaryIO

from pywsl.api import cancellation
from pywsl.api.credentials import UserIdentity, acting_as, open_as
from pywsl.api.errors import WslError, from_os_error

__all__ = [
    "ARCHIVE_IDLE_TIMEOUT",
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
# A streamed archive (pipe, FIFO, socket) that sends nothing for this long fails the import.
ARCHIVE_IDLE_TIMEOUT = 300.0
# How long closing a source waits for its relay thread (it wakes at once; this only bounds a bug).
_JOIN_TIMEOUT = 30.0
_CHUNK = 1 << 20
_HEAD = 512
_STDERR_TAIL = 16 * 1024


def _tar_checksum_valid(block: bytes) -> bool:
    """Whether a 512-byte block is a tar header (its checksum field matches, as tar checks it)."""
    field = block[148:156].split(b"\0", 1)[0].strip(b" ")
    try:
        recorded = int(field, 8)
    except ValueError:
        return False
    unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:512])
    signed = unsigned - 2 * sum(byte for byte in block[:148] + block[156:512] if byte >= 128)
    return recorded in (unsigned, signed)


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
    if len(head) >= 512 and not head[:512].strip(b"\0"):
        return "tar"  # an empty archive: end-of-archive blocks only
    if len(head) >= 512 and _tar_checksum_valid(head[:512]):
        return "tar"  # a pre-POSIX (v7) header
    return "unknown"


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class _Stopped(Exception):
    """A relay was told to stop (the operation ended, or the client went away)."""


class _StopSignal:
    """Wakes a relay's waits: a pipe that `fire` makes readable (safe to fire after `close`)."""

    def __init__(self) -> None:
        self.fd, self._write_fd = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._lock = threading.Lock()
        self.fired = False
        self.cancelled = False

    def fire(self, *, cancelled: bool = False) -> None:
        with self._lock:
            self.cancelled = self.cancelled or cancelled
            self.fired = True
            if self._write_fd >= 0:
                with contextlib.suppress(OSError):
                    os.write(self._write_fd, b"\0")

    def close(self) -> None:
        with self._lock:
            for fd in (self.fd, self._write_fd):
                if fd >= 0:
                    os.close(fd)
            self.fd = self._write_fd = -1


def _wait(fd: int, events: int, stop: _StopSignal, timeout: float | None) -> bool:
    """Wait until ``fd`` is ready for ``events``; False on timeout, _Stopped when stopped."""
    ready = select.poll()
    ready.register(fd, events)
    ready.register(stop.fd, select.POLLIN)
    found = dict(ready.poll(None if timeout is None else max(0, int(timeout * 1000))))
    if stop.fd in found or stop.fired:
        raise _Stopped()
    return bool(found)


class _StreamReader:
    """Reads a pipe, FIFO or stream socket without ever blocking for good: it reads through its
    own non-blocking open of the pipe (`/proc/self/fd`, so the caller's file status flags stay
    as they are) or non-blocking `recv`, waits at most `ARCHIVE_IDLE_TIMEOUT` for each chunk, and
    stops when its `_StopSignal` fires."""

    def __init__(self, fd: int, stop: _StopSignal, idle_timeout: float) -> None:
        self._stop = stop
        self._idle_timeout = idle_timeout
        self._socket: socket.socket | None = None
        if stat.S_ISSOCK(os.fstat(fd).st_mode):
            self._socket = socket.socket(fileno=os.dup(fd))
            self.fd = self._socket.fileno()
        else:
            self.fd = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)

    def read(self) -> bytes:
        deadline = time.monotonic() + self._idle_timeout
        while True:
            if not _wait(self.fd, select.POLLIN, self._stop, deadline - time.monotonic()):
                raise WslError(
                    "WSL_E_IMPORT_FAILED",
                    f"The archive stream sent nothing for {self._idle_timeout:g} seconds.",
                )
            try:
                if self._socket is not None:
                    return self._socket.recv(_CHUNK, socket.MSG_DONTWAIT)
                return os.read(self.fd, _CHUNK)
            except BlockingIOError:
                continue  # someone else took it first: wait again

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
        elif self.fd >= 0:
            os.close(self.fd)
        self.fd = -1


def _bounded_writer(fd: int, stop: _StopSignal) -> Callable[[bytes], None]:
    """Writes to our own non-blocking pipe end ``fd``, waiting for room until `stop` fires."""
    os.set_blocking(fd, False)

    def write(data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(fd, view) :]
            except BlockingIOError:
                _wait(fd, select.POLLOUT, stop, None)

    return write


class _Pump(threading.Thread):
    """Copies `read` → `write` on its own thread; keeps the first error for `join_checked`."""

    def __init__(
        self,
        read: Callable[[], bytes],
        write: Callable[[bytes], None],
        on_end: Callable[[], None],
        progress: Progress | None = None,
    ) -> None:
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
        except BaseException as error:  # reported by join_checked
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
        self._readers: list[_StreamReader] = []
        self._stop = _StopSignal()
        self.format = "tar"

    def _own(self, fd: int) -> int:
        self._owned.append(fd)
        return fd

    def _close_own(self, fd: int) -> None:
        if fd in self._owned:
            self._owned.remove(fd)
            os.close(fd)

    def cancel(self) -> None:
        """The client went away: stop feeding the worker (it then sees the end of its input)."""
        self._stop.fire(cancelled=True)

    def _halt(self) -> None:
        """Stop the relay and wait for its thread (it wakes at once)."""
        self._stop.fire()
        for pump in self._pumps:
            pump.join(_JOIN_TIMEOUT)

    def close(self) -> None:
        """Stop feeding and release every descriptor (after the relay's thread has ended)."""
        self._halt()
        for fd in list(self._owned):
            self._close_own(fd)
        for reader in self._readers:
            reader.close()
        self._readers.clear()
        self._stop.close()

    def check(self) -> None:
        """Once the worker is done with the archive: end the relay (what follows the end of the
        archive is not read) and raise if reading the archive failed or was cancelled."""
        self._close_own(self.fd)  # the worker has its own copy; without ours a blocked write ends
        self._halt()
        for pump in self._pumps:
            error = pump.error
            if isinstance(error, _Stopped) and self._stop.cancelled:
                raise WslError("E_ABORT", "The import was canceled because the client went away.")
            if (
                error is None
                or isinstance(error, _Stopped)
                or (isinstance(error, OSError) and error.errno == errno.EPIPE)
            ):
                continue
            if isinstance(error, WslError):
                raise error
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


def _is_anonymous(fd: int) -> bool:
    """An eventfd, signalfd, timerfd, epoll or other descriptor without a file behind it."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}").startswith("anon_inode:")
    except OSError:
        return False


def _refuse(what: str) -> WslError:
    return WslError(
        "E_INVALIDARG",
        f"The archive is {what}, not a file or a pipe: give a tar archive "
        "(a file, or '-' with the archive on standard input).",
    )


def source_kind(fd: int) -> str:
    """ "regular" (handed to the worker as it is) or "stream" (relayed here); anything the import
    does not read from raises a clear WslError."""
    if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE not in (os.O_RDONLY, os.O_RDWR):
        raise WslError("E_INVALIDARG", "The archive descriptor is not open for reading.")
    info = os.fstat(fd)
    if stat.S_ISDIR(info.st_mode):
        raise WslError("E_INVALIDARG", "The archive is a directory, not a file.")
    if _is_anonymous(fd):
        raise _refuse("an event or other anonymous descriptor")
    if stat.S_ISREG(info.st_mode):
        if info.st_size == 0:
            raise WslError(
                "WSL_E_IMPORT_FAILED", "The archive is empty (a file of 0 bytes is not a tar archive)."
            )
        return "regular"
    return _stream_kind(fd, info.st_mode)


def _stream_kind(fd: int, mode: int) -> str:
    """ "stream" for a pipe, a FIFO or a stream socket; WslError for any other file that is not
    a regular one."""
    if stat.S_ISFIFO(mode):
        return "stream"
    if stat.S_ISSOCK(mode):
        if _socket_type(fd) == socket.SOCK_STREAM:
            return "stream"
        raise _refuse("a socket that is not a stream")
    if stat.S_ISCHR(mode):
        raise _refuse("a character device (a terminal, /dev/zero, /dev/urandom, ...)")
    if stat.S_ISBLK(mode):
        raise _refuse("a block device")
    raise _refuse("neither a file nor a pipe")


def _socket_type(fd: int) -> int:
    probe = socket.socket(fileno=os.dup(fd))
    try:
        return int(probe.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE))
    finally:
        probe.close()


@contextlib.contextmanager
def open_archive_source(
    source: Source,
    identity: UserIdentity,
    *,
    progress: Progress | None = None,
    idle_timeout: float = ARCHIVE_IDLE_TIMEOUT,
) -> Iterator[ArchiveSource]:
    """A descriptor the import worker reads `source` from (see the module docstring); closes what
    it opened. The current request's cancellation stops the relay."""
    result = ArchiveSource()
    try:
        with cancellation.current().on_cancel(result.cancel):
            yield from _prepare_source(result, source, identity, progress, idle_timeout)
    finally:
        result.close()


def _open_path(source: str | os.PathLike[str], identity: UserIdentity) -> int:
    try:
        return open_as(identity, source, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as error:
        raise WslError(
            "ERROR_FILE_NOT_FOUND"
            if error.errno == errno.ENOENT
            else "E_ACCESSDENIED"
            if error.errno in (errno.EACCES, errno.EPERM)
            else "E_INVALIDARG",
            f"{os.fspath(source)}: {error.strerror}",
        ) from None


def _prepare_source(
    result: ArchiveSource,
    source: Source,
    identity: UserIdentity,
    progress: Progress | None,
    idle_timeout: float,
) -> Iterator[ArchiveSource]:
    fd, stream = _source_descriptor(result, source, identity)
    kind = source_kind(fd) if fd >= 0 else "object"
    head, read = _read_source_head(result, fd, kind, stream, idle_timeout)
    result.format = detect_format(head)
    _check_format(result.format, head)
    if kind == "regular" and progress is None:
        result.fd = fd
        yield result
        return
    _start_pump(result, read if kind == "regular" else _after_head(head, read), progress)
    yield result


def _source_descriptor(
    result: ArchiveSource, source: Source, identity: UserIdentity
) -> tuple[int, IO[bytes] | None]:
    """The descriptor `source` is read from (a path opened here belongs to `result`), or -1 and
    the file object itself when it has no descriptor."""
    if isinstance(source, bool):
        raise WslError("E_INVALIDARG", "The archive must be a path, a file object or a descriptor.")
    if isinstance(source, int):
        return source, None
    if isinstance(source, str | os.PathLike):
        return result._own(_open_path(source, identity)), None
    number = _fileno(source)
    if number is None:
        return -1, source
    return number, None


def _read_source_head(
    result: ArchiveSource, fd: int, kind: str, stream: IO[bytes] | None, idle_timeout: float
) -> tuple[bytes, Callable[[], bytes]]:
    """The archive's first bytes and the reader of what follows. A regular file's head is read
    where its offset stands without moving it (the reader starts there too); a stream's head is
    consumed, so `_after_head` gives it back first."""
    try:
        if kind == "regular":
            return os.pread(fd, _HEAD, os.lseek(fd, 0, os.SEEK_CUR)), _fd_reader(fd)
        if stream is not None:
            read = _reader_of(stream)
        else:
            reader = _StreamReader(fd, result._stop, idle_timeout)
            result._readers.append(reader)
            read = reader.read
        return _read_head(read), read
    except _Stopped:
        raise WslError("E_ABORT", "The import was canceled because the client went away.") from None
    except (OSError, ValueError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise WslError("WSL_E_IMPORT_FAILED", f"Reading the archive failed: {reason}") from None


def _after_head(head: bytes, read: Callable[[], bytes]) -> Callable[[], bytes]:
    """A reader that gives `head` back first, then what `read` reads."""
    first = [head]

    def rest() -> bytes:
        return first.pop() if first else read()

    return rest


def _start_pump(result: ArchiveSource, read: Callable[[], bytes], progress: Progress | None) -> None:
    """Relay what `read` gives through a pipe of our own; the worker reads its other end."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    result._own(read_end)
    result._own(write_end)
    result.fd = read_end
    pump = _Pump(
        read, _bounded_writer(write_end, result._stop), lambda: result._close_own(write_end), progress
    )
    result._pumps.append(pump)
    pump.start()


@contextlib.contextmanager
def open_image_source(source: Source, identity: UserIdentity) -> Iterator[int]:
    """A descriptor to read a disk image from: a path opened with the user's rights, or the
    caller's descriptor or file object (left open)."""
    if isinstance(source, str | os.PathLike):
        try:
            with acting_as(identity):
                fd = os.open(os.fspath(source), os.O_RDONLY | os.O_CLOEXEC)
        except OSError as error:
            raise WslError(from_os_error(error).code, f"{os.fspath(source)}: {error.strerror}") from None
        try:
            yield fd
        finally:
            os.close(fd)
        return
    yield source if isinstance(source, int) else source.fileno()


def _check_format(kind: str, head: bytes) -> None:
    if kind in ("vhd", "vhdx"):
        raise WslError(
            "WSL_E_IMPORT_FAILED", "This looks like a VHD file. Use --vhd to import a VHD instead of a tar."
        )
    if not head:
        raise WslError("WSL_E_IMPORT_FAILED", "The archive is empty.")
    if kind == "unknown":
        raise WslError(
            "WSL_E_IMPORT_FAILED",
            "The file is not a tar archive (plain, or compressed with gzip, xz, bzip2 or zstd).",
        )


def _read_head(read: Callable[[], bytes]) -> bytes:
    head = b""
    while len(head) < _HEAD:
        chunk = read()
        if not chunk:
            break
        head += chunk
    return head


class ExportTarget:
    """Where the export worker writes (`fd`), and what carries it on to the caller's target."""

    def __init__(self) -> None:
        self.fd = -1
        self._owned: list[int] = []
        self._pumps: list[_Pump] = []
        self._stop = _StopSignal()
        self._closers: list[Callable[[], None]] = []
        self.created_path: str | None = None
        self._identity: UserIdentity | None = None

    def cancel(self) -> None:
        """The client went away: stop relaying (the worker's next write fails)."""
        self._stop.fire(cancelled=True)

    def finish(self) -> None:
        """Wait until every byte reached the target; raise if writing it failed."""
        self._close_own(self.fd)
        for pump in self._pumps:
            pump.join()
            error = pump.error
            if error is None:
                continue
            if isinstance(error, _Stopped):
                raise WslError("E_ABORT", "The export was canceled because the client went away.")
            reason = error.strerror if isinstance(error, OSError) else str(error)
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
        self._stop.fire()
        for pump in self._pumps:
            pump.join(_JOIN_TIMEOUT)
        for fd in list(self._owned):
            self._close_own(fd)
        for close in self._closers:
            close()
        self._closers.clear()
        self._stop.close()


def _target_writer(fd: int, stop: _StopSignal) -> tuple[Callable[[bytes], None], Callable[[], None]]:
    """A writer to the caller's descriptor that a stop ends even when nobody reads a pipe: a pipe
    or FIFO is written through our own non-blocking open of it, a socket with non-blocking
    `send`; the closer releases what that opened."""
    if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE not in (os.O_WRONLY, os.O_RDWR):
        raise WslError("E_INVALIDARG", "The export target is not open for writing.")
    mode = os.fstat(fd).st_mode
    if stat.S_ISSOCK(mode):
        sock = socket.socket(fileno=os.dup(fd))

        def send(data: bytes) -> None:
            view = memoryview(data)
            while view:
                try:
                    view = view[sock.send(view, socket.MSG_DONTWAIT) :]
                except BlockingIOError:
                    _wait(sock.fileno(), select.POLLOUT, stop, None)

        return send, sock.close
    if stat.S_ISFIFO(mode):
        own = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        return _bounded_writer(own, stop), lambda: os.close(own)

    def write(data: bytes) -> None:
        _write_all(fd, data)

    return write, lambda: None


def _stream_writer(stream: IO[bytes]) -> Callable[[bytes], None]:
    def write(data: bytes) -> None:
        stream.write(data)

    return write


def _bounded_reader(fd: int, stop: _StopSignal) -> Callable[[], bytes]:
    """Reads our own pipe end ``fd`` (the worker's output) until its end or a stop."""
    os.set_blocking(fd, False)

    def read() -> bytes:
        while True:
            _wait(fd, select.POLLIN, stop, None)
            try:
                return os.read(fd, _CHUNK)
            except BlockingIOError:
                continue

    return read


def _open_target_path(path: str, identity: UserIdentity) -> int:
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOCTTY | os.O_NONBLOCK
    try:
        fd = open_as(identity, path, flags, 0o666)
    except OSError as error:
        if error.errno == errno.ENXIO:
            raise WslError("E_INVALIDARG", f"{path}: a FIFO that nobody reads.") from None
        raise WslError(
            "ERROR_PATH_NOT_FOUND"
            if error.errno in (errno.ENOENT, errno.ENOTDIR)
            else "E_ACCESSDENIED"
            if error.errno in (errno.EACCES, errno.EPERM)
            else "E_INVALIDARG",
            f"{path}: {error.strerror}",
        ) from None
    os.set_blocking(fd, True)
    return fd


@contextlib.contextmanager
def open_export_target(
    target: Source, identity: UserIdentity, *, progress: Progress | None = None
) -> Iterator[ExportTarget]:
    """A descriptor the export worker can write to; on an exception the partial file is removed.
    The current request's cancellation stops the relay."""
    result = ExportTarget()
    result._identity = identity
    try:
        with cancellation.current().on_cancel(result.cancel):
            stream = _prepare_target(result, target, identity, progress)
            yield result
        if stream is not None:
            with contextlib.suppress(AttributeError, OSError, ValueError):
                stream.flush()
    except BaseException:
        result.abort()
        raise
    finally:
        result._close_all()


def _prepare_target(
    result: ExportTarget, target: Source, identity: UserIdentity, progress: Progress | None
) -> IO[bytes] | None:
    stream: IO[bytes] | None = None
    if isinstance(target, bool):
        raise WslError("E_INVALIDARG", "The target must be a path, a file object or a descriptor.")
    if isinstance(target, int):
        fd = target
    elif isinstance(target, str | os.PathLike):
        path = os.path.abspath(os.fspath(target))
        fd = _open_target_path(path, identity)
        result._owned.append(fd)
        if stat.S_ISREG(os.fstat(fd).st_mode):
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
        return None
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    result._owned.extend((read_end, write_end))
    result.fd = write_end
    write: Callable[[bytes], None]
    if stream is not None:
        write = _stream_writer(stream)
    else:
        write, close = _target_writer(fd, result._stop)
        result._closers.append(close)
    pump = _Pump(
        _bounded_reader(read_end, result._stop), write, lambda: result._close_own(read_end), progress
    )
    result._pumps.append(pump)
    pump.start()
    return stream
