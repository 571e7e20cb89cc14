"""ComUserSession against a fake ILxssUserSession: a ctypes vtable of callbacks with the declared
signatures (CFUNCTYPE standing in for WINFUNCTYPE), memory from the C allocator standing in for
CoTaskMemAlloc."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import socket
import stat
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from pywsl.api.com import interface, layout
from pywsl.api.com.session import ComUserSession, DiskStatus
from pywsl.api.com.vtable import ComInterface
from pywsl.api.errors import WslError
from pywsl.api.session import user_warnings

LIBC = ctypes.CDLL(ctypes.util.find_library("c"))
LIBC.malloc.restype = ctypes.c_void_p
LIBC.malloc.argtypes = [ctypes.c_size_t]
LIBC.free.argtypes = [ctypes.c_void_p]
DEBIAN = uuid.UUID("11111111-2222-3333-4444-555555555555")


def allocate(data: bytes) -> int:
    address = LIBC.malloc(max(1, len(data)))
    ctypes.memmove(address, data, len(data))
    return int(address)


def wide(text: str) -> int:
    return allocate(text.encode("utf-16-le") + b"\0\0")


class FakeSession:
    """A COM object whose methods are Python handlers; unhandled methods succeed and record."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.handlers: dict[str, Callable[..., int]] = {}
        self.released = 0
        self.seen: list[tuple[str, dict[str, Any]]] = []
        entries = sorted((*interface.IUNKNOWN_METHODS, *interface.METHODS), key=lambda m: m.slot)
        self._callbacks = [interface.prototype(m)(self._make(m.name)) for m in entries]
        self._vtable = (ctypes.c_void_p * len(entries))(
            *[ctypes.cast(c, ctypes.c_void_p) for c in self._callbacks]
        )
        self._object = ctypes.c_void_p(ctypes.addressof(self._vtable))

    @property
    def pointer(self) -> int:
        return ctypes.addressof(self._object)

    def _make(self, name: str) -> Callable[..., int]:
        def call(this: int, *args: Any) -> int:
            assert this == self.pointer
            if name == "Release":
                self.released += 1
                return 0
            self.calls.append((name, args))
            self.seen.append((name, self._snapshot(name, args)))
            handler = self.handlers.get(name)
            return handler(*args) if handler else 0

        return call

    @staticmethod
    def _snapshot(name: str, args: tuple[Any, ...]) -> dict[str, Any]:
        """The in-arguments as values, read while the caller's buffers are alive."""
        values: dict[str, Any] = {}
        for param, value in zip(interface.method(name).params, args, strict=True):
            if param.ctype is interface.LPGUID and param.direction == "in":
                values[param.name] = guid_at(value)
            elif param.ctype is interface.LPCWSTR and not param.name.endswith("Handle"):
                values[param.name] = layout.read_wide(value) if value else None
            elif (
                param.direction == "in"
                and value
                and isinstance(value, ctypes._Pointer)
                and isinstance(value.contents, ctypes.Structure)
            ):
                # A structure passed by pointer: copied now, the caller's buffer may go later.
                copy = type(value.contents).from_buffer_copy(value.contents)
                values[param.name] = ctypes.pointer(copy)
            else:
                values[param.name] = value
        return values

    def named(self, name: str) -> dict[str, Any]:
        return next(values for called, values in reversed(self.seen) if called == name)

    def last(self, name: str) -> tuple[Any, ...]:
        return next(args for called, args in reversed(self.calls) if called == name)


