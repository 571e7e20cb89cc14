"""mini_init's refusals on a real utility VM (namespaces backend): what a host may send wrongly on a
mini_init channel, and that each refusal costs only that channel (or that start), never the VM."""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path
from typing import Any

import pytest
from conftest import BootedVm, VmFactory, pid_alive, run_in, wait_until
from test_vm_core import _closed, _raw_connection

from pywsl.wire import schema
from pywsl.wire.channel import MessageChannel
from pywsl.wire.enums import LX_MESSAGE_TYPE, LX_MINI_CREATE_INSTANCE_STEP

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the namespaces backend needs root")

LAUNCH_FIELDS: dict[str, Any] = {
    "MountDeviceType": 0,
    "DeviceId": 0,
    "FsType": "",
    "MountOptions": "",
    "VmId": "",
    "SharedMemoryRoot": "",
    "InstallPath": "",
    "UserProfile": "",
    "Flags": 0,
    "ConnectPort": 0,
}


def _send_launch(channel: MessageChannel, name: str, fds: list[int], message_type: int | None = None) -> None:
    header = {} if message_type is None else {"Header": {"MessageType": message_type}}
    with channel.start_transaction(5) as transaction:
        transaction.send(
            schema("LX_MINI_INIT_MESSAGE"), fds=fds, DistributionName=name, **header, **LAUNCH_FIELDS
        )


def _still_serving(booted: BootedVm) -> None:
    """A new channel is still greeted and answered, and the VM shuts down as usual (mini_init
    leaves by itself, rather than killed when the test ends)."""
    channel = _raw_connection(booted.runtime_dir)
    with channel.start_transaction(5) as transaction:
        transaction.send(schema("PYWSL_QUERY_INSTANCES"))
        transaction.receive(schema("PYWSL_INSTANCE_LIST"))
    channel.close()
    booted.vm.shutdown(force=False)
    assert wait_until(lambda: not pid_alive(booted.pid), timeout=10)


@pytest.mark.parametrize("name", ["", "a/b", "x" * 300])
def test_an_invalid_distribution_name_fails_that_start_only(
    vm_factory: VmFactory, tmp_path: Path, name: str
) -> None:
    booted = vm_factory.boot()
    channel = _raw_connection(booted.runtime_dir)
    rootfs = os.open(vm_factory.rootfs(vm=booted), os.O_RDONLY | os.O_DIRECTORY)
    ours, theirs = socket.socketpair()
    try:
        _send_launch(channel, name, [rootfs, theirs.fileno()])
        theirs.close()
        result, _fds = MessageChannel(ours, name="init channel").receive(
            schema("LX_MINI_INIT_CREATE_INSTANCE_RESULT"), timeout=10
        )
        assert result.Result == errno.EINVAL
        assert result.FailureStep == LX_MINI_CREATE_INSTANCE_STEP.LxInitCreateInstanceStepLaunchInit
        assert booted.vm.running_instances() == {}
        _still_serving(booted)
    finally:
        os.close(rootfs)
        ours.close()
        channel.close()


def test_an_init_channel_that_is_not_a_socket_closes_the_channel(vm_factory: VmFactory) -> None:
    booted = vm_factory.boot()
    channel = _raw_connection(booted.runtime_dir)
    rootfs = os.open(vm_factory.rootfs(vm=booted), os.O_RDONLY | os.O_DIRECTORY)
    read_end, write_end = os.pipe()
    try:
        _send_launch(channel, "Box", [rootfs, write_end])
        assert _closed(channel)
        _still_serving(booted)
    finally:
        for fd in (rootfs, read_end, write_end):
            os.close(fd)
        channel.close()


@pytest.mark.parametrize(
    "message_type",
    [LX_MESSAGE_TYPE.LxMiniInitMessageImport, LX_MESSAGE_TYPE.LxMiniInitMessageExport],
)
def test_an_import_or_export_without_its_descriptors_closes_the_channel(
    vm_factory: VmFactory, message_type: int
) -> None:
    booted = vm_factory.boot()
    channel = _raw_connection(booted.runtime_dir)
    try:
        _send_launch(channel, "Box", [], message_type)
        assert _closed(channel)
        _still_serving(booted)
    finally:
        channel.close()


def test_a_notify_channel_that_closes_is_dropped(vm_factory: VmFactory) -> None:
    booted = vm_factory.boot()
    instance = booted.vm.launch_instance("Box", vm_factory.rootfs(vm=booted), default_uid=0, hostname="box")
    notify = _raw_connection(booted.runtime_dir)
    with notify.start_transaction(5) as transaction:
        transaction.send(schema("PYWSL_ATTACH_NOTIFY"))
    notify.close()
    assert run_in(instance, "echo running").stdout == "running\n"
    instance.close()
    _still_serving(booted)


def _tar_fds(tmp_path: Path, result: int) -> list[int]:
    """An import's descriptors: the target folder, the result channel, the archive, stderr."""
    target = tmp_path / "target"
    target.mkdir()
    data_read, data_write = os.pipe()
    os.close(data_write)
    errors_read, errors_write = os.pipe()
    os.close(errors_read)
    return [os.open(target, os.O_RDONLY | os.O_DIRECTORY), result, data_read, errors_write]


def test_an_import_in_place_into_a_folder_is_refused_on_its_result_channel(
    vm_factory: VmFactory, tmp_path: Path
) -> None:
    booted = vm_factory.boot()
    channel = _raw_connection(booted.runtime_dir)
    ours, theirs = socket.socketpair()
    fds = _tar_fds(tmp_path, theirs.fileno())
    try:
        _send_launch(channel, "", fds, LX_MESSAGE_TYPE.LxMiniInitMessageImportInplace)
        theirs.close()
        result, _fds = MessageChannel(ours, name="result channel").receive(
            schema("LX_MINI_INIT_CREATE_INSTANCE_RESULT"), timeout=10
        )
        assert result.Result == errno.EINVAL  # in place needs a disk: only a qemu VM has them
        assert result.FailureStep == LX_MINI_CREATE_INSTANCE_STEP.LxInitCreateInstanceStepMountDisk
        _still_serving(booted)
    finally:
        for fd in (fds[0], fds[2], fds[3]):
            os.close(fd)
        ours.close()
        channel.close()


def test_an_import_whose_result_channel_is_not_a_socket_closes_the_channel(
    vm_factory: VmFactory, tmp_path: Path
) -> None:
    booted = vm_factory.boot()
    channel = _raw_connection(booted.runtime_dir)
    read_end, write_end = os.pipe()
    fds = _tar_fds(tmp_path, write_end)
    try:
        _send_launch(channel, "", fds, LX_MESSAGE_TYPE.LxMiniInitMessageImport)
        assert _closed(channel)
        _still_serving(booted)
    finally:
        for fd in (*fds, read_end):
            os.close(fd)
        channel.close()
