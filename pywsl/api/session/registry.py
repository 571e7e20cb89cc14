"""A user's distribution registry: WSL's `HKCU\\Software\\Microsoft\\Windows\\CurrentVersion\\Lxss`.

One JSON file per user (`registry.json` in the user's pywsl data folder) keeps what WSL keeps in the
registry key: the default distribution and, per distribution GUID, `DistributionName`, `BasePath`,
`State`, `Version` (filesystem version), `Flags`, `DefaultUid`, `DefaultEnvironment`, `RunOOBE`,
`Flavor`, `OsVersion`. Every change is a transaction under an exclusive `flock` of `registry.lock`
and is written atomically (temporary file, fsync, rename, fsync of the folder), so concurrent
clients never lose an update and a crash never leaves a torn file.

Long operations (install, uninstall, export, move) hold an *operation lock*: `locks/<guid>.lock`,
flocked for as long as the operation runs and holding the owner's pid and the state it stands for.
It is WSL's in-memory "locked distributions" list made visible across processes, and it tells a
crashed operation (its lock is free again) from a running one. `Registry.recover` finishes what a
crash left: an Installing entry whose installer is gone is removed with its files, an Uninstalling
entry is deleted for good.

All file access here happens with the user's credentials (`credentials.acting_as`). The registry
and the lock files are opened without blocking and without following links, must be regular files
and are read up to a size limit; the registry lock is waited for at most `user_files.LOCK_TIMEOUT`
seconds (`user_files`), so a registry replaced by a FIFO or a huge file, or a lock held forever,
is a clear error instead of a service thread waiting for good.
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import platform
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pywsl.api.errors import WslError
from pywsl.api.session.registry_snapshot import LOCKS_FOLDER_NAME, MAX_REGISTRY_BYTES, REGISTRY_FILE_NAME
from pywsl.api.session.registry_values import (
    FLAGS_ALL,
    FLAGS_DEFAULT,
    FS_VERSION,
    LX_UID_INVALID,
    NAME_MAX,
    entry_values,
    valid_name,
)

if sys.platform != "win32":  # the registry's files are Linux's; on Windows only the types are used
    import fcntl

    from pywsl.api.credentials import UserIdentity, acting_as, makedirs_as
    from pywsl.api.files.user_files import flock_bounded, open_regular, read_bounded

__all__ = [
    "FLAGS_ALL",
    "FLAGS_DEFAULT",
    "FLAGS_UNCHANGED",
    "FLAG_APPEND_NT_PATH",
    "FLAG_ENABLE_DRIVE_MOUNTING",
    "FLAG_ENABLE_INTEROP",
    "FLAG_VM_MODE",
    "FS_VERSION",
    "LX_UID_INVALID",
    "NAME_MAX",
    "DistributionState",
    "OperationLock",
    "Registration",
    "Registry",
    "RegistryData",
    "default_environment",
    "validate_name",
]

# LXSS_DISTRO_FLAGS_*
FLAG_ENABLE_INTEROP = 0x1
FLAG_APPEND_NT_PATH = 0x2
FLAG_ENABLE_DRIVE_MOUNTING = 0x4
FLAG_VM_MODE = 0x8
FLAGS_UNCHANGED = 0xFFFFFFFE
_FORMAT = 1


class DistributionState(enum.IntEnum):
    """`LxssDistributionState`."""

    INVALID = 0
    INSTALLED = 1
    RUNNING = 2
    INSTALLING = 3
    UNINSTALLING = 4
    CONVERTING = 5
    EXPORTING = 6

    @property
    def label(self) -> str:
        """The word wsl.exe --list --verbose shows."""
        return "Stopped" if self is DistributionState.INSTALLED else self.name.capitalize()


_LOCK_STATES = (
    DistributionState.INSTALLING,
    DistributionState.UNINSTALLING,
    DistributionState.EXPORTING,
    DistributionState.CONVERTING,
)


def validate_name(name: str) -> None:
    """WSL's rule: `^[a-zA-Z0-9._-]{1,256}$` and not "Legacy" (in any case)."""
    if not valid_name(name):
        raise WslError("E_INVALIDARG", f'Invalid distribution name: "{name}".')


def _host_type() -> str:
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine or "x86_64")


def default_environment() -> list[str]:
    """The `DefaultEnvironment` a new registration gets, as in WSL."""
    return [
        f"HOSTTYPE={_host_type()}",
        "LANG=en_US.UTF-8",
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/games:/usr/local/games",
        "TERM=xterm-256color",
    ]


