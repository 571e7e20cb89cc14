"""WSL's messages encoded with `struct` alone: neither a launch nor the VM imports construct.

A warm `pywsl -d D -- cmd` exchanges a handful of messages (the mini_init greeting, `LaunchInit`
and its `CreateInstanceResult`, `Initialize`, `CreateSession`, `CreateProcessUtilityVm`, the
exit channel's `ExitStatus`, `WindowSizeChanged`, pywsl's `SignalProcess`); a cold one adds the
VM's configuration (`EarlyConfig`, `InitialConfig`). The guest's processes exchange every message
of theirs with these too (`ChildExit`, `TerminateInstance`, the import's results, the disk
messages, pywsl's `InstanceList`, `ShutdownVm`, `ImportWarnings`, interop's
`CreateProcessResponse`): the VM imports all it needs before it starts and cannot read the
interpreter's files afterwards, so construct would be on every VM's start. Their layouts are
declared once, with construct, in `messages_init.py`, `messages_mini_init.py` and
`extensions.py`; importing construct and building those declarations costs more than the rest of
the launch. This module restates the same layouts as `struct` formats and gives each message a
`FastSchema` with the `build(**values)` / `parse(data)` of `pywsl.wire.schema(name)`: the same
bytes, the same values, the same `ProtocolError`s (the tests check it against the construct
declarations and the published vectors, message by message).

A schema here is a fixed part (`Header` plus named fields, `x` for padding; a `Nested` struct
without strings is one field of the fixed part) and the variable part in writer order: `CStr` (an
offset field and a NUL-terminated string; `optional`: offset 0 means absent), `Direct` (a string
stored directly in `Buffer`), `Strings` (an offset and a count field and that many strings;
`placeholder`: one NUL when empty) and `Blob` (an offset and a size field, raw bytes). The
create-process message embeds `Common`, whose offsets count from its own start.
"""

from __future__ import annotations

import struct

# `collections.abc` loads `collections`, and `typing` is slower still: a warm launch would spend more
# on them than on this module; `_collections_abc` (the same classes) comes loaded with `os`.
from _collections_abc import Mapping, Sequence

from pywsl.wire.constants import MAX_MESSAGE_SIZE, MESSAGE_HEADER_SIZE
from pywsl.wire.errors import ProtocolError
from pywsl.wire.message_types import LxMessageType, PywslMessageType
from pywsl.wire.parsed import Message, cstring_at

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "CHILD_EXIT",
    "CREATE_INSTANCE_RESULT",
    "CREATE_PROCESS_RESPONSE",
    "CREATE_PROCESS_UTILITY_VM",
    "CREATE_SESSION",
    "CREATE_SESSION_RESPONSE",
    "DETACH_MESSAGE",
    "EARLY_CONFIG",
    "EXIT_STATUS",
    "FAST_SCHEMAS",
    "GUEST_CAPABILITIES",
    "IMPORT_RESULT",
    "IMPORT_WARNINGS",
    "INITIALIZE",
    "INITIALIZE_RESPONSE",
    "INITIAL_CONFIG",
    "INSTANCE_LIST",
    "MINI_INIT_MESSAGE",
    "MOUNT_MESSAGE",
    "MOUNT_RESULT",
    "RESIZE_MESSAGE",
    "RESIZE_RESPONSE",
    "RESULT_UINT32",
    "SHUTDOWN_VM",
    "SIGNAL_PROCESS",
    "TERMINATE_INSTANCE",
    "UNMOUNT_MESSAGE",
    "WINDOW_SIZE_CHANGED",
    "FastMessage",
    "FastSchema",
    "instance_entries",
]

_HEADER = struct.Struct("<IIII")
_HEADER_NAMES = ("MessageType", "MessageSize", "TransactionId", "TransactionStep")


FastMessage = Message  # the same parsed form as the construct codec's


