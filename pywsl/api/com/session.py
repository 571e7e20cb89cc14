"""`ComUserSession`: the installed WslService's `ILxssUserSession`, with `UserSession`'s methods.

Each method makes the call wsl.exe makes (`SvcComm`, wsl-reference §2.3), with arguments in the
declared types; strings and arrays the service allocates are freed with `CoTaskMemFree` once
read, handles it returns are closed or owned by the returned object. Distributions are named as
for `UserSession`: a name (looked up with `GetDistributionId`), a `uuid.UUID`, or None (the
default distribution).

The disk-image methods (`attach_disk`, `mount_disk`, `detach_disk`, `resize_distribution`,
`set_sparse`, `import_distribution_inplace`, VHD import and export) reach the service as wsl.exe
calls them; `mount_disk_status` and `detach_disk_status` return the Linux side's result as wsl.exe
reads it (the command line prints its own text for a failed mount). The first-run setup of an
installed distribution is the service's own (it runs in `CreateLxProcess`), so
`runs_oobe_in_service` tells `pywsl.api.install.oobe` to leave it alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pywsl.api.com import layout as L
from pywsl.api.com.host import ComHost
from pywsl.api.com.relay import ComProcess, StdioTarget
from pywsl.api.com.vtable import ComInterface
from pywsl.api.errors import WslError
from pywsl.api.session.distribution_info import DistributionConfiguration, DistributionInfo
from pywsl.api.session.registry import DistributionState
from pywsl.api.session.wslconfig import WslConfig

__all__ = ["ComUserSession", "DiskStatus", "machine_config"]

Distro = str | uuid.UUID | None
Source = str | os.PathLike[str] | IO[bytes] | int
_EXPORT_FLAGS = {
    "tar": 0,
    "tar.gz": L.LXSS_EXPORT_DISTRO_FLAGS_GZIP,
    "tgz": L.LXSS_EXPORT_DISTRO_FLAGS_GZIP,
    "tar.xz": L.LXSS_EXPORT_DISTRO_FLAGS_XZIP,
    "vhd": L.LXSS_EXPORT_DISTRO_FLAGS_VHD,
}


@dataclass(frozen=True)
class DiskStatus:
    """What `DetachDisk` and `MountDisk` report from the Linux side: `result` (0, or a negative
    errno), the `step` that failed (`LX_MINI_MOUNT_STEP`) and, for a mount, the name under
    `/mnt/wsl`."""

    result: int
    step: int
    mount_name: str = ""


class ComUserSession:
    """The calling Windows user's session in WslService (`pywsl.connect()` on Windows)."""

    runs_oobe_in_service = True  # WSL's service runs a distribution's first-run setup itself

    def __init__(
        self,
        interface: ComInterface,
        host: ComHost,
        details: Callable[[uuid.UUID], Mapping[str, Any]] | None = None,
        settings: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        self._interface = interface
        self._host = host
        self._details = details
        self._settings = settings

    def config(self) -> WslConfig:
        """What the installer reads of WSL's machine settings: the manifest URLs
        (`DistributionListUrl`, `DistributionListUrlAppend` under HKLM's `Lxss` key). The rest of
        `.wslconfig` is the service's own business."""
        return machine_config(self._settings() if self._settings is not None else {})

    def close(self) -> None:
        self._interface.release()

    def __enter__(self) -> ComUserSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- arguments -----------------------------------------------------------------------------

    def _guid(self, distro: Distro) -> Any:
        """A `LPCGUID` argument: NULL for None, the GUID of a name or UUID."""
        if distro is None:
            return None
        if isinstance(distro, str):
            distro = self.get_distribution_id(distro)
        if not isinstance(distro, uuid.UUID):
            raise WslError("E_INVALIDARG", f"Invalid distribution {distro!r}.")
        return ctypes.pointer(L.guid_from_uuid(distro))

    def _required_guid(self, distro: Distro) -> Any:
        if distro is None:
            raise WslError("E_INVALIDARG", "No distribution given.")
        return self._guid(distro)

    @staticmethod
    def _wide(text: str | os.PathLike[str] | None) -> Any:
        return None if text is None else L.wide_buffer(os.fspath(text))

    def _stderr_handle(self) -> int:
        return self._host.handle_of(2)

    def _take_wide(self, address: int | None) -> str:
        try:
            return L.read_wide(address)
        finally:
            if address:
                self._host.free(address)

    # -- ILxssUserSession ------------------------------------------------------------------------

    def create_instance(self, distro: Distro = None) -> None:
        self._interface.call("CreateInstance", DistroGuid=self._guid(distro), Flags=0)

    def get_distribution_id(self, name: str, *, list_all: bool = False) -> uuid.UUID:
        if not isinstance(name, str) or not name:
            raise WslError("E_INVALIDARG", "The distribution name is empty.")
        result = L.GUID()
        self._interface.call(
            "GetDistributionId",
            DistributionName=self._wide(name),
            Flags=L.LXSS_GET_DISTRO_ID_LIST_ALL if list_all else 0,
            pDistroGuid=ctypes.byref(result),
        )
        return L.uuid_from_guid(result)

    def terminate_distribution(self, distro: Distro = None) -> None:
        self._interface.call("TerminateDistribution", DistroGuid=self._guid(distro))

    def unregister_distribution(self, distro: Distro) -> None:
        self._interface.call("UnregisterDistribution", DistroGuid=self._required_guid(distro))

    def configure_distribution(
        self, distro: Distro, *, default_uid: int | None = None, flags: int | None = None
    ) -> None:
        guid = self._guid(distro)
        if default_uid is None:
            default_uid = self.get_distribution_configuration(
                None if guid is None else L.uuid_from_guid(guid.contents)
            ).default_uid
        self._interface.call(
            "ConfigureDistribution",
            DistroGuid=guid,
            DefaultUid=default_uid,
            Flags=L.LXSS_DISTRO_FLAGS_UNCHANGED if flags is None else flags,
        )

    def get_distribution_configuration(self, distro: Distro = None) -> DistributionConfiguration:
        guid = self._guid(distro)
        name, environment = ctypes.c_void_p(), ctypes.c_void_p()
        version, default_uid, count, flags = (ctypes.c_uint32() for _ in range(4))
        self._interface.call(
            "GetDistributionConfiguration",
            DistroGuid=guid,
            DistributionName=ctypes.byref(name),
            Version=ctypes.byref(version),
            DefaultUid=ctypes.byref(default_uid),
            DefaultEnvironmentCount=ctypes.byref(count),
            DefaultEnvironment=ctypes.byref(environment),
            Flags=ctypes.byref(flags),
        )
        text = self._take_wide(name.value)
        variables = self._take_ansi_array(environment.value, count.value)
        distro_id = L.uuid_from_guid(guid.contents) if guid is not None else self.get_distribution_id(text)
        return DistributionConfiguration(
            id=distro_id,
            name=text,
            version=version.value,
            default_uid=default_uid.value,
            flags=flags.value,
            default_environment=variables,
        )

    def _take_ansi_array(self, address: int | None, count: int) -> list[str]:
        """An `LPSTR*` array of `count` strings: each string and the array are freed."""
        if not address:
            return []
        entries = (ctypes.c_void_p * count).from_address(address)
        try:
            return [ctypes.string_at(entry).decode("utf-8", errors="replace") for entry in entries if entry]
        finally:
            for entry in entries:
                if entry:
                    self._host.free(entry)
            self._host.free(address)

    def get_default_distribution(self) -> uuid.UUID:
        result = L.GUID()
        self._interface.call("GetDefaultDistribution", pResultState=ctypes.byref(result))
        return L.uuid_from_guid(result)

    def set_default_distribution(self, distro: Distro) -> None:
        self._interface.call("SetDefaultDistribution", DistroGuid=self._required_guid(distro))

    def enumerate_distributions(self) -> list[DistributionInfo]:
        count = ctypes.c_uint32()
        array = ctypes.POINTER(L.LXSS_ENUMERATE_INFO)()
        self._interface.call(
            "EnumerateDistributions", DistributionCount=ctypes.byref(count), Distributions=ctypes.byref(array)
        )
        address = ctypes.cast(array, ctypes.c_void_p).value
        if not address:
            return []
        try:
            rows = [L.LXSS_ENUMERATE_INFO.from_buffer_copy(array[index]) for index in range(count.value)]
        finally:
            self._host.free(address)
        return [self._info(row) for row in rows]

    def _info(self, row: L.LXSS_ENUMERATE_INFO) -> DistributionInfo:
        distro_id = L.uuid_from_guid(row.DistroGuid)
        details = self._details(distro_id) if self._details is not None else {}
        try:
            state = DistributionState(row.State)
        except ValueError:
            state = DistributionState.INSTALLED
        return DistributionInfo(
            id=distro_id,
            name=row.name,
            state=state,
            version=int(row.Version),
            is_default=bool(row.Flags & L.LXSS_ENUMERATE_FLAGS_DEFAULT),
            flavor=str(details.get("Flavor", "")),
            os_version=str(details.get("OsVersion", "")),
            base_path=Path(str(details.get("BasePath", ""))),
            default_uid=int(details.get("DefaultUid", 0)),
            run_oobe=bool(details.get("RunOOBE", 0)),
        )

    def register_distribution(
        self,
        name: str | None,
        source: Source,
        *,
        location: str | os.PathLike[str] | None = None,
        version: int = 2,
        run_oobe: bool = False,
        progress: Any = None,
        vhd: bool = False,
        vhd_size: int | None = None,
        fixed_vhd: bool = False,
    ) -> DistributionInfo:
        """`RegisterDistribution`, or `RegisterDistributionPipe` when the source is a pipe.

        `vhd`: the source is a disk image (`--import --vhd`); `vhd_size` and `fixed_vhd`: the new
        disk's size in bytes and whether it is allocated in full (`--vhd-size`, `--fixed-vhd`);
        `version` 0 is the user's default version."""
        installed = ctypes.c_void_p()
        result = L.GUID()
        flags = (
            (L.LXSS_IMPORT_DISTRO_FLAGS_VHD if vhd else 0)
            | (0 if run_oobe else L.LXSS_IMPORT_DISTRO_FLAGS_NO_OOBE)
            | (L.LXSS_IMPORT_DISTRO_FLAGS_FIXED_VHD if fixed_vhd else 0)
        )
        with _opened(source, "rb") as fd:
            handle = self._host.handle_of(fd)
            pipe = self._host.is_pipe(handle)
            self._interface.call(
                "RegisterDistributionPipe" if pipe else "RegisterDistribution",
                DistributionName=self._wide(name),
                Version=version,
                **{"PipeHandle" if pipe else "FileHandle": handle},
                StderrHandle=self._stderr_handle(),
                TargetDirectory=self._wide(location),
                Flags=flags,
                VhdSize=vhd_size or 0,
                PackageFamilyName=None,
                InstalledDistributionName=ctypes.byref(installed),
                pDistroGuid=ctypes.byref(result),
            )
        installed_name = self._take_wide(installed.value)
        distro_id = L.uuid_from_guid(result)
        for info in self.enumerate_distributions():
            if info.id == distro_id:
                return info
        return DistributionInfo(
            id=distro_id,
            name=installed_name or name or "",
            state=DistributionState.INSTALLED,
            version=version or 2,
            is_default=False,
            flavor="",
            os_version="",
            base_path=Path(os.fspath(location or "")),
            default_uid=0,
            run_oobe=run_oobe,
        )

    def export_distribution(
        self, distro: Distro, target: Source, *, format: str = "tar", progress: Any = None
    ) -> None:
        """`ExportDistribution`, or `ExportDistributionPipe` when the target is a pipe."""
        if format not in _EXPORT_FLAGS:
            raise WslError(
                "E_INVALIDARG", f"Unknown export format {format!r}: use one of {', '.join(_EXPORT_FLAGS)}."
            )
        guid = self._guid(distro)
        with _opened(target, "wb") as fd:
            handle = self._host.handle_of(fd)
            pipe = self._host.is_pipe(handle)
            self._interface.call(
                "ExportDistributionPipe" if pipe else "ExportDistribution",
                DistroGuid=guid,
                **{"PipeHandle" if pipe else "FileHandle": handle},
                StderrHandle=self._stderr_handle(),
                Flags=_EXPORT_FLAGS[format],
            )

    def move_distribution(self, distro: Distro, location: str | os.PathLike[str]) -> None:
        self._interface.call(
            "MoveDistribution", DistroGuid=self._required_guid(distro), DistributionName=self._wide(location)
        )

    def shutdown(self, force: bool = False) -> None:
        self._interface.call("Shutdown", Force=1 if force else 0)

    def set_version(self, distro: Distro, version: int) -> None:
        self._interface.call(
            "SetVersion",
            DistroGuid=self._required_guid(distro),
            Version=version,
            StderrHandle=self._stderr_handle(),
        )

    def set_sparse(self, distro: Distro, sparse: bool, *, allow_unsafe: bool = False) -> None:
        self._interface.call(
            "SetSparse",
            DistroGuid=self._required_guid(distro),
            Sparse=int(bool(sparse)),
            AllowUnsafe=int(bool(allow_unsafe)),
        )

    def resize_distribution(self, distro: Distro, new_size: int, *, output: Any = None) -> None:
        """`ResizeDistribution`: the tools' output goes to `output` (default: stderr, as wsl.exe)."""
        with _opened(2 if output is None else output, "wb") as fd:
            self._interface.call(
                "ResizeDistribution",
                DistroGuid=self._required_guid(distro),
                OutputHandle=self._host.handle_of(fd),
                NewSize=new_size,
            )

    def import_distribution_inplace(self, name: str, vhd_path: str | os.PathLike[str]) -> uuid.UUID:
        result = L.GUID()
        self._interface.call(
            "ImportDistributionInplace",
            DistributionName=self._wide(name),
            VhdPath=self._wide(vhd_path),
            pDistroGuid=ctypes.byref(result),
        )
        return L.uuid_from_guid(result)

    def attach_disk(self, disk: str, *, vhd: bool = False) -> None:
        self._interface.call(
            "AttachDisk",
            Disk=self._wide(disk),
            Flags=L.LXSS_ATTACH_MOUNT_FLAGS_VHD if vhd else L.LXSS_ATTACH_MOUNT_FLAGS_PASS_THROUGH,
        )

    def detach_disk(self, disk: str | None = None) -> None:
        """`DetachDisk` (every disk of the user when `disk` is None); a failure on the Linux side
        is WSL_E_DISK_UNMOUNT_FAILED."""
        status = self.detach_disk_status(disk)
        if status.result != 0:
            raise WslError(
                "WSL_E_DISK_UNMOUNT_FAILED",
                f"The disk failed to detach: {_strerror(status.result)}.",
                context="Wsl/Service/DetachDisk",
            )

    def detach_disk_status(self, disk: str | None = None) -> DiskStatus:
        """`DetachDisk`, returning the Linux side's result instead of raising for it."""
        result, step = ctypes.c_int32(-1), ctypes.c_int32()
        self._interface.call(
            "DetachDisk", Disk=self._wide(disk), Result=ctypes.byref(result), Step=ctypes.byref(step)
        )
        return DiskStatus(result.value, step.value)

    def mount_disk(
        self,
        disk: str,
        *,
        vhd: bool = False,
        partition: int = 0,
        name: str | None = None,
        fs_type: str | None = None,
        options: str | None = None,
    ) -> str:
        """`MountDisk` of an attached disk; returns the name under `/mnt/wsl`. A failure on the
        Linux side is WSL_E_DISK_MOUNT_FAILED."""
        status = self.mount_disk_status(
            disk, vhd=vhd, partition=partition, name=name, fs_type=fs_type, options=options
        )
        if status.result != 0:
            raise WslError(
                "WSL_E_DISK_MOUNT_FAILED",
                f"The disk was attached but failed to mount: {_strerror(status.result)}.",
                context="Wsl/Service/MountDisk",
            )
        return status.mount_name

    def mount_disk_status(
        self,
        disk: str,
        *,
        vhd: bool = False,
        partition: int = 0,
        name: str | None = None,
        fs_type: str | None = None,
        options: str | None = None,
    ) -> DiskStatus:
        """`MountDisk`, returning the Linux side's result instead of raising for it."""
        result, step, mount_name = ctypes.c_int32(), ctypes.c_int32(), ctypes.c_void_p()
        self._interface.call(
            "MountDisk",
            Disk=self._wide(disk),
            Flags=L.LXSS_ATTACH_MOUNT_FLAGS_VHD if vhd else L.LXSS_ATTACH_MOUNT_FLAGS_PASS_THROUGH,
            PartitionIndex=partition,
            Name=self._wide(name),
            Type=self._wide(fs_type),
            Options=self._wide(options),
            Result=ctypes.byref(result),
            Step=ctypes.byref(step),
            MountName=ctypes.byref(mount_name),
        )
        return DiskStatus(result.value, step.value, self._take_wide(mount_name.value))

    def create_lx_process(
        self,
        distro: Distro = None,
        command_line: Sequence[str] = (),
        *,
        filename: str | None = None,
        cwd: str = "",
        username: str = "",
        login: bool = False,
        stdin: StdioTarget = None,
        stdout: StdioTarget = None,
        stderr: StdioTarget = None,
        environment: Mapping[str, str] | None = None,
        wslenv_source: Mapping[str, str] | None = None,
    ) -> ComProcess:
        """`CreateLxProcess` as wsl.exe calls it, then the relay of the five returned sockets.

        Shell mode (no `filename`): the command line travels as one string. The Linux side takes
        the environment from the caller's: `environment` is added to it here (WSLENV names what
        crosses, as in WSL); `wslenv_source` replaces the caller's environment."""
        arguments = list(command_line)
        if filename is None and len(arguments) > 1:
            arguments = [" ".join(arguments)]
        encoded = [argument.encode("utf-8") for argument in arguments]
        array = (ctypes.c_char_p * max(1, len(encoded)))(*encoded)
        block = self._environment_block(environment, wslenv_source)
        handles = L.LXSS_STD_HANDLES()
        console = [False, False, False]
        for index, (field, spec) in enumerate(
            zip(("StdIn", "StdOut", "StdErr"), (stdin, stdout, stderr), strict=True)
        ):
            entry = getattr(handles, field)
            if spec is None and self._host.is_console(self._host.handle_of(index)):
                entry.HandleType, entry.Handle = L.LXSS_HANDLE_CONSOLE, L.LXSS_HANDLE_USE_CONSOLE
                console[index] = True
            else:
                entry.HandleType = L.LXSS_HANDLE_INPUT if index == 0 else L.LXSS_HANDLE_OUTPUT
                entry.Handle = self._host.handle_of(index) & 0xFFFFFFFF if spec is None else 0
        size = self._host.console_size() if any(console) else None
        columns, rows = size or (80, 25)
        distribution_id, instance_id = L.GUID(), L.GUID()
        outs = [ctypes.c_void_p() for _ in range(7)]
        flags = L.LXSS_CREATE_INSTANCE_FLAGS_ALLOW_FS_UPGRADE
        if login and filename is None and not arguments:
            flags |= L.LXSS_CREATE_INSTANCE_FLAGS_SHELL_LOGIN
        # wsl.exe's console state: set before the process starts, restored when it is over.
        restore_console = self._host.enter_raw_console() if console[0] else None
        try:
            self._interface.call(
                "CreateLxProcess",
                DistroGuid=self._guid(distro),
                Filename=filename.encode("utf-8") if filename else None,
                CommandLineCount=len(encoded),
                CommandLine=array if encoded else None,
                CurrentWorkingDirectory=self._wide(cwd or self._host.current_directory()),
                NtPath=self._wide(self._host.nt_path() or None),
                NtEnvironment=block,
                NtEnvironmentLength=(len(block) // 2) if block is not None else 0,
                Username=self._wide(username or None),
                Columns=columns,
                Rows=rows,
                ConsoleHandle=self._host.console_handle() & 0xFFFFFFFF,
                StdHandles=ctypes.byref(handles),
                Flags=flags,
                DistributionId=ctypes.byref(distribution_id),
                InstanceId=ctypes.byref(instance_id),
                ProcessHandle=ctypes.byref(outs[0]),
                ServerHandle=ctypes.byref(outs[1]),
                StandardIn=ctypes.byref(outs[2]),
                StandardOut=ctypes.byref(outs[3]),
                StandardErr=ctypes.byref(outs[4]),
                CommunicationChannel=ctypes.byref(outs[5]),
                InteropSocket=ctypes.byref(outs[6]),
            )
            return self._relay(
                outs,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                args=arguments,
                follow_size=any(console),
                ids=(distribution_id, instance_id),
                restore_console=restore_console,
            )
        except BaseException:
            if restore_console is not None:
                restore_console()
            raise

    def _relay(
        self,
        outs: list[ctypes.c_void_p],
        *,
        stdin: StdioTarget,
        stdout: StdioTarget,
        stderr: StdioTarget,
        args: Sequence[str],
        follow_size: bool,
        ids: tuple[L.GUID, L.GUID],
        restore_console: Callable[[], None] | None = None,
    ) -> ComProcess:
        """The five sockets as a `ComProcess`; every returned handle is owned or closed on every path."""
        sockets: list[Any] = []
        pending = [out.value for out in outs]
        try:
            if pending[0] or pending[1]:
                raise WslError(
                    "WSL_E_WSL1_NOT_SUPPORTED",
                    "WSL1 processes are not supported by this client.",
                    context="Wsl/Service/CreateLxProcess",
                )
            if not all(pending[2:]):
                raise WslError(
                    "E_UNEXPECTED",
                    "The service returned no sockets for the process.",
                    context="Wsl/Service/CreateLxProcess",
                )
            for index in range(2, 7):
                handle = pending[index]
                assert handle is not None
                sockets.append(self._host.socket_from_handle(handle))
                pending[index] = None
            return ComProcess(
                sockets,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                args=args,
                console_size=self._host.console_size if follow_size else None,
                restore_console=restore_console,
                distribution_id=L.uuid_from_guid(ids[0]),
                instance_id=L.uuid_from_guid(ids[1]),
            )
        except BaseException:
            for sock in sockets:
                sock.close()
            for handle in pending:
                if handle:
                    self._host.close_handle(handle)
            raise

    def _environment_block(
        self, environment: Mapping[str, str] | None, source: Mapping[str, str] | None
    ) -> Any:
        """`NtEnvironment`: the caller's `K=V\\0...\\0` block (UTF-16), with `environment` added."""
        if source is None and not environment:
            text = self._host.environment_block()
        else:
            merged = dict(source if source is not None else _parse_block(self._host.environment_block()))
            merged.update(environment or {})
            text = "".join(f"{key}={value}\0" for key, value in merged.items()) + "\0"
        if not text.strip("\0"):
            return None
        data = text.encode("utf-16-le")
        return ctypes.create_string_buffer(data, len(data))


def machine_config(values: Mapping[str, Any]) -> WslConfig:
    """The installer's configuration from WSL's machine values (`DistributionListUrl`,
    `DistributionListUrlAppend`); an absent or empty value is the default."""
    url, append = values.get("DistributionListUrl"), values.get("DistributionListUrlAppend")
    return WslConfig(
        distribution_list_url=url if isinstance(url, str) and url else None,
        distribution_list_url_append=append if isinstance(append, str) and append else None,
    )


def _strerror(result: int) -> str:
    """The text of a Linux side's negative errno, as wsl.exe prints it (`strerror(-result)`)."""
    return os.strerror(-result) if result < 0 else f"error {result}"


def _parse_block(block: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for entry in block.split("\0"):
        key, separator, value = entry.partition("=")
        if separator and key:
            result[key] = value
    return result


@contextlib.contextmanager
def _opened(source: Source, mode: str) -> Iterator[int]:
    """The descriptor of a path (opened here, closed after), a file object or a descriptor."""
    if isinstance(source, bool):
        raise WslError("E_INVALIDARG", "Expected a path, a file object or a descriptor.")
    if isinstance(source, int):
        yield source
        return
    if isinstance(source, (str, os.PathLike)):
        try:
            with open(os.fspath(source), mode) as opened:
                yield opened.fileno()
        except OSError as error:
            raise WslError(
                "ERROR_FILE_NOT_FOUND" if isinstance(error, FileNotFoundError) else "E_ACCESSDENIED",
                f"{os.fspath(source)}: {error.strerror}",
            ) from None
        return
    try:
        fd = source.fileno()
    except (AttributeError, OSError, ValueError):
        raise WslError("E_INVALIDARG", "The file object has no file descriptor.") from None
    if "w" in mode:
        with contextlib.suppress(OSError, ValueError):
            source.flush()
    yield fd
