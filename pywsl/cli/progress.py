"""Progress of imports, exports and downloads, on stderr (wsl.exe's `HandleConsoleProgressBar`).

wsl.exe does not ask the service how far an import or export got: it watches the file it handed
over — the read position of the source, the size of the target. pywsl does the same with the file
descriptor it passes to the session (the guest reads and writes the same open file, so its offset
and size move), which works in-process and through the service alike. Downloads report their
progress through the installer's callback.

On a terminal this is a rich progress bar (cleared when done) with the bytes moved so far and the
average rate; otherwise one line saying what is in progress, and no progress at all. rich is
imported only when a bar is drawn.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import threading
import time
from types import TracebackType
from typing import Any

from pywsl.cli.render import no_color, use_rich

__all__ = ["FdWatcher", "TransferProgress"]

POLL_INTERVAL = 0.1  # seconds


class TransferProgress:
    """A progress display for one transfer; `update(done, total)` and `status(text)` from any thread.

    `description` is shown beside the bar (and printed once when there is no terminal); `in_bytes`
    says whether the counts are bytes (shown as sizes) or plain units (shown as a percentage).
    """

    def __init__(self, description: str | None, *, total: int | None = None, in_bytes: bool = True) -> None:
        self.description = description
        self.total = total
        self.in_bytes = in_bytes
        self._progress: Any = None
        self._task: Any = None
        self._lock = threading.Lock()
        self._started = time.monotonic()

    @property
    def drawing(self) -> bool:
        """Whether a progress bar is on the terminal (False when stderr is not one)."""
        return self._progress is not None

    def __enter__(self) -> TransferProgress:
        self._started = time.monotonic()
        if use_rich(sys.stderr):
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                Progress,
                SpinnerColumn,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}", markup=False),
                BarColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[detail]}", markup=False),
                TimeElapsedColumn(),
                console=Console(stderr=True, no_color=no_color(), highlight=False),
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task(self.description or "", total=self.total, detail="")
        elif self.description:
            _write_line(self.description)
        return self

    def _detail(self, done: int) -> str:
        if not self.in_bytes:
            return ""
        from rich.filesize import decimal

        amount = decimal(done) if self.total is None else f"{decimal(done)} / {decimal(self.total)}"
        elapsed = time.monotonic() - self._started
        rate = done / elapsed if elapsed > 0 else 0.0
        return f"{amount} ({decimal(int(rate))}/s)"

    def update(self, done: int, total: int | None = None) -> None:
        with self._lock:
            if total is not None:
                self.total = total
            if self._progress is not None:
                self._progress.update(self._task, completed=done, total=self.total, detail=self._detail(done))

    def status(self, text: str) -> None:
        """A step message: printed above the bar, which restarts with it as its description."""
        with self._lock:
            if self._progress is None:
                _write_line(text)
                return
            self._progress.console.print(text, markup=False, highlight=False)
            self.total = None
            self._progress.reset(self._task, description=text.splitlines()[0], total=None, detail="")

    def __call__(self, done: int, total: int | None = None) -> None:
        """The installer's progress callback."""
        self.update(done, total)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._progress.refresh()  # the last figures are drawn once before the bar is cleared
            self._progress.stop()
            self._progress = None


def _write_line(text: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(text + "\n")
        sys.stderr.flush()


class FdWatcher:
    """Polls a file descriptor: its read offset ("read") or its size ("write"), into a display."""

    def __init__(self, fd: int, mode: str, display: TransferProgress) -> None:
        self.fd = fd
        self.mode = mode
        self.display = display
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pywsl-progress", daemon=True)

    def _sample(self) -> tuple[int, int | None] | None:
        info = os.fstat(self.fd)
        if not stat.S_ISREG(info.st_mode):
            return None
        if self.mode == "read":
            return os.lseek(self.fd, 0, os.SEEK_CUR), info.st_size
        return info.st_size, None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                sample = self._sample()
            except OSError:
                return
            if sample is None:
                return
            self.display.update(*sample)
            self._stop.wait(POLL_INTERVAL)

    def __enter__(self) -> FdWatcher:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(OSError):
            sample = self._sample()  # where the transfer ended, for the last frame
            if sample is not None:
                self.display.update(*sample)
