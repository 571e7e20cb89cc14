"""The monitor's interop workers: each connection served by a worker of its own, a spare kept ready."""

from __future__ import annotations

import os
import signal
import socket

from conftest import pid_alive

from pywsl.guest import interop_messages as messages
from pywsl.guest.interop_workers import InteropWorkers

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


def test_each_connection_has_its_own_worker_and_a_spare_waits() -> None:
    workers = InteropWorkers(os.geteuid())
    served: list[int] = []
    spares: list[int] = []
    try:
        for number in range(3):
            response, status, printed = _call(workers, f"echo $PPID; exit {number}")
            assert (response, status) == (0, number)
            served.append(int(printed))  # the program's parent: the worker that served it
            spares.append(workers.spare_pid)
        assert len(set(served)) == 3  # never the same worker twice
        assert served[1:] == spares[:2]  # the second and third calls went to the spares
        assert pid_alive(workers.spare_pid)
        spare = workers.spare_pid
    finally:
        workers.close()
        for pid in served:
            os.waitpid(pid, 0)
    # The monitor's end closed: the spare leaves without serving anything.
    _pid, status = os.waitpid(spare, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_spare_that_died_is_replaced() -> None:
    workers = InteropWorkers(os.geteuid())
    served: list[int] = []
    try:
        _response, _status, printed = _call(workers, "echo $PPID")
        served.append(int(printed))
        dead = workers.spare_pid
        os.kill(dead, signal.SIGKILL)
        os.waitpid(dead, 0)
        response, status, printed = _call(workers, "echo $PPID; exit 3")
        served.append(int(printed))
        assert (response, status) == (0, 3) and served[1] != dead
        spare = workers.spare_pid
    finally:
        workers.close()
        for pid in served:
            os.waitpid(pid, 0)
    _pid, status = os.waitpid(spare, 0)
    assert os.waitstatus_to_exitcode(status) == 0