class PosixHost:
    """The host services on a POSIX system: descriptors are the handles."""

    def __init__(self) -> None:
        self.freed: list[int] = []
        self.console_modes: list[str] = []

    def free(self, address: int) -> None:
        self.freed.append(address)
        LIBC.free(address)

    def handle_of(self, fd: int) -> int:
        return fd

    def is_pipe(self, handle: int) -> bool:
        return stat.S_ISFIFO(os.fstat(handle).st_mode)

    def is_console(self, handle: int) -> bool:
        return False

    def console_size(self) -> tuple[int, int] | None:
        return None

    def enter_raw_console(self) -> Callable[[], None]:
        self.console_modes.append("raw")
        return lambda: self.console_modes.append("restored")

    def console_handle(self) -> int:
        return 0

    def socket_from_handle(self, handle: int) -> socket.socket:
        return socket.socket(fileno=handle)

    def close_handle(self, handle: int) -> None:
        os.close(handle)

    def current_directory(self) -> str:
        return "C:\\Users\\me"

    def environment_block(self) -> str:
        return "PATH=C:\\bin\0WSLENV=\0\0"

    def nt_path(self) -> str:
        return "C:\\bin"


@pytest.fixture
def fake() -> FakeSession:
    return FakeSession()


@pytest.fixture
def host() -> PosixHost:
    return PosixHost()


@pytest.fixture
def session(fake: FakeSession, host: PosixHost) -> ComUserSession:
    return ComUserSession(ComInterface(fake.pointer, host.free), host)


def guid_at(pointer: Any) -> uuid.UUID | None:
    return layout.uuid_from_guid(pointer.contents) if pointer else None


def write_guid(pointer: Any, value: uuid.UUID) -> None:
    pointer.contents = layout.guid_from_uuid(value)
    ctypes.memmove(ctypes.addressof(pointer.contents), value.bytes_le, 16)


def fail_with(hresult: int, message: str, context: int, warnings: str = "") -> Callable[..., int]:
    def handler(*args: Any) -> int:
        error = (
            args[-1]
            if not isinstance(args[-1], ctypes._Pointer) or args[-1]._type_ is layout.LXSS_ERROR_INFO
            else args[-2]
        )
        info = error.contents
        assert info.Flags == 0x3  # contextualized errors and warnings, as wsl.exe asks
        info.Message, info.Context = wide(message), context
        if warnings:
            info.Warnings = wide(warnings)
        return ctypes.c_int32(hresult).value

    return handler


def test_get_distribution_id_passes_the_name_and_returns_the_guid(
    fake: FakeSession, session: ComUserSession
) -> None:
    def handler(name: int, flags: int, error: Any, result: Any) -> int:
        assert layout.read_wide(name) == "Debian" and flags == 1
        ctypes.memmove(result, DEBIAN.bytes_le, 16)
        return 0

    fake.handlers["GetDistributionId"] = handler
    assert session.get_distribution_id("Debian", list_all=True) == DEBIAN


def test_a_failure_carries_the_service_message_context_and_warnings(
    fake: FakeSession, host: PosixHost, session: ComUserSession
) -> None:
    fake.handlers["GetDistributionId"] = fail_with(
        0x80040302,
        "There is no distribution with the supplied name.",
        0x1 | 0x40 | 0x200000,
        warnings="wsl.conf: bad key",
    )
    seen: list[str] = []
    with user_warnings.collecting(seen.append), pytest.raises(WslError) as caught:
        session.get_distribution_id("Nope")
    assert caught.value.code == "WSL_E_DISTRO_NOT_FOUND"
    assert caught.value.message == "There is no distribution with the supplied name."
    assert caught.value.error_code == "Wsl/Service/GetDistroId/WSL_E_DISTRO_NOT_FOUND"
    assert seen == ["wsl.conf: bad key"]
    assert len(host.freed) == 2  # Message and Warnings


def test_an_unknown_hresult_keeps_its_value(fake: FakeSession, session: ComUserSession) -> None:
    fake.handlers["Shutdown"] = lambda force: ctypes.c_int32(0x80071234).value
    with pytest.raises(WslError) as caught:
        session.shutdown(force=True)
    assert caught.value.hresult == 0x80071234 and caught.value.code == "0x80071234"
    assert fake.last("Shutdown") == (1,)