class CStr:
    """An offset field locating a NUL-terminated UTF-8 string (`optional`: offset 0 = absent)."""

    __slots__ = ("field", "name", "optional")

    def __init__(self, field: str, *, optional: bool = False) -> None:
        self.field = field
        self.name = field.removesuffix("Offset").removesuffix("Index")
        self.optional = optional


class Direct:
    """A NUL-terminated string stored directly in `Buffer` (absent when the message ends there)."""

    __slots__ = ("field", "name")

    def __init__(self) -> None:
        self.field = self.name = "Buffer"


class Strings:
    """`count` consecutive NUL-terminated strings at an offset (`placeholder`: one NUL when empty)."""

    __slots__ = ("count", "field", "name", "placeholder")

    def __init__(self, field: str, count: str, *, placeholder: bool = False) -> None:
        self.field = field
        self.count = count
        self.name = field.removesuffix("Offset")
        self.placeholder = placeholder


class Blob:
    """Raw bytes at an offset, their length in a size field (`optional`: offset 0 = absent)."""

    __slots__ = ("field", "name", "optional", "size")

    def __init__(self, field: str, size: str, *, optional: bool = False) -> None:
        self.field = field
        self.size = size
        self.name = field.removesuffix("Offset").removesuffix("Index")
        self.optional = optional


Item = CStr | Direct | Strings | Blob


def _computed(item: Item) -> tuple[str, ...]:
    """The fixed fields the writer fills in for a payload item."""
    if isinstance(item, Strings):
        return (item.field, item.count)
    if isinstance(item, Blob):
        return (item.field, item.size)
    return () if isinstance(item, Direct) else (item.field,)


class _Fixed:
    """A fixed part: `struct` format codes and the names of its fields (padding has none).

    The layout is compiled on first use: a launch uses a handful of the messages declared here."""

    __slots__ = ("_layout", "codes", "flags", "names", "struct")

    codes: dict[str, str]  # field name -> its struct code
    flags: frozenset[str]  # C++ bools: any value, written as 0 or 1
    names: tuple[str, ...]
    struct: struct.Struct

    def __init__(self, layout: str) -> None:
        self._layout = layout

    def __getattr__(self, name: str) -> Any:
        if name not in _Fixed.__annotations__:
            raise AttributeError(name)
        codes = []
        names = []
        flags = []
        self.codes = {}
        for entry in self._layout.split():
            field, _, code = entry.rpartition(":")
            codes.append(code)
            if field:
                names.append(field)
                self.codes[field] = code
            if code == "?":
                flags.append(field)
        self.struct = struct.Struct("<" + "".join(codes))
        self.names = tuple(names)
        self.flags = frozenset(flags)
        return object.__getattribute__(self, name)


class Nested:
    """A struct embedded in the fixed part (no strings of its own): `name` is its C name."""

    __slots__ = ("fixed", "name")

    def __init__(self, name: str, layout: str) -> None:
        self.name = name
        self.fixed = _Fixed(layout)


class _Block:
    """The create-process `Common`: its fixed part, where its strings start, its variable part."""

    __slots__ = ("buffer_offset", "fixed", "name", "payload")

    def __init__(self, name: str, layout: str, *, buffer_offset: int, payload: Sequence[Item]) -> None:
        self.name = name
        self.fixed = _Fixed(layout)
        self.buffer_offset = buffer_offset
        self.payload = tuple(payload)