def _guid_text(value: uuid.UUID) -> str:
    return "{" + str(value) + "}"


def _parse_guid(text: Any) -> uuid.UUID:
    if not isinstance(text, str):
        raise ValueError("a GUID must be a string")
    return uuid.UUID(text.strip("{}"))


_new_environment = default_environment  # the parameter of `Registration` shadows the function
# Registration's attributes, in the order of its constructor's parameters.
_REGISTRATION_FIELDS = (
    "id",
    "name",
    "base_path",
    "state",
    "version",
    "flags",
    "default_uid",
    "default_environment",
    "run_oobe",
    "flavor",
    "os_version",
    "modern",
    "package_family_name",
    "created_base_path",
    "move_target",
    "vhd_file_name",
    "sparse",
)


class Registration:
    """One distribution's registry values (a plain class: a launch does not load `dataclasses`)."""

    __slots__ = _REGISTRATION_FIELDS

    def __init__(
        self,
        id: uuid.UUID,
        name: str,
        base_path: Path,
        state: DistributionState = DistributionState.INSTALLING,
        version: int = FS_VERSION,
        flags: int = FLAGS_ALL,
        default_uid: int = 0,
        default_environment: list[str] | None = None,
        run_oobe: bool = False,
        flavor: str = "",
        os_version: str = "",
        modern: bool = True,
        package_family_name: str = "",
        created_base_path: bool = False,
        move_target: Path | None = None,
        vhd_file_name: str = "",
        sparse: bool = True,
    ) -> None:
        self.id = id
        self.name = name
        self.base_path = base_path
        self.state = state
        self.version = version
        self.flags = flags
        self.default_uid = default_uid
        self.default_environment = _new_environment() if default_environment is None else default_environment
        self.run_oobe = run_oobe
        self.flavor = flavor
        self.os_version = os_version
        self.modern = modern
        self.package_family_name = package_family_name
        self.created_base_path = created_base_path  # pywsl: the install removed the folder it created
        self.move_target = move_target  # pywsl: a move to this folder is in progress
        self.vhd_file_name = vhd_file_name  # WSL's VhdFileName: "" for a root filesystem folder
        self.sparse = sparse  # freed blocks of the disk are given back (discard)

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in _REGISTRATION_FIELDS)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Registration)
        return self._values() == other._values()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in _REGISTRATION_FIELDS)
        return f"Registration({shown})"

    @property
    def rootfs(self) -> Path:
        """The root filesystem: the directory `BasePath/rootfs`, or the disk image (WSL's
        `BasePath\\ext4.vhdx`) when `vhd_file_name` names one."""
        return self.base_path / (self.vhd_file_name or "rootfs")

    @property
    def on_disk(self) -> bool:
        """The root filesystem is a disk image (the qemu backend), not a folder."""
        return bool(self.vhd_file_name)

    @property
    def wsl_version(self) -> int:
        return 2 if self.flags & FLAG_VM_MODE else 1

    def to_json(self) -> dict[str, Any]:
        return {
            "DistributionName": self.name,
            "BasePath": str(self.base_path),
            "State": int(self.state),
            "Version": self.version,
            "Flags": self.flags,
            "DefaultUid": self.default_uid,
            "DefaultEnvironment": list(self.default_environment),
            "RunOOBE": int(self.run_oobe),
            "Flavor": self.flavor,
            "OsVersion": self.os_version,
            "Modern": int(self.modern),
            "PackageFamilyName": self.package_family_name,
            "CreatedBasePath": int(self.created_base_path),
            "MoveTarget": str(self.move_target) if self.move_target is not None else "",
            "VhdFileName": self.vhd_file_name,
            "Sparse": int(self.sparse),
        }

    @classmethod
    def from_json(cls, guid: uuid.UUID, data: Any) -> Registration:
        """Validate one entry; ValueError names the bad value."""
        values = entry_values(data, default_environment())
        return cls(
            id=guid,
            name=values["name"],
            base_path=Path(values["base_path"]),
            state=DistributionState(values["state"]),
            version=values["version"],
            flags=values["flags"],
            default_uid=values["default_uid"],
            default_environment=values["default_environment"],
            run_oobe=bool(values["run_oobe"]),
            flavor=values["flavor"],
            os_version=values["os_version"],
            modern=bool(values["modern"]),
            package_family_name=values["package_family_name"],
            created_base_path=bool(values["created_base_path"]),
            move_target=Path(values["move_target"]) if values["move_target"] else None,
            vhd_file_name=values["vhd_file_name"],
            sparse=bool(values["sparse"]),
        )