def test_enumerate_reads_and_frees_the_array(
    fake: FakeSession, host: PosixHost, session: ComUserSession
) -> None:
    rows = (layout.LXSS_ENUMERATE_INFO * 2)()
    for row, (guid, name, state, flags) in zip(
        rows, [(DEBIAN, "Debian", 2, 1), (uuid.uuid4(), "Ünï", 1, 0)], strict=True
    ):
        row.DistroGuid = layout.guid_from_uuid(guid)
        row.State, row.Version, row.Flags = state, 2, flags
        data = name.encode("utf-16-le")
        ctypes.memmove(row.DistroName, data, len(data))
    address = allocate(bytes(rows))

    def handler(count: Any, array: Any, error: Any) -> int:
        count.contents.value = 2
        ctypes.cast(array, ctypes.POINTER(ctypes.c_void_p)).contents.value = address
        return 0

    fake.handlers["EnumerateDistributions"] = handler
    infos = session.enumerate_distributions()
    assert [(i.name, i.state.name, i.is_default, i.version) for i in infos] == [
        ("Debian", "RUNNING", True, 2),
        ("Ünï", "INSTALLED", False, 2),
    ]
    assert infos[0].id == DEBIAN
    assert host.freed == [address]


def test_configuration_frees_the_name_every_string_and_the_array(
    fake: FakeSession, host: PosixHost, session: ComUserSession
) -> None:
    strings = [allocate(b"PATH=/bin\0"), allocate(b"LANG=C.UTF-8\0")]
    array = allocate(b"".join(s.to_bytes(8, "little") for s in strings))
    name = wide("Debian")

    def handler(
        guid: Any, out_name: Any, version: Any, uid: Any, count: Any, env: Any, flags: Any, error: Any
    ) -> int:
        assert guid_at(guid) == DEBIAN
        out_name.contents.value, env.contents.value = name, array
        version.contents.value, uid.contents.value, count.contents.value, flags.contents.value = (
            2,
            1000,
            2,
            0xF,
        )
        return 0

    fake.handlers["GetDistributionConfiguration"] = handler
    config = session.get_distribution_configuration(DEBIAN)
    assert (config.name, config.version, config.default_uid, config.flags) == ("Debian", 2, 1000, 0xF)
    assert config.default_environment == ["PATH=/bin", "LANG=C.UTF-8"]
    assert sorted(host.freed) == sorted([name, *strings, array])


def test_simple_methods_pass_their_arguments(fake: FakeSession, session: ComUserSession) -> None:
    session.create_instance(DEBIAN)
    assert fake.named("CreateInstance")["DistroGuid"] == DEBIAN
    session.terminate_distribution()
    assert not fake.last("TerminateDistribution")[0]  # NULL: the default distribution
    session.unregister_distribution(DEBIAN)
    session.set_default_distribution(DEBIAN)
    session.configure_distribution(DEBIAN, default_uid=0, flags=7)
    assert fake.last("ConfigureDistribution")[1:3] == (0, 7)
    session.set_version(DEBIAN, 1)
    assert fake.last("SetVersion")[1:3] == (1, 2)  # StderrHandle = this process's stderr
    session.set_sparse(DEBIAN, True, allow_unsafe=True)
    assert fake.last("SetSparse")[1:3] == (1, 1)
    session.move_distribution(DEBIAN, "D:\\wsl")
    assert fake.named("MoveDistribution")["DistributionName"] == "D:\\wsl"
    session.attach_disk("\\\\.\\PHYSICALDRIVE1")
    assert fake.last("AttachDisk")[1] == layout.LXSS_ATTACH_MOUNT_FLAGS_PASS_THROUGH
    session.resize_distribution(DEBIAN, 1 << 40)
    assert fake.last("ResizeDistribution")[1:3] == (2, 1 << 40)  # the tools' output: stderr, as wsl.exe
    assert {name for name, _ in fake.calls} >= {
        "CreateInstance",
        "TerminateDistribution",
        "UnregisterDistribution",
        "SetDefaultDistribution",
        "ConfigureDistribution",
        "SetVersion",
        "SetSparse",
        "MoveDistribution",
        "AttachDisk",
        "ResizeDistribution",
    }