class FastSchema:
    """One message: `build(**values) -> bytes` and `parse(data) -> FastMessage`, as `MessageSchema`."""

    def __init__(
        self,
        name: str,
        message_type: int,
        layout: str = "",
        *,
        buffer_offset: int | None = None,
        payload: Sequence[Item] = (),
        common: _Block | None = None,
        nested: Mapping[str, Nested] | None = None,
        other_types: Sequence[int] = (),
    ) -> None:
        self.name = name
        self.message_type = int(message_type)
        self.accepted_types = frozenset({self.message_type, *(int(kind) for kind in other_types)})
        self._declaration = (layout, buffer_offset, tuple(payload), common, dict(nested or {}))

    # Compiled from the declaration on first use (`_compile`): a launch uses a few of these messages.
    sizeof: int
    payload: tuple[Item, ...]
    common: _Block | None
    nested: Mapping[str, Nested]
    fields: Mapping[str, str]
    common_fields: Mapping[str, str]
    computed_fields: frozenset[str]
    common_offset: int
    buffer_offset: int
    _fixed: _Fixed

    def __getattr__(self, name: str) -> Any:
        if name not in FastSchema.__annotations__:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        self._compile()
        return object.__getattribute__(self, name)

    def _compile(self) -> None:
        layout, buffer_offset, payload, common, nested = self._declaration
        self._fixed = _Fixed(layout + (" Common:" + f"{common.fixed.struct.size}s" if common else ""))
        self.sizeof = MESSAGE_HEADER_SIZE + self._fixed.struct.size
        self.payload = payload
        self.common = common
        self.nested = nested
        self.fields = {name: code for name, code in self._fixed.codes.items() if name != "Common"}
        self.common_fields = common.fixed.codes if common is not None else {}
        self.computed_fields = frozenset(
            ["Header.MessageSize"]
            + [name for item in self.payload if not isinstance(item, Direct) for name in _computed(item)]
            + [f"Common.{name}" for item in (common.payload if common else ()) for name in _computed(item)]
        )
        if common is not None:
            self.common_offset = MESSAGE_HEADER_SIZE + self._fixed.struct.size - common.fixed.struct.size
            self.buffer_offset = self.common_offset + common.buffer_offset
        else:
            self.common_offset = 0
            self.buffer_offset = self.sizeof if buffer_offset is None else buffer_offset

    def __repr__(self) -> str:
        return f"FastSchema({self.name!r}, type={self.message_type}, sizeof={self.sizeof})"

    def _error(self, message: str, field: str) -> ProtocolError:
        return ProtocolError(message, struct=self.name, field=field)

    # ---- parsing -------------------------------------------------------------------------------

    def parse(self, data: bytes | bytearray | memoryview) -> FastMessage:
        """Decode one whole message (header included); `ProtocolError` when it is malformed."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"expected bytes, got {type(data).__name__}")
        data = bytes(data)
        header = self._check_frame(data)
        values: dict[str, Any] = {
            "Header": FastMessage("MESSAGE_HEADER", dict(zip(_HEADER_NAMES, header, strict=True)))
        }
        values.update(
            zip(self._fixed.names, self._fixed.struct.unpack_from(data, MESSAGE_HEADER_SIZE), strict=True)
        )
        for name, nested in self.nested.items():
            unpacked = nested.fixed.struct.unpack(values[name])
            values[name] = FastMessage(nested.name, dict(zip(nested.fixed.names, unpacked, strict=True)))
        for item in self.payload:
            values[item.name] = self._decode(item, data, values, 0, "")
        if self.common is not None:
            common = self.common
            inner = dict(
                zip(
                    common.fixed.names, common.fixed.struct.unpack_from(data, self.common_offset), strict=True
                )
            )
            for item in common.payload:
                inner[item.name] = self._decode(item, data, inner, self.common_offset, "Common.")
            values["Common"] = FastMessage(common.name, inner)
        return FastMessage(self.name, values)

    def _check_frame(self, data: bytes) -> tuple[int, ...]:
        size = len(data)
        if size < MESSAGE_HEADER_SIZE:
            raise self._error(
                f"message is {size} bytes, shorter than the {MESSAGE_HEADER_SIZE}-byte header", "Header"
            )
        header: tuple[int, ...] = _HEADER.unpack_from(data)
        message_type, message_size = header[0], header[1]
        if message_size != size:
            raise self._error(
                f"MessageSize is {message_size} but the message is {size} bytes", "Header.MessageSize"
            )
        if size > MAX_MESSAGE_SIZE:
            raise self._error(
                f"message is {size} bytes, larger than {MAX_MESSAGE_SIZE}", "Header.MessageSize"
            )
        if message_type not in self.accepted_types:
            expected = " or ".join(str(kind) for kind in sorted(self.accepted_types))
            raise self._error(f"message type {message_type}, expected {expected}", "Header.MessageType")
        if size < self.sizeof:
            raise self._error(
                f"message is {size} bytes, shorter than sizeof({self.name}) = {self.sizeof}",
                "Header.MessageSize",
            )
        return header

    def _decode(self, item: Item, data: bytes, raw: Mapping[str, Any], base: int, prefix: str) -> Any:
        where = prefix + item.field
        if isinstance(item, Direct):
            return (
                None if len(data) <= self.buffer_offset else self._cstring(data, self.buffer_offset, where)[0]
            )
        offset: int = raw[item.field]
        if isinstance(item, CStr):
            if offset == 0 and item.optional:
                return None
            return self._cstring(data, base + offset, where)[0]
        if isinstance(item, Blob):
            if offset == 0 and item.optional:
                return None
            return self._blob(data, base + offset, raw[item.size], where, prefix + item.size)
        count: int = raw[item.count]
        position = base + offset
        if count == 0:
            if position < self.buffer_offset or position > len(data):
                raise self._error(
                    f"0 bytes at byte {position} lie outside the variable part "
                    f"(bytes {self.buffer_offset}..{len(data)})",
                    where,
                )
            return []
        strings = []
        for index in range(count):
            text, position = self._cstring(data, position, f"{where}[{index}]")
            strings.append(text)
        return strings

    def _blob(self, data: bytes, position: int, length: int, where: str, size_field: str) -> bytes:
        if length < 0:
            raise self._error(f"negative size {length}", size_field)
        if position < self.buffer_offset or position + length > len(data):
            raise self._error(
                f"{length} bytes at byte {position} lie outside the variable part "
                f"(bytes {self.buffer_offset}..{len(data)})",
                where,
            )
        return data[position : position + length]

    def _cstring(self, data: bytes, position: int, where: str) -> tuple[str, int]:
        try:
            return cstring_at(data, position, self.buffer_offset)
        except ValueError as error:
            raise self._error(str(error), where) from None

    # ---- building ------------------------------------------------------------------------------

    def build(self, **values: Any) -> bytes:
        """Encode a message: fixed fields by WSL name (missing: 0), the variable part by logical
        name, `Header={"MessageType": ...}` for a message that accepts several types. Offsets,
        counts and MessageSize are computed."""
        message_type = self._message_type(values.pop("Header", None))
        common_values = values.pop("Common", None) if self.common is not None else None
        fixed, body = self._level(values, self._fixed.names, self.payload, self.buffer_offset, "")
        if self.common is not None:
            common = self.common
            if common_values is not None and not isinstance(common_values, Mapping):
                raise self._error(
                    f"expected a mapping of fields, got {type(common_values).__name__}", "Common"
                )
            start = self.buffer_offset + len(body)
            inner, common_body = self._level(
                dict(common_values or {}), common.fixed.names, common.payload, start, "Common."
            )
            body += common_body
            fixed["Common"] = self._pack(common.fixed, inner, "Common.")
        end = self.buffer_offset + len(body)
        total = max(end, self.sizeof)
        if total > MAX_MESSAGE_SIZE:
            raise self._error(
                f"message would be {total} bytes, larger than {MAX_MESSAGE_SIZE}", "Header.MessageSize"
            )
        head = _HEADER.pack(message_type, total, 0, 0) + self._pack(self._fixed, fixed, "")
        return head[: self.buffer_offset] + bytes(body) + bytes(total - end)

    def _message_type(self, header: Any) -> int:
        if header is None:
            return self.message_type
        if not isinstance(header, Mapping) or set(header) - {"MessageType"}:
            raise TypeError(f"{self.name}: only Header.MessageType may be given")
        message_type = header.get("MessageType", self.message_type)
        if isinstance(message_type, bool) or not isinstance(message_type, int):
            raise self._error(f"expected an integer, got {message_type!r}", "Header.MessageType")
        if message_type not in self.accepted_types:
            expected = " or ".join(str(kind) for kind in sorted(self.accepted_types))
            raise self._error(f"message type {message_type}, expected {expected}", "Header.MessageType")
        return int(message_type)

    def _level(
        self,
        values: dict[str, Any],
        names: tuple[str, ...],
        payload: tuple[Item, ...],
        start: int,
        prefix: str,
    ) -> tuple[dict[str, Any], bytearray]:
        """The fixed values of one level (offsets filled in) and its encoded variable part."""
        base = self.common_offset if prefix else 0  # offsets in Common count from its start
        body = bytearray()
        fixed: dict[str, Any] = {}
        for item in payload:
            encoded, located = self._encode(
                item, values.pop(item.name, None), start + len(body) - base, prefix
            )
            body += encoded
            fixed.update(located)
        for key, value in values.items():
            if key not in names or key in fixed:
                raise TypeError(f"{self.name} has no settable field {prefix}{key}")
            nested = self.nested.get(key) if not prefix else None
            fixed[key] = value if nested is None else self._pack_nested(nested, value, key)
        if not prefix:
            for key, nested in self.nested.items():
                fixed.setdefault(key, bytes(nested.fixed.struct.size))
        return fixed, body

    def _encode(self, item: Item, value: Any, offset: int, prefix: str) -> tuple[bytes, dict[str, int]]:
        """One payload item's bytes and the fixed fields that locate it."""
        if isinstance(item, Direct):
            return (b"", {}) if value is None else (self._text(value, prefix + item.field) + b"\0", {})
        if isinstance(item, CStr):
            if value is None and item.optional:
                return b"", {item.field: 0}
            return self._text("" if value is None else value, prefix + item.name) + b"\0", {
                item.field: offset
            }
        if isinstance(item, Blob):
            if value is None and item.optional:
                return b"", {item.field: 0, item.size: 0}
            blob = self._bytes(value, prefix + item.name)
            return blob, {item.field: offset, item.size: len(blob)}
        strings = self._texts([] if value is None else value, prefix + item.name)
        encoded = b"".join(text + b"\0" for text in strings)
        return encoded if strings or not item.placeholder else b"\0", {
            item.field: offset,
            item.count: len(strings),
        }

    def _pack_nested(self, nested: Nested, value: Any, name: str) -> bytes:
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise self._error(f"expected a mapping of fields, got {type(value).__name__}", name)
        unknown = set(value) - set(nested.fixed.names)
        if unknown:
            raise TypeError(f"{self.name} has no field {name}.{sorted(unknown)[0]}")
        return self._pack(nested.fixed, value, name + ".")

    def _pack(self, fixed: _Fixed, values: Mapping[str, Any], prefix: str) -> bytes:
        arguments = []
        for name in fixed.names:
            value = values.get(name, 0)
            if name in fixed.flags:
                value = bool(value)
            elif isinstance(value, bool) or not isinstance(value, int | bytes):
                raise self._error(f"expected an integer, got {value!r}", prefix + name)
            arguments.append(value)
        try:
            return fixed.struct.pack(*arguments)
        except struct.error as error:
            raise self._error(str(error), prefix.rstrip(".") or "Header") from None

    def _text(self, value: Any, where: str) -> bytes:
        if not isinstance(value, str):
            raise self._error(f"expected str, got {type(value).__name__}", where)
        if "\0" in value:
            raise self._error("string contains a NUL character", where)
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise self._error(f"cannot encode as UTF-8: {exc.reason}", where) from None

    def _bytes(self, value: Any, where: str) -> bytes:
        if value is None:
            return b""
        if not isinstance(value, bytes | bytearray | memoryview):
            raise self._error(f"expected bytes, got {type(value).__name__}", where)
        return bytes(value)

    def _texts(self, value: Any, where: str) -> list[bytes]:
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):
            raise self._error(f"expected a list of str, got {type(value).__name__}", where)
        return [self._text(entry, f"{where}[{index}]") for index, entry in enumerate(value)]


