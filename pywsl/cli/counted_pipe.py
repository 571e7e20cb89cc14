"""Counting the bytes of an export whose target cannot be watched: a pipe, a socket, a device.

The progress display of a transfer watches the descriptor it hands to the session (`FdWatcher`: the
size of a regular file). A pipe has no size, so while a progress bar is drawn the session writes
into a pipe of ours instead, and a thread moves what arrives to the real target (`splice`, or
read/write where the target refuses splice), reporting the running total. Nothing is added when no
bar is drawn: the session then writes to the target itself.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import threading
import time
from types import TracebackType

from pywsl.cli.progress import TransferProgress

__all__ = ["CountedPipe"]

CHUNK = 1024 * 1024
POLL_INTERVAL_MS = 200
# Once every writer should be done, how long data may still be awaited from a copy of the write end
# that was not closed, before the copy stops.
LAST_WRITER_GRACE = 5.0


class CountedPipe:
    """`write_fd` goes to the session in place of `target`; what it receives reaches `target`.

    Used as a context manager around the transfer. On exit the write end is closed and the copy
    finishes what is in the pipe. A write error on the target (the reader went away) closes the read
    end, so the writer gets EPIPE as it would have from the target itself; `error` keeps it.
    """

    def __init__(self, target: int, display: TransferProgress) -> None:
        self.target = target
        self.display = display
        self.read_fd, self.write_fd = os.pipe2(os.O_CLOEXEC)
        self.moved = 0
        self.error: OSError | None = None
        self._splice = True
        self._writers_done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pywsl-counted-pipe", daemon=True)

    def __enter__(self) -> CountedPipe:
        self._thread.start()
        return self

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.write(self.target, view)
            except BlockingIOError:
                _wait_writable(self.target)
                continue
            view = view[written:]

    def _move(self) -> int:
        """Move what the pipe holds to the target; 0 at the end of the stream."""
        if self._splice:
            try:
                return os.splice(self.read_fd, self.target, CHUNK)
            except BlockingIOError:
                _wait_writable(self.target)
                return -1
            except OSError as error:
                if error.errno != errno.EINVAL:
                    raise
                self._splice = False  # an append-only file, a terminal: copy through memory
        data = os.read(self.read_fd, CHUNK)
        self._write_all(data)
        return len(data)

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self.read_fd, select.POLLIN)
        idle_since: float | None = None
        try:
            while True:
                if not poller.poll(POLL_INTERVAL_MS):
                    if self._writers_done.is_set():
                        idle_since = idle_since or time.monotonic()
                        if time.monotonic() - idle_since > LAST_WRITER_GRACE:
                            return
                    continue
                idle_since = None
                count = self._move()
                if count == 0:
                    return
                if count > 0:
                    self.moved += count
                    self.display.update(self.moved)
        except OSError as error:
            self.error = error
        finally:
            os.close(self.read_fd)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with contextlib.suppress(OSError):
            os.close(self.write_fd)
        self._writers_done.set()
        self._thread.join()


def _wait_writable(fd: int) -> None:
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    poller.poll(POLL_INTERVAL_MS)