def test_default_distribution_and_in_place_import_return_guids(
    fake: FakeSession, session: ComUserSession
) -> None:
    fake.handlers["GetDefaultDistribution"] = lambda error, result: (
        ctypes.memmove(result, DEBIAN.bytes_le, 16) and 0
    )
    assert session.get_default_distribution() == DEBIAN

    def inplace(name: int, path: int, error: Any, result: Any) -> int:
        assert (layout.read_wide(name), layout.read_wide(path)) == ("Mine", "D:\\ext4.vhdx")
        ctypes.memmove(result, DEBIAN.bytes_le, 16)
        return 0

    fake.handlers["ImportDistributionInplace"] = inplace
    assert session.import_distribution_inplace("Mine", "D:\\ext4.vhdx") == DEBIAN


def test_disks_report_their_step_and_free_the_mount_name(
    fake: FakeSession, host: PosixHost, session: ComUserSession
) -> None:
    name = wide("disk1")

    def mount(
        disk: int,
        flags: int,
        partition: int,
        mount_name: int,
        fs: int,
        options: int | None,
        result: Any,
        step: Any,
        out: Any,
        error: Any,
    ) -> int:
        assert (flags, partition, layout.read_wide(fs), options) == (
            layout.LXSS_ATTACH_MOUNT_FLAGS_VHD,
            3,
            "ext4",
            None,
        )
        out.contents.value = name
        return 0

    fake.handlers["MountDisk"] = mount
    assert session.mount_disk("D:\\d.vhdx", vhd=True, partition=3, fs_type="ext4") == "disk1"
    assert name in host.freed

    def detach(disk: int, result: Any, step: Any, error: Any) -> int:
        assert disk is None
        result.contents.value, step.contents.value = -16, 2
        return 0

    fake.handlers["DetachDisk"] = detach
    with pytest.raises(WslError, match="The disk failed to detach: Device or resource busy") as raised:
        session.detach_disk()
    assert raised.value.code == "WSL_E_DISK_UNMOUNT_FAILED"
    assert session.detach_disk_status() == DiskStatus(-16, 2)


def test_a_failed_mount_reports_the_errno_and_frees_the_name(
    fake: FakeSession, host: PosixHost, session: ComUserSession
) -> None:
    names: list[int] = []

    def mount(disk: int, flags: int, partition: int, *rest: Any) -> int:
        assert (layout.read_wide(disk), flags, partition) == (
            "\\\\.\\PHYSICALDRIVE2",
            layout.LXSS_ATTACH_MOUNT_FLAGS_PASS_THROUGH,
            0,
        )
        assert [layout.read_wide(value) if value else None for value in rest[:3]] == ["data", None, "ro"]
        result, step, out = rest[3:6]
        result.contents.value, step.contents.value = -22, 2  # EINVAL, LX_MINI_MOUNT_STEP mount
        names.append(wide("data"))
        out.contents.value = names[-1]
        return 0

    fake.handlers["MountDisk"] = mount
    status = session.mount_disk_status("\\\\.\\PHYSICALDRIVE2", name="data", options="ro")
    assert status == DiskStatus(-22, 2, "data")
    with pytest.raises(WslError, match="attached but failed to mount: Invalid argument") as raised:
        session.mount_disk("\\\\.\\PHYSICALDRIVE2", name="data", options="ro")
    assert raised.value.code == "WSL_E_DISK_MOUNT_FAILED"
    assert set(names) <= set(host.freed)  # the name the service allocated, freed each time