T = LxMessageType
P = PywslMessageType

# ---- mini_init channel (messages_mini_init.py) ------------------------------------------------------

GUEST_CAPABILITIES = FastSchema(
    "LX_INIT_GUEST_CAPABILITIES",
    T.LxMiniInitMessageGuestCapabilities,
    "SeccompAvailable:? 7x HvPciSwiotlbBase:Q HvPciSwiotlbSize:Q",
    buffer_offset=40,
    payload=(Direct(),),
)
EARLY_CONFIG = FastSchema(
    "LX_MINI_INIT_EARLY_CONFIG_MESSAGE",
    T.LxMiniInitMessageEarlyConfig,
    "SwapLun:I SystemDistroDeviceType:I SystemDistroDeviceId:I MemoryReclaimMode:I "
    "DnsTunnelingIpAddress:I EnableDebugShell:? EnableDnsTunneling:? EnableSafeMode:? DefaultKernel:? "
    "IsolateDistroCgroup:? 3x KernelModulesDeviceId:I HostnameOffset:I KernelModulesListOffset:I",
    buffer_offset=56,
    payload=(CStr("HostnameOffset"), CStr("KernelModulesListOffset")),
)
INITIAL_CONFIG = FastSchema(
    "LX_MINI_INIT_CONFIG_MESSAGE",
    T.LxMiniInitMessageInitialConfig,
    "EntropySize:i EntropyOffset:I EnableGuiApps:? MountGpuShares:? EnableInboxGpuLibs:? x "
    "NetworkingConfiguration:20s",
    nested={
        "NetworkingConfiguration": Nested(
            "LX_MINI_INIT_NETWORKING_CONFIGURATION",
            "NetworkingMode:I PortTrackerType:I EphemeralPortRangeStart:H EphemeralPortRangeEnd:H "
            "EnableDhcpClient:? DisableIpv6:? 2x DhcpTimeout:i",
        )
    },
    buffer_offset=48,
    payload=(Blob("EntropyOffset", "EntropySize"),),
)
CHILD_EXIT = FastSchema("LX_MINI_INIT_CHILD_EXIT_MESSAGE", T.LxMiniInitMessageChildExit, "ChildPid:I")
IMPORT_RESULT = FastSchema(
    "LX_MINI_INIT_IMPORT_RESULT",
    T.LxMiniInitMessageImportResult,
    "Result:i ValidDistribution:? 3x FlavorIndex:I VersionIndex:I ShortcutIconIndex:I ShortcutIconSize:I "
    "DefaultNameIndex:I TerminalProfileIndex:I TerminalProfileSize:I GenerateTerminalProfile:? "
    "GenerateShortcut:? 2x",
    buffer_offset=54,
    payload=(
        CStr("FlavorIndex", optional=True),
        CStr("VersionIndex", optional=True),
        CStr("DefaultNameIndex", optional=True),
        Blob("ShortcutIconIndex", "ShortcutIconSize", optional=True),
        Blob("TerminalProfileIndex", "TerminalProfileSize", optional=True),
    ),
)
MOUNT_MESSAGE = FastSchema(
    "LX_MINI_INIT_MOUNT_MESSAGE",
    T.LxMiniInitMessageMount,
    "PartitionIndex:I ScsiLun:I TypeOffset:I TargetNameOffset:I OptionsOffset:I",
    buffer_offset=36,
    payload=(CStr("TypeOffset"), CStr("TargetNameOffset"), CStr("OptionsOffset")),
)
UNMOUNT_MESSAGE = FastSchema(
    "LX_MINI_INIT_UNMOUNT_MESSAGE", T.LxMiniInitMessageUnmount, buffer_offset=16, payload=(Direct(),)
)
DETACH_MESSAGE = FastSchema("LX_MINI_INIT_DETACH_MESSAGE", T.LxMiniInitMessageDetach, "ScsiLun:I")
MOUNT_RESULT = FastSchema(
    "LX_MINI_INIT_MOUNT_RESULT_MESSAGE", T.LxMiniInitMessageMountStatus, "Result:i FailureStep:I"
)
RESIZE_MESSAGE = FastSchema(
    "LX_MINI_INIT_RESIZE_DISTRIBUTION_MESSAGE",
    T.LxMiniInitMessageResizeDistribution,
    "ScsiLun:I 4x NewSize:Q",
)
RESIZE_RESPONSE = FastSchema(
    "LX_MINI_INIT_RESIZE_DISTRIBUTION_RESPONSE",
    T.LxMiniInitMessageResizeDistributionResponse,
    "ResponseCode:I",
)
MINI_INIT_MESSAGE = FastSchema(
    "LX_MINI_INIT_MESSAGE",
    T.LxMiniInitMessageLaunchInit,
    "MountDeviceType:I DeviceId:I FsTypeOffset:I MountOptionsOffset:I VmIdOffset:I "
    "DistributionNameOffset:I SharedMemoryRootOffset:I InstallPathOffset:I UserProfileOffset:I "
    "Flags:I ConnectPort:I",
    other_types=(T.LxMiniInitMessageImport, T.LxMiniInitMessageImportInplace, T.LxMiniInitMessageExport),
    buffer_offset=60,
    payload=tuple(
        CStr(field)
        for field in (
            "FsTypeOffset",
            "MountOptionsOffset",
            "VmIdOffset",
            "DistributionNameOffset",
            "SharedMemoryRootOffset",
            "InstallPathOffset",
            "UserProfileOffset",
        )
    ),
)
CREATE_INSTANCE_RESULT = FastSchema(
    "LX_MINI_INIT_CREATE_INSTANCE_RESULT",
    T.LxMiniInitMessageCreateInstanceResult,
    "Result:i FailureStep:I Pid:Q ConnectPort:I WarningsOffset:I",
    buffer_offset=40,
    payload=(CStr("WarningsOffset", optional=True),),
)

