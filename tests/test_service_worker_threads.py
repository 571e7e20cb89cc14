"""The service's reused request threads (`pywsl.api.service.worker_threads`)."""

from __future__ import annotations

import threading

import pytest

from pywsl.api.service.worker_threads import WorkerThreads


def _run(threads: WorkerThreads, count: int) -> list[int]:
    """Submit `count` jobs that record their thread, all running at once; the idents."""
    started = threading.Barrier(count + 1)
    release = threading.Event()
    done = threading.Semaphore(0)
    idents: list[int] = []
    lock = threading.Lock()

    def job() -> None:
        with lock:
            idents.append(threading.get_ident())
        started.wait(10)
        release.wait(10)
        done.release()

    for _ in range(count):
        threads.submit(job)
    started.wait(10)
    release.set()
    for _ in range(count):
        assert done.acquire(timeout=10)
    return idents


def _waiting(threads: WorkerThreads, count: int) -> None:
    for _ in range(1000):
        with threads._lock:
            if threads._waiting == count:
                return
        threading.Event().wait(0.01)
    raise AssertionError(f"expected {count} waiting threads")


def test_a_thread_is_reused_for_the_next_job() -> None:
    threads = WorkerThreads("test-worker")
    try:
        first = _run(threads, 1)
        _waiting(threads, 1)
        second = _run(threads, 1)
        assert first == second
    finally:
        threads.close()


def test_only_a_few_threads_wait_after_a_burst() -> None:
    threads = WorkerThreads("test-worker", keep=2)
    before = threading.active_count()
    try:
        assert len(set(_run(threads, 8))) == 8  # they ran at once, each on its own thread
        _waiting(threads, 2)
        for _ in range(1000):
            if threading.active_count() <= before + 2:
                break
            threading.Event().wait(0.01)
        assert threading.active_count() <= before + 2
    finally:
        threads.close()


def test_close_ends_the_waiting_threads() -> None:
    threads = WorkerThreads("test-worker")
    before = threading.active_count()
    _run(threads, 2)
    _waiting(threads, 2)
    threads.close()
    for _ in range(1000):
        if threading.active_count() <= before:
            break
        threading.Event().wait(0.01)
    assert threading.active_count() <= before
    with pytest.raises(RuntimeError):
        threads.submit(lambda: None)