def test_register_passes_the_disk_options(fake: FakeSession, session: ComUserSession, tmp_path: Any) -> None:
    archive = tmp_path / "image.wsl"
    archive.write_bytes(b"tar")

    def register(
        name: int, version: int, file: int, stderr: int, target: int, flags: int, size: int, *rest: Any
    ) -> int:
        ctypes.memmove(rest[-1], DEBIAN.bytes_le, 16)
        return 0

    fake.handlers["RegisterDistribution"] = register
    session.register_distribution(
        "Mine", archive, version=0, run_oobe=True, vhd_size=64 << 30, fixed_vhd=True
    )
    seen = fake.named("RegisterDistribution")
    assert (seen["Version"], seen["Flags"], seen["VhdSize"]) == (
        0,
        layout.LXSS_IMPORT_DISTRO_FLAGS_FIXED_VHD,
        64 << 30,
    )
    session.register_distribution("Disk", archive, vhd=True)
    seen = fake.named("RegisterDistribution")
    assert (seen["Version"], seen["Flags"], seen["VhdSize"]) == (
        2,
        layout.LXSS_IMPORT_DISTRO_FLAGS_VHD | layout.LXSS_IMPORT_DISTRO_FLAGS_NO_OOBE,
        0,
    )


def test_config_is_the_machine_s_manifest_settings(fake: FakeSession, host: PosixHost) -> None:
    settings = {"DistributionListUrl": "https://example.test/list.json", "DistributionListUrlAppend": ""}
    session = ComUserSession(ComInterface(fake.pointer, host.free), host, settings=lambda: settings)
    config = session.config()
    assert (config.distribution_list_url, config.distribution_list_url_append) == (
        "https://example.test/list.json",
        None,
    )
    bare = ComUserSession(ComInterface(fake.pointer, host.free), host).config()
    assert (bare.distribution_list_url, bare.distribution_list_url_append) == (None, None)


def test_the_service_runs_the_first_run_setup_itself(fake: FakeSession, session: ComUserSession) -> None:
    from pywsl.api.install.oobe import run_oobe_if_pending

    assert run_oobe_if_pending(session, DEBIAN, interactive=True) is None
    assert fake.calls == []  # not even looked up: CreateLxProcess runs it on the service's side


def test_register_picks_the_pipe_variant_for_a_pipe(
    fake: FakeSession, host: PosixHost, session: ComUserSession, tmp_path: Any
) -> None:
    names: list[int] = []

    def register(*args: Any) -> int:
        names.append(wide("Mine"))
        args[8].contents.value = names[-1]
        ctypes.memmove(args[10], DEBIAN.bytes_le, 16)
        return 0

    fake.handlers["RegisterDistribution"] = fake.handlers["RegisterDistributionPipe"] = register
    archive = tmp_path / "rootfs.tar"
    archive.write_bytes(b"tar")
    info = session.register_distribution("Mine", archive, location="D:\\Mine")
    called, args = fake.calls[0]
    assert called == "RegisterDistribution"
    seen = fake.named("RegisterDistribution")
    assert (seen["DistributionName"], seen["Version"], seen["TargetDirectory"]) == ("Mine", 2, "D:\\Mine")
    assert args[5] == layout.LXSS_IMPORT_DISTRO_FLAGS_NO_OOBE
    assert info.id == DEBIAN and names[0] in host.freed
    read_end, write_end = os.pipe()
    try:
        session.register_distribution(None, read_end, run_oobe=True)
    finally:
        os.close(read_end)
        os.close(write_end)
    assert (
        fake.last("RegisterDistributionPipe")[2] == read_end
        and fake.last("RegisterDistributionPipe")[0] is None
    )


def test_export_flags_follow_the_format(fake: FakeSession, session: ComUserSession, tmp_path: Any) -> None:
    session.export_distribution(DEBIAN, tmp_path / "out.tar.xz", format="tar.xz")
    assert fake.last("ExportDistribution")[3] == layout.LXSS_EXPORT_DISTRO_FLAGS_XZIP
    with pytest.raises(WslError):
        session.export_distribution(DEBIAN, tmp_path / "x", format="zip")


def test_close_releases_the_interface_once(fake: FakeSession, session: ComUserSession) -> None:
    session.close()
    session.close()
    assert fake.released == 1
    with pytest.raises(WslError, match="closed"):
        session.shutdown()