# ---- distribution init and session leader (messages_init.py) ----------------------------------------

INITIALIZE = FastSchema(
    "LX_INIT_CONFIGURATION_INFORMATION",
    T.LxInitMessageInitialize,
    "HostnameOffset:I DomainnameOffset:I WindowsHostsOffset:I DistributionNameOffset:I "
    "Plan9SocketOffset:I TimezoneOffset:I DrvFsVolumesBitmap:I DrvFsDefaultOwner:I FeatureFlags:I "
    "DrvfsMount:I",
    buffer_offset=56,
    payload=tuple(
        CStr(field)
        for field in (
            "HostnameOffset",
            "DomainnameOffset",
            "WindowsHostsOffset",
            "DistributionNameOffset",
            "Plan9SocketOffset",
            "TimezoneOffset",
        )
    ),
)
INITIALIZE_RESPONSE = FastSchema(
    "LX_INIT_CONFIGURATION_INFORMATION_RESPONSE",
    T.LxInitMessageInitializeResponse,
    "Plan9Port:I DefaultUid:I InteropPort:I SystemdEnabled:? 3x PidNamespace:Q FlavorIndex:I VersionIndex:I",
    buffer_offset=48,
    payload=(CStr("FlavorIndex", optional=True), CStr("VersionIndex", optional=True)),
)
TERMINATE_INSTANCE = FastSchema("LX_INIT_TERMINATE_INSTANCE", T.LxInitMessageTerminateInstance, "Force:? 3x")
CREATE_SESSION = FastSchema("LX_INIT_CREATE_SESSION", T.LxInitMessageCreateSession, "ConsoleId:q")
CREATE_SESSION_RESPONSE = FastSchema(
    "LX_INIT_CREATE_SESSION_RESPONSE", T.LxInitMessageCreateSessionResponse, "Port:I"
)
CREATE_PROCESS_UTILITY_VM = FastSchema(
    "LX_INIT_CREATE_PROCESS_UTILITY_VM",
    T.LxInitMessageCreateProcessUtilityVm,
    "Rows:H Columns:H",
    common=_Block(
        "LX_INIT_CREATE_PROCESS_COMMON",
        "FilenameOffset:I CurrentWorkingDirectoryOffset:I CommandLineOffset:I CommandLineCount:H 2x "
        "EnvironmentOffset:I EnvironmentCount:H 2x NtEnvironmentOffset:I NtEnvironmentCount:H 2x "
        "NtPathOffset:I ShellOptions:I UsernameOffset:I DefaultUid:I Flags:i",
        buffer_offset=52,
        payload=(
            CStr("FilenameOffset"),
            CStr("CurrentWorkingDirectoryOffset"),
            Strings("CommandLineOffset", "CommandLineCount", placeholder=True),
            Strings("EnvironmentOffset", "EnvironmentCount"),
            Strings("NtEnvironmentOffset", "NtEnvironmentCount", placeholder=True),
            CStr("NtPathOffset"),
            CStr("UsernameOffset"),
        ),
    ),
)
RESULT_UINT32 = FastSchema("RESULT_MESSAGE<uint32_t>", T.LxMessageResultUint32, "Result:I")
CREATE_PROCESS_RESPONSE = FastSchema(
    "LX_INIT_CREATE_PROCESS_RESPONSE",
    T.LxInitMessageCreateProcessResponse,
    "Result:i 4x SignalPipeId:q Flags:I 4x",
)

