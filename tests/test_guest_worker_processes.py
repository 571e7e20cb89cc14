"""The import/export worker's watch over its programs, with real child processes standing in for
tar and the decompressor: tar's diagnostics forwarded and read for a full disk, the host going
away, the decompressor's end, and the device node filter in front of tar."""

from __future__ import annotations

import errno
import io
import os
import select
import signal
import socket
import tarfile
from collections.abc import Iterator

import pytest

from pywsl.guest import forking, mounts, worker_processes
from pywsl.guest.worker_processes import finish_decompressor, start_device_filter, watch_tar

SH = "/bin/sh"


def _start(script: str, stderr: int = 2) -> int:
    """``sh -c script`` as a child of this process (a pid to wait for, as the worker's tar)."""
    actions = [(os.POSIX_SPAWN_DUP2, stderr, 2)]
    return os.posix_spawn(SH, [SH, "-c", script], {"PATH": "/usr/bin:/bin"}, file_actions=actions)


def _read_all(fd: int) -> bytes:
    chunks: list[bytes] = []
    while True:
        ready, _, _ = select.select([fd], [], [], 30)
        assert ready, "nothing came within 30 s"
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


@pytest.fixture
def channel() -> Iterator[tuple[socket.socket, socket.socket]]:
    """The worker's result channel: (the worker's end, the host's end)."""
    worker, host = socket.socketpair()
    yield worker, host
    worker.close()
    host.close()


def _watch(
    script: str, channel: tuple[socket.socket, socket.socket], *, writes_target: bool = True
) -> tuple[worker_processes.TarOutcome, bytes]:
    """``script`` watched as tar is: the outcome and what reached the host's stderr."""
    diagnostics, diagnostics_write = os.pipe()
    forwarded, forwarded_write = os.pipe()
    try:
        pid = _start(script, stderr=diagnostics_write)
        os.close(diagnostics_write)
        diagnostics_write = -1
        outcome = watch_tar(
            pid, diagnostics, forwarded_write, channel[0].fileno(), writes_target=writes_target
        )
        os.close(forwarded_write)
        forwarded_write = -1
        return outcome, _read_all(forwarded)
    finally:
        for fd in (diagnostics_write, forwarded_write, forwarded):
            if fd >= 0:
                os.close(fd)


def test_find_program_looks_in_the_program_folders() -> None:
    assert worker_processes.find_program("sh") in {"/usr/bin/sh", "/bin/sh"}
    assert worker_processes.find_program("no-such-program-here") == "/usr/bin/no-such-program-here"


def test_a_program_that_cannot_start_says_why_and_exits_127() -> None:
    """The worker's root has its target at /target; here there is none, so the child's chdir fails."""
    assert not os.path.exists(mounts.WORKER_TARGET)
    errors, errors_write = os.pipe()
    try:
        pid = worker_processes.spawn(["true"], 0, 1, errors_write)
        os.close(errors_write)
        errors_write = -1
        assert forking.wait_for(pid) == 127
        assert _read_all(errors).decode().startswith("pywsl: cannot run /usr/bin/true: ")
    finally:
        os.close(errors)
        if errors_write >= 0:
            os.close(errors_write)


def test_a_tar_that_succeeds_has_its_diagnostics_forwarded(
    channel: tuple[socket.socket, socket.socket],
) -> None:
    outcome, forwarded = _watch("echo 'tar: a warning' >&2; exit 0", channel)
    assert outcome == worker_processes.TarOutcome(status=0, full_disk=0, host_gone=False)
    assert forwarded == b"tar: a warning\n"


@pytest.mark.parametrize(
    ("message", "code"),
    [("No space left on device", errno.ENOSPC), ("Disk quota exceeded", errno.EDQUOT)],
)
def test_a_full_disk_stops_tar_at_once(
    channel: tuple[socket.socket, socket.socket], message: str, code: int
) -> None:
    # One message in two writes, as tar makes them; tar would then go on with the archive.
    script = f"printf 'tar: ./big: Cannot open' >&2; printf ': {message}\\n' >&2; exec sleep 60"
    outcome, forwarded = _watch(script, channel)
    assert outcome == worker_processes.TarOutcome(
        status=128 + signal.SIGKILL, full_disk=code, host_gone=False
    )
    assert forwarded == f"tar: ./big: Cannot open: {message}\n".encode()


def test_a_failed_write_with_room_left_is_not_a_full_disk(
    channel: tuple[socket.socket, socket.socket],
) -> None:
    """A short write makes the worker look at its target's free space (none here: not full)."""
    outcome, _forwarded = _watch("echo 'tar: ./x: Wrote only 512 of 10240 bytes' >&2; exit 2", channel)
    assert outcome == worker_processes.TarOutcome(status=2, full_disk=0, host_gone=False)
    assert worker_processes.target_full() == 0  # no /target here: nothing to look at


def test_the_host_going_away_stops_tar(channel: tuple[socket.socket, socket.socket]) -> None:
    channel[1].close()
    assert worker_processes.host_gone(channel[0].fileno())
    outcome, forwarded = _watch("exec sleep 60", channel)
    assert outcome == worker_processes.TarOutcome(status=128 + signal.SIGKILL, full_disk=0, host_gone=True)
    assert forwarded == b""


def test_a_decompressor_after_a_failed_tar_is_stopped(channel: tuple[socket.socket, socket.socket]) -> None:
    assert not worker_processes.host_gone(channel[0].fileno())
    pid = _start("exec sleep 60")
    assert finish_decompressor(pid, frozenset({0}), 2, channel[0].fileno()) == 0
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # stopped and reaped


@pytest.mark.parametrize(
    ("script", "accepted", "expected"),
    [
        ("exit 2", frozenset({0, 2}), 0),  # gzip's warning
        ("exit 1", frozenset({0, 2}), 1),
        ("kill -PIPE $$", frozenset({0}), 0),  # tar closed its end first
    ],
)
def test_a_decompressor_that_ends_after_tar_gives_its_status(
    channel: tuple[socket.socket, socket.socket], script: str, accepted: frozenset[int], expected: int
) -> None:
    pid = _start(script)
    assert finish_decompressor(pid, accepted, 0, channel[0].fileno()) == expected


def test_a_decompressor_still_reading_after_its_grace_is_stopped(
    channel: tuple[socket.socket, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker_processes, "DECOMPRESSOR_GRACE", 0.2)
    pid = _start("exec sleep 60")
    assert finish_decompressor(pid, frozenset({0}), 0, channel[0].fileno()) == 0
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _archive() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for name, kind in (
            ("a.txt", tarfile.REGTYPE),
            ("dev/null", tarfile.CHRTYPE),
            ("b.txt", tarfile.REGTYPE),
        ):
            info = tarfile.TarInfo(name)
            info.type = kind
            data = name.encode() * 100 if kind == tarfile.REGTYPE else b""
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue() + b"data after the archive"


def test_the_device_filter_hands_on_the_archive_without_its_device_nodes() -> None:
    source, source_write = os.pipe()
    device_filter = start_device_filter(source)
    os.close(source)
    try:
        assert device_filter.skipped() is None  # nothing read yet
        with os.fdopen(source_write, "wb") as stream:
            source_write = -1
            stream.write(_archive())
        output = _read_all(device_filter.output_fd)
        assert device_filter.skipped() == 1
        with tarfile.open(fileobj=io.BytesIO(output)) as filtered:
            assert filtered.getnames() == ["a.txt", "b.txt"]
        assert output.endswith(b"data after the archive")  # what follows passes as it is
    finally:
        if source_write >= 0:
            os.close(source_write)
        os.close(device_filter.output_fd)
        device_filter.close()
