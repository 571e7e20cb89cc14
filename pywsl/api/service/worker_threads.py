"""Threads that run the service's requests, kept for the next request instead of made for each.

A warm launch through the service is two short requests; starting a thread for each is a cost the
caller waits for. ``WorkerThreads.submit(job)`` hands the job to a thread that waits for work, or
starts one when none waits. A thread that finished its job waits for the next one while fewer
than ``keep`` threads wait, and ends otherwise: the threads that exist are the requests running
now plus at most ``keep`` waiting ones (how many run at once is the loop's business,
``WorkerLimits``). ``close`` ends the waiting threads.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

__all__ = ["KEEP_WAITING", "WorkerThreads"]

KEEP_WAITING = 2  # threads kept waiting for the next request

Job = Callable[[], None]


class WorkerThreads:
    """Run jobs on reused threads (see the module's description)."""

    def __init__(self, name: str, keep: int = KEEP_WAITING) -> None:
        self._name = name
        self._keep = keep
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._waiting = 0
        self._closed = False

    def submit(self, job: Job) -> None:
        """Run ``job`` on a waiting thread, or on a new one (RuntimeError when none can be made)."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the worker threads are closed")
            if self._waiting:
                self._waiting -= 1
                self._jobs.put(job)
                return
        threading.Thread(target=self._serve, args=(job,), daemon=True, name=self._name).start()

    def close(self) -> None:
        """End the waiting threads (a running job finishes, then its thread ends)."""
        with self._lock:
            self._closed = True
            waiting, self._waiting = self._waiting, 0
        for _ in range(waiting):
            self._jobs.put(None)

    def _serve(self, job: Job | None) -> None:
        while job is not None:
            job()
            with self._lock:
                if self._closed or self._waiting >= self._keep:
                    return
                self._waiting += 1
            job = self._jobs.get()
