"""The monitor's interop workers: a worker per connection while it lasts, reused once idle, one kept ready."""

from __future__ import annotations

import os
import signal
import socket

from conftest import pid_alive, wait_until

from pywsl.guest import interop_messages as messages
from pywsl.guest.interop_workers import MAX_IDLE, InteropWorkers

DEADLINE = 30.0


def _call(workers: InteropWorkers, script: str) -> tuple[int, int, bytes]:
    """Serve one connection: (response, exit status, the program's output)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    output_read, output_write = os.pipe()
    with ours, os.fdopen(output_read, "rb") as output:
        try:
            workers.serve(theirs.fileno())
        finally:
            theirs.close()
        request = messages.encode_create_process("/bin/sh", "/", ["-c", script], ["PATH=/usr/bin:/bin"])
        socket.send_fds(ours, [request], [0, output_write, 2])
        os.close(output_write)
        ours.settimeout(DEADLINE)
        response = ours.recv(40, socket.MSG_WAITALL)
        status = ours.recv(20, socket.MSG_WAITALL)
        printed = output.read()
    return messages.int32_at_16(response), messages.int32_at_16(status), printed


def _track(workers: InteropWorkers, pids: set[int]) -> None:
    """Add the workers there are now to ``pids`` (every one is reaped at the end)."""
    pids.update(pid for _sock, pid in workers.idle + workers.busy)


def _reap(pids: set[int]) -> None:
    for pid in pids:
        _pid, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0  # let go: it leaves without an error


def test_calls_one_after_the_other_reuse_an_idle_worker_and_one_waits() -> None:
    workers = InteropWorkers(os.geteuid())
    served: list[int] = []
    try:
        for number in range(4):
            response, status, printed = _call(workers, f"echo $PPID; exit {number}")
            assert (response, status) == (0, number)
            served.append(int(printed))  # the program's parent: the worker that served it
            assert wait_until(lambda: workers.spare_pid == served[-1])  # idle again, next in line
        # One worker served every call; the one forked beside it at the first call still waits.
        assert len(set(served)) == 1
        pids = {pid for _sock, pid in workers.idle}
        assert len(pids) == 2 and not workers.busy
        assert all(pid_alive(pid) for pid in pids)
    finally:
        workers.close()
    _reap(pids)  # the monitor's end closed: every worker leaves


def test_a_busy_worker_gets_no_other_connection() -> None:
    workers = InteropWorkers(os.geteuid())
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pids: set[int] = set()
    try:
        with ours:
            workers.serve(theirs.fileno())
            _track(workers, pids)
            theirs.close()
            request = messages.encode_create_process("/bin/sh", "/", ["-c", "echo $PPID; read x; exit 0"], [])
            output_read, output_write = os.pipe()
            input_read, input_write = os.pipe()
            socket.send_fds(ours, [request], [input_read, output_write, 2])
            for fd in (input_read, output_write):
                os.close(fd)
            with os.fdopen(output_read, "rb") as output:
                busy = int(output.readline())  # the program waits on its stdin
                _response, _status, printed = _call(workers, "echo $PPID")
                _track(workers, pids)
                assert int(printed) != busy
                os.close(input_write)
            ours.settimeout(DEADLINE)
            assert messages.int32_at_16(ours.recv(40, socket.MSG_WAITALL)) == 0
            assert messages.int32_at_16(ours.recv(20, socket.MSG_WAITALL)) == 0
        assert {busy, int(printed)} <= pids
    finally:
        workers.close()
        _reap(pids)


def test_a_worker_that_died_is_replaced() -> None:
    workers = InteropWorkers(os.geteuid())
    pids: set[int] = set()
    try:
        _call(workers, "true")
        _track(workers, pids)
        dead = workers.spare_pid
        os.kill(dead, signal.SIGKILL)
        os.waitpid(dead, 0)
        pids.discard(dead)
        for number in range(2):
            _response, status, printed = _call(workers, f"echo $PPID; exit {number}")
            _track(workers, pids)
            assert status == number and int(printed) != dead
    finally:
        workers.close()
        _reap(pids - {dead})


def test_at_most_max_idle_workers_are_kept() -> None:
    workers = InteropWorkers(os.geteuid())
    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(MAX_IDLE + 2)]
    try:
        for _ours, theirs in pairs:  # all at once: a worker each
            workers.serve(theirs.fileno())
            theirs.close()
        pids: set[int] = set()
        _track(workers, pids)
        assert len(pids) == MAX_IDLE + 3
        for ours, _theirs in pairs:  # each caller leaves without a request: each worker is idle again
            ours.close()
        assert wait_until(
            lambda: workers.spare_pid > 0 and not workers.busy and len(workers.idle) == MAX_IDLE
        )
    finally:
        workers.close()
    _reap(pids)