# ---- pywsl's extensions (extensions.py) --------------------------------------------------------------

INSTANCE_LIST = FastSchema(
    "PYWSL_INSTANCE_LIST",
    P.PywslInstanceList,
    "Count:I EntriesOffset:I",
    buffer_offset=24,
    payload=(Strings("EntriesOffset", "Count"),),
)
SHUTDOWN_VM = FastSchema("PYWSL_SHUTDOWN_VM", P.PywslShutdownVm, "Force:? 3x")
IMPORT_WARNINGS = FastSchema(
    "PYWSL_IMPORT_WARNINGS",
    P.PywslImportWarnings,
    "WarningsOffset:I",
    buffer_offset=20,
    payload=(CStr("WarningsOffset", optional=True),),
)

# ---- relay sockets ----------------------------------------------------------------------------------

EXIT_STATUS = FastSchema("LX_INIT_PROCESS_EXIT_STATUS", T.LxInitMessageExitStatus, "ExitCode:i")
WINDOW_SIZE_CHANGED = FastSchema(
    "LX_INIT_WINDOW_SIZE_CHANGED", T.LxInitMessageWindowSizeChanged, "Rows:H Columns:H"
)
SIGNAL_PROCESS = FastSchema("PYWSL_SIGNAL_PROCESS", P.PywslSignalProcess, "Signal:i")