def _needs_recovery(registration: Registration) -> bool:
    """Whether an operation left the entry half done (not installed, or a move under way)."""
    return registration.state is not DistributionState.INSTALLED or registration.move_target is not None


def _optional_path(value: str) -> Path | None:
    if not value:
        return None
    if not os.path.isabs(value):
        raise ValueError("MoveTarget must be absolute")
    return Path(value)


class RegistryData:
    """The whole registry of one user, as read inside a transaction."""

    def __init__(
        self,
        default_distribution: uuid.UUID | None = None,
        default_version: int = 2,
        distributions: dict[uuid.UUID, Registration] | None = None,
        unreadable: dict[str, Any] | None = None,
    ) -> None:
        self.default_distribution = default_distribution
        self.default_version = default_version
        self.distributions: dict[uuid.UUID, Registration] = {} if distributions is None else distributions
        # Entries that did not validate: kept as they are (WSL skips a corrupted registration too).
        self.unreadable: dict[str, Any] = {} if unreadable is None else unreadable

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RegistryData):
            return NotImplemented
        return (self.default_distribution, self.default_version, self.distributions, self.unreadable) == (
            other.default_distribution,
            other.default_version,
            other.distributions,
            other.unreadable,
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return (
            f"RegistryData(default_distribution={self.default_distribution!r}, "
            f"default_version={self.default_version!r}, distributions={self.distributions!r}, "
            f"unreadable={self.unreadable!r})"
        )

    def find(self, name: str, *, list_all: bool = False) -> Registration | None:
        """Case-insensitive name lookup; only Installed ones unless `list_all`
        (`LXSS_GET_DISTRO_ID_LIST_ALL`)."""
        wanted = name.casefold()
        for registration in self.distributions.values():
            if registration.name.casefold() == wanted and (
                list_all or registration.state is DistributionState.INSTALLED
            ):
                return registration
        return None

    def installed(self) -> list[Registration]:
        return [r for r in self.distributions.values() if r.state is DistributionState.INSTALLED]

    def fix_default(self) -> None:
        """Point the default at an Installed distribution: keep it if valid, else the first one."""
        current = self.distributions.get(self.default_distribution) if self.default_distribution else None
        if current is not None and current.state is DistributionState.INSTALLED:
            return
        remaining = self.installed()
        self.default_distribution = remaining[0].id if remaining else None

    def to_json(self) -> dict[str, Any]:
        distributions: dict[str, Any] = {_guid_text(k): v.to_json() for k, v in self.distributions.items()}
        distributions.update(self.unreadable)
        return {
            "Format": _FORMAT,
            "DefaultDistribution": _guid_text(self.default_distribution) if self.default_distribution else "",
            "DefaultVersion": self.default_version,
            "Distributions": distributions,
        }

    @classmethod
    def from_json(cls, data: Any) -> RegistryData:
        if not isinstance(data, dict):
            raise ValueError("the registry is not a JSON object")
        result = cls()
        version = data.get("DefaultVersion", 2)
        if version in (1, 2):
            result.default_version = version
        entries = data.get("Distributions", {})
        if not isinstance(entries, dict):
            raise ValueError("Distributions is not an object")
        for key, value in entries.items():
            try:
                guid = _parse_guid(key)
                if guid in result.distributions:
                    raise ValueError("duplicate GUID")
                result.distributions[guid] = Registration.from_json(guid, value)
            except (ValueError, WslError):
                result.unreadable[key] = value
        default = data.get("DefaultDistribution", "")
        if isinstance(default, str) and default:
            with contextlib.suppress(ValueError):
                result.default_distribution = _parse_guid(default)
        return result


class OperationLock:
    """A held operation lock (`locks/<guid>.lock`); `release()` ends the operation."""

    def __init__(self, path: Path, fd: int, state: DistributionState, identity: UserIdentity) -> None:
        self.path = path
        self.fd = fd
        self.state = state
        self.identity = identity

    def __repr__(self) -> str:
        return f"OperationLock(path={self.path!r}, fd={self.fd!r}, state={self.state!r})"

    def release(self) -> None:
        if self.fd < 0:
            return
        with acting_as(self.identity), contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(self.fd)
        self.fd = -1

    def __enter__(self) -> OperationLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _try_flock(fd: int, mode: int) -> bool:
    """Take a lock without waiting for an owner; a reader that holds it for an instant (to see
    whether an operation is alive) is waited out."""
    for attempt in range(20):
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if attempt < 19:
                time.sleep(0.0025)
    return False


FileRemover = Callable[[Registration], None]


class Registry:
    """The registry of one user, in `folder` (created on first write, mode 0700)."""

    def __init__(
        self, folder: Path, identity: UserIdentity, *, remove_files: FileRemover | None = None
    ) -> None:
        self.folder = folder
        self.identity = identity
        self.remove_files = remove_files

    @property
    def path(self) -> Path:
        return self.folder / REGISTRY_FILE_NAME

    @property
    def locks_folder(self) -> Path:
        return self.folder / LOCKS_FOLDER_NAME

    # -- reading and writing -----------------------------------------------------------------

    def _ensure_folder(self) -> None:
        makedirs_as(self.identity, self.folder, 0o700)

    def _load(self) -> RegistryData:
        try:
            with acting_as(self.identity):
                fd = open_regular(self.path, os.O_RDONLY, what="The registry")
        except FileNotFoundError:
            return RegistryData()
        try:
            raw = read_bounded(fd, MAX_REGISTRY_BYTES, what=f"The registry {self.path}")
        finally:
            os.close(fd)
        if not raw.strip():
            return RegistryData()
        try:
            return RegistryData.from_json(json.loads(raw.decode("utf-8")))
        except (UnicodeDecodeError, ValueError, RecursionError) as error:
            raise WslError("E_UNEXPECTED", f"The registry {self.path} is corrupted: {error}") from None

    def _store(self, data: RegistryData) -> None:
        payload = (json.dumps(data.to_json(), indent=2, sort_keys=False) + "\n").encode("utf-8")
        temporary = self.folder / f".registry.json.{os.getpid()}.{os.urandom(4).hex()}.tmp"
        with acting_as(self.identity):
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(temporary, flags, 0o600)
            try:
                try:
                    view = memoryview(payload)
                    while view:
                        view = view[os.write(fd, view) :]
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.rename(temporary, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
                raise
            folder_fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(folder_fd)
            finally:
                os.close(folder_fd)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self._ensure_folder()
        with acting_as(self.identity):
            fd = open_regular(
                self.folder / "registry.lock", os.O_RDWR | os.O_CREAT, 0o600, what="The registry lock"
            )
        try:
            flock_bounded(fd, fcntl.LOCK_EX, what=f"The registry lock in {self.folder}")
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def transaction(self, *, create: bool = True) -> Iterator[RegistryData]:
        """Read-modify-write under the registry lock; written only if something changed and the
        block did not raise. With `create=False` (a lookup), a user who has no registry folder yet
        gets an empty registry and nothing is created."""
        if not create:
            with acting_as(self.identity):
                missing = not self.folder.exists()
            if missing:
                yield RegistryData()
                return
        with self._locked():
            data = self._load()
            before = data.to_json()
            yield data
            if data.to_json() != before:
                self._store(data)

    def snapshot(self) -> RegistryData:
        """A consistent copy of the registry (changes to it are not saved): read under the lock
        into new objects, never written back (no transaction, no copy)."""
        with acting_as(self.identity):
            missing = not self.folder.exists()
        if missing:
            return RegistryData()
        with self._locked():
            return self._load()

    # -- operation locks ---------------------------------------------------------------------

    def _lock_path(self, distro_id: uuid.UUID) -> Path:
        return self.locks_folder / f"{distro_id}.lock"

    def acquire_operation(self, distro_id: uuid.UUID, state: DistributionState) -> OperationLock:
        """Start a long operation on a distribution; E_ILLEGAL_STATE_CHANGE when another one runs."""
        if state not in _LOCK_STATES:
            raise ValueError(f"{state!r} is not an operation state")
        makedirs_as(self.identity, self.locks_folder, 0o700)
        path = self._lock_path(distro_id)
        for _ in range(100):
            with acting_as(self.identity):
                fd = open_regular(path, os.O_RDWR | os.O_CREAT, 0o600, what="The operation lock")
            if not _try_flock(fd, fcntl.LOCK_EX):
                os.close(fd)
                raise WslError("E_ILLEGAL_STATE_CHANGE")
            try:
                with acting_as(self.identity):
                    current = os.stat(path, follow_symlinks=False)
            except FileNotFoundError:
                current = None
            opened = os.fstat(fd)
            if current is None or (current.st_dev, current.st_ino) != (opened.st_dev, opened.st_ino):
                os.close(fd)  # the previous owner removed it between our open and flock: retry
                continue
            record = json.dumps({"pid": os.getpid(), "state": state.name}).encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, record, 0)
            return OperationLock(path, fd, state, self.identity)
        raise WslError("E_ILLEGAL_STATE_CHANGE", "Could not take the distribution's operation lock.")

    def active_operation(self, distro_id: uuid.UUID) -> DistributionState | None:
        """The state a live operation on the distribution stands for, or None when none runs."""
        try:
            with acting_as(self.identity):
                fd = open_regular(self._lock_path(distro_id), os.O_RDONLY, what="The operation lock")
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                pass
            else:
                return None  # nobody holds it: a crashed operation's leftover
            for _ in range(50):
                raw = os.pread(fd, 256, 0)
                try:
                    return DistributionState[json.loads(raw)["state"]]
                except (ValueError, KeyError, TypeError):
                    time.sleep(0.002)  # the owner is still writing its record
            return DistributionState.INSTALLING
        finally:
            os.close(fd)

    # -- crash recovery ----------------------------------------------------------------------

    def recover(self) -> list[str]:
        """Finish what crashed operations left half done; returns what was cleaned up.

        An Installing entry whose installer is gone is rolled back (files and entry removed);
        an Uninstalling entry whose uninstaller is gone is completed. An entry whose files cannot
        be deleted stays Uninstalling (never listed as installed) and is retried next time. A move
        whose mover is gone is completed if the root filesystem reached its new folder, else
        undone.
        """
        with acting_as(self.identity):
            if not self.path.exists():
                return []
        if not any(_needs_recovery(r) for r in self.snapshot().distributions.values()):
            return []
        held, moves = self._claim_crashed()
        cleaned: list[str] = [self._finish_move(registration, lock) for registration, lock in moves]
        for registration, lock in held:
            name = self._roll_back(registration, lock)
            if name is not None:
                cleaned.append(name)
        return cleaned

    def _claim_crashed(
        self,
    ) -> tuple[list[tuple[Registration, OperationLock]], list[tuple[Registration, OperationLock]]]:
        """Take the operation lock of every entry whose operation crashed: those to remove
        (marked Uninstalling) and the interrupted moves. Entries whose owner lives are left."""
        held: list[tuple[Registration, OperationLock]] = []
        moves: list[tuple[Registration, OperationLock]] = []
        with self.transaction() as data:
            for registration in list(data.distributions.values()):
                if not _needs_recovery(registration) or self.active_operation(registration.id) is not None:
                    continue  # nothing to do, or its owner is alive
                try:
                    lock = self.acquire_operation(registration.id, DistributionState.UNINSTALLING)
                except WslError:
                    continue  # its owner is alive
                if registration.state is DistributionState.INSTALLED:
                    moves.append((registration, lock))
                    continue
                registration.state = DistributionState.UNINSTALLING
                held.append((registration, lock))
            data.fix_default()
        return held, moves

    def _roll_back(self, registration: Registration, lock: OperationLock) -> str | None:
        """Delete a crashed operation's files and entry; None (the entry stays Uninstalling) when
        its files cannot be deleted."""
        with lock:
            try:
                if self.remove_files is not None:
                    self.remove_files(registration)
            except (OSError, WslError):
                return None
            with self.transaction() as data:
                data.distributions.pop(registration.id, None)
                data.fix_default()
        return registration.name or str(registration.id)

    def _finish_move(self, registration: Registration, lock: OperationLock) -> str:
        """An interrupted move: keep whichever copy is whole."""
        assert registration.move_target is not None
        target = registration.move_target
        with lock:
            with acting_as(self.identity):
                at_source = os.path.lexists(registration.rootfs)
                at_target = os.path.lexists(target / "rootfs")
            if at_target and at_source and self.remove_files is not None:
                # A copy to another file system was cut short: the new copy goes.
                partial = Registration(id=registration.id, name=registration.name, base_path=target)
                with contextlib.suppress(OSError, WslError):
                    self.remove_files(partial)
            with self.transaction() as data:
                entry = data.distributions.get(registration.id)
                if entry is not None:
                    if at_target and not at_source:
                        entry.base_path, entry.created_base_path = target, False
                    entry.move_target = None
        return registration.name
