"""The small replacements a cold launch's boot uses instead of `contextlib`, `threading`, `socket`
and `math` (see `test_launch_import_set.COLD_LAUNCH_NEVER`): each behaves as what it replaced.

`error_context` and `acting_as` are classes now (`test_api_errors`, `test_api_credentials` run
them); here: the descriptor a CoreVm request carries (`core_vm._DirectoryFor`), the channel's
locks, deadlines and descriptor closing, and the cgroup helpers that no longer suppress through
`contextlib`.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from pywsl.api.errors import WslError, error_context
from pywsl.vm import VmError
from pywsl.vm.backends.namespaces import NamespacesBackend
from pywsl.vm.cgroups import VmCgroup, _enabled_controllers
from pywsl.vm.core_vm import _DirectoryFor
from pywsl.vm.disk_image import DiskImage
from pywsl.wire import channel as channel_module
from pywsl.wire import unix_sockets
from pywsl.wire.channel import MessageChannel


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_a_folder_path_is_opened_for_the_request_and_closed_after(tmp_path: Path) -> None:
    before = open_fds()
    with _DirectoryFor(NamespacesBackend(), tmp_path) as fd:
        assert os.path.samestat(os.fstat(fd), os.stat(tmp_path))
        assert open_fds() != before
    assert open_fds() == before


def test_a_folder_descriptor_is_the_callers_and_stays_open(tmp_path: Path) -> None:
    folder = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with _DirectoryFor(NamespacesBackend(), folder) as fd:
            assert fd == folder
        os.fstat(folder)  # still open
    finally:
        os.close(folder)


def test_what_is_no_folder_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "file"
    file.write_text("")
    fd = os.open(file, os.O_RDONLY)
    try:
        with pytest.raises(NotADirectoryError), _DirectoryFor(NamespacesBackend(), fd):
            pass
    finally:
        os.close(fd)
    for wrong in (str(tmp_path), True):
        with (
            pytest.raises(TypeError, match="a Path or an open descriptor"),
            _DirectoryFor(
                NamespacesBackend(),
                wrong,  # type: ignore[arg-type]
            ),
        ):
            pass


def test_a_disk_needs_the_qemu_backend(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(b"")
    fd = os.open(image, os.O_RDONLY)
    try:
        with pytest.raises(VmError, match="qemu backend"), _DirectoryFor(NamespacesBackend(), DiskImage(fd)):
            pass
    finally:
        os.close(fd)


def test_an_error_inside_still_closes_the_opened_folder(tmp_path: Path) -> None:
    before = open_fds()
    with pytest.raises(RuntimeError), _DirectoryFor(NamespacesBackend(), tmp_path):
        raise RuntimeError("the request failed")
    assert open_fds() == before


def test_the_channel_refuses_a_second_concurrent_sender() -> None:
    ours, theirs = unix_sockets.socketpair()
    channel = MessageChannel(ours, name="test channel")
    try:
        lock = channel._send_lock
        with channel._exclusive(lock, "sender"):
            with (
                pytest.raises(RuntimeError, match="a second concurrent sender"),
                channel._exclusive(lock, "sender"),
            ):
                pass
            assert lock.locked()
        assert not lock.locked()
        with pytest.raises(ValueError), channel._exclusive(lock, "sender"):
            raise ValueError("inside")
        assert not lock.locked()  # released on the way out of an error too
    finally:
        channel.close()
        theirs.close()


@pytest.mark.parametrize("timeout", [float("nan"), -1.0])
def test_a_deadline_needs_a_number_of_seconds(timeout: float) -> None:
    with pytest.raises(ValueError, match="non-negative"):
        channel_module._deadline(timeout)


def test_a_short_wait_is_rounded_up_to_a_millisecond() -> None:
    ours, theirs = unix_sockets.socketpair()
    channel = MessageChannel(ours, name="test channel")
    try:
        with pytest.raises(TimeoutError):
            channel._wait(1, channel_module._deadline(0.0001), "reading")  # POLLIN, nothing comes
    finally:
        channel.close()
        theirs.close()


def test_closing_descriptors_ignores_those_already_closed() -> None:
    read_end, write_end = os.pipe()
    os.close(write_end)
    channel_module._close_fds([read_end, write_end])  # the second is closed already
    with pytest.raises(OSError):
        os.fstat(read_end)


def test_a_group_without_controllers_file_has_none(tmp_path: Path) -> None:
    assert _enabled_controllers(tmp_path / "missing") == set()
    (tmp_path / "cgroup.controllers").write_text("cpu memory\n")
    assert _enabled_controllers(tmp_path) == {"cpu", "memory"}


def test_the_processes_of_groups_that_are_gone_are_none(tmp_path: Path) -> None:
    present = tmp_path / "present"
    (present / "child").mkdir(parents=True)
    (present / "cgroup.procs").write_text("12\n")
    (present / "child" / "cgroup.procs").write_text("34\n56\n")
    assert VmCgroup((tmp_path / "gone", present)).process_ids() == {12, 34, 56}


def test_the_error_context_is_per_thread_and_ends_with_its_block() -> None:
    seen: list[str] = []

    def other() -> None:
        with pytest.raises(WslError) as caught, error_context("Other"):
            raise WslError("E_FAIL")
        seen.append(caught.value.context)

    with error_context("Outer"):
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        with pytest.raises(WslError) as caught, error_context("Inner"):
            raise WslError("E_FAIL")
    assert seen == ["Wsl/Service/Other"]
    assert caught.value.context == "Wsl/Service/Outer/Inner"
    with pytest.raises(WslError) as after, error_context("Again"):
        raise WslError("E_FAIL")
    assert after.value.context == "Wsl/Service/Again"  # the blocks above left nothing behind


def test_an_os_error_becomes_a_wsl_error_with_the_context() -> None:
    with pytest.raises(WslError) as caught, error_context("ReadFile"):
        raise FileNotFoundError(2, "No such file or directory", "/x")
    assert caught.value.context == "Wsl/Service/ReadFile"
    assert isinstance(caught.value.__cause__, FileNotFoundError)