FAST_SCHEMAS: Mapping[str, FastSchema] = {
    fast.name: fast
    for fast in (
        GUEST_CAPABILITIES,
        EARLY_CONFIG,
        INITIAL_CONFIG,
        CHILD_EXIT,
        IMPORT_RESULT,
        MOUNT_MESSAGE,
        UNMOUNT_MESSAGE,
        DETACH_MESSAGE,
        MOUNT_RESULT,
        RESIZE_MESSAGE,
        RESIZE_RESPONSE,
        MINI_INIT_MESSAGE,
        CREATE_INSTANCE_RESULT,
        TERMINATE_INSTANCE,
        INITIALIZE,
        INITIALIZE_RESPONSE,
        CREATE_SESSION,
        CREATE_SESSION_RESPONSE,
        CREATE_PROCESS_UTILITY_VM,
        RESULT_UINT32,
        CREATE_PROCESS_RESPONSE,
        INSTANCE_LIST,
        SHUTDOWN_VM,
        IMPORT_WARNINGS,
        EXIT_STATUS,
        WINDOW_SIZE_CHANGED,
        SIGNAL_PROCESS,
    )
}


def instance_entries(instances: Mapping[str, int]) -> list[str]:
    """``{name: init pid}`` as the ``Entries`` of PYWSL_INSTANCE_LIST (``"<pid>:<name>"``)."""
    return [f"{pid}:{name}" for name, pid in instances.items()]
