"""Layout engine of WSL's init / mini_init messages: a fixed C struct plus its variable part.

WSL (lxinitshared.h) declares every message as a C struct that starts with ``MESSAGE_HEADER`` and
may end in a flexible ``char Buffer[]``. Each fixed part is declared as a construct ``Struct``
(little-endian, explicit ``Padding``, never native alignment). What follows it, the variable part, is
declared as a tuple of payload items **in the order WSL's writer appends them** (``MessageWriter``
in message.h, or the hand-written create-process builders), which is not always field order:

``CString``       ``...Offset`` / ``...Index`` -> NUL-terminated UTF-8 string (``WriteString``).
                  ``optional=True``: offset 0 means absent (``None``); an empty string is one NUL
                  with a non-zero offset.
``BufferString``  string stored directly in ``Buffer`` (no offset field); absent (``None``) when the
                  message ends where ``Buffer`` starts.
``Blob``          offset + size field, raw bytes, no terminator (``InsertBuffer``).
``StringList``    offset + count field, ``count`` consecutive NUL-terminated strings (create-process
                  ``Common``); ``placeholder=True``: one NUL is reserved when the list is empty.
``MultiSz``       NUL-terminated strings and one more NUL (``CREATE_PROCESS_MESSAGE`` argv).
``EnvBlock``      ``MultiSz`` plus the NUL ``CopyToSpan`` appends (NT create-process environment).

Offsets count from the first byte of the message, except inside a create-process ``Common`` block
(``Block``), where they count from the start of ``Common``. The variable part starts at
``offsetof(Buffer)``, which can be smaller than ``sizeof``; a message still shorter than ``sizeof``
is zero-padded (``MessageWriter::Span``), so ``MessageSize = max(end of data, sizeof)``.

Callers never handle offsets: ``MessageSchema.build(**values)`` takes fixed fields by their WSL names
and the variable part by logical names (the offset field's name without ``Offset`` / ``Index``;
``Buffer`` for a direct string); ``parse`` returns a ``Message`` with both. Malformed input raises
``ProtocolError`` naming the struct and the field; padding bytes are written as zeros and never
checked.
"""

from __future__ import annotations

import enum
import struct as _struct
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final, TypeAlias

import construct as cs

from pywsl.wire.constants import MAX_MESSAGE_SIZE, MESSAGE_HEADER_SIZE
from pywsl.wire.enums import LX_MESSAGE_TYPE, PYWSL_MESSAGE_TYPE, TRANSACTION_STEP
from pywsl.wire.errors import ProtocolError
from pywsl.wire.parsed import Message as Message  # re-exported: the parsed form
from pywsl.wire.parsed import cstring_at

# --------------------------------------------------------------------------------------------------
# C types, little-endian, as the declarations spell them.

u8: Final = cs.Int8ul
u16: Final = cs.Int16ul
u32: Final = cs.Int32ul
i32: Final = cs.Int32sl
i64: Final = cs.Int64sl
u64: Final = cs.Int64ul
boolean: Final = cs.Flag  # C++ bool: one byte, 0 / 1

EnumType: TypeAlias = type[enum.IntEnum] | type[enum.IntFlag]


class _EnumAdapter(cs.Adapter):  # type: ignore[misc]
    """A 4-byte C enum or flag set: parses to a member when the value is known, else to the int."""

    def __init__(self, subcon: Any, enum_types: tuple[EnumType, ...]) -> None:
        super().__init__(subcon)
        self.enum_types = enum_types

    def _decode(self, obj: int, context: Any, path: str) -> int:
        for enum_type in self.enum_types:
            if issubclass(enum_type, enum.IntFlag):
                if obj >= 0:
                    return enum_type(obj)
            elif obj in enum_type._value2member_map_:
                return enum_type(obj)
        return obj

    def _encode(self, obj: Any, context: Any, path: str) -> int:
        if isinstance(obj, bool) or not isinstance(obj, int):
            raise cs.ExplicitError(f"expected an integer, got {obj!r}", path=path)
        return int(obj)


def enum32(*enum_types: EnumType, signed: bool = False) -> Any:
    """A 4-byte enum / flags field (``signed`` for the ``int Flags`` of the create-process Common)."""
    return _EnumAdapter(i32 if signed else u32, enum_types)


# --------------------------------------------------------------------------------------------------
# Struct registry: every declared struct by its WSL name (messages and embedded structs alike).

_STRUCT_NAMES: dict[int, str] = {}
_STRUCTS: dict[str, Any] = {}


def declare_struct(name: str, struct: Any) -> Any:
    """Record ``struct`` (a construct ``Struct``) under its WSL name and return it."""
    if name in _STRUCTS:
        raise ValueError(f"struct {name} declared twice")
    _STRUCTS[name] = struct
    _STRUCT_NAMES[id(struct)] = name
    return struct


def struct_declarations() -> Mapping[str, Any]:
    """Every declared construct ``Struct`` by WSL struct name (for layout checks)."""
    return MappingProxyType(_STRUCTS)


MESSAGE_HEADER: Final = declare_struct(
    "MESSAGE_HEADER",
    cs.Struct(
        "MessageType" / enum32(LX_MESSAGE_TYPE, PYWSL_MESSAGE_TYPE),
        "MessageSize" / u32,
        "TransactionId" / u32,
        "TransactionStep" / enum32(TRANSACTION_STEP),
    ),
)

_HEADER_PREFIX: Final = _struct.Struct("<II")  # MessageType, MessageSize


class FieldLayout:
    """One named field of a struct: its offset and size in bytes and its construct."""

    __slots__ = ("name", "offset", "size", "subcon")

    def __init__(self, name: str, offset: int, size: int, subcon: Any) -> None:
        self.name = name
        self.offset = offset
        self.size = size
        self.subcon = subcon

    def __repr__(self) -> str:
        return f"FieldLayout({self.name!r}, offset={self.offset}, size={self.size})"


_LAYOUTS: dict[int, tuple[Any, tuple[FieldLayout, ...]]] = {}  # id -> (struct kept alive, layout)


def struct_layout(struct: Any) -> tuple[FieldLayout, ...]:
    """The named fields of a construct ``Struct`` with their offsets (padding is unnamed)."""
    cached = _LAYOUTS.get(id(struct))
    if cached is not None and cached[0] is struct:
        return cached[1]
    fields = []
    offset = 0
    for sub in struct.subcons:
        size = sub.sizeof()
        if sub.name is not None:
            inner = sub.subcon if isinstance(sub, cs.Renamed) else sub
            fields.append(FieldLayout(sub.name, offset, size, inner))
        offset += size
    layout = tuple(fields)
    _LAYOUTS[id(struct)] = (struct, layout)
    return layout


def _default(subcon: Any) -> Any:
    """The value-initialised (``T x{}``) Python value of a field."""
    if isinstance(subcon, cs.Struct):
        return {field.name: _default(field.subcon) for field in struct_layout(subcon)}
    if isinstance(subcon, cs.Array):
        return [_default(subcon.subcon) for _ in range(subcon.count)]
    if subcon is cs.Flag:
        return False
    return 0


# --------------------------------------------------------------------------------------------------
# Payload items: how the variable part is laid out.


def logical_name(field: str) -> str:
    """``HostnameOffset`` -> ``Hostname``, ``FlavorIndex`` -> ``Flavor``."""
    for suffix in ("Offset", "Index"):
        if field.endswith(suffix) and len(field) > len(suffix):
            return field[: -len(suffix)]
    return field


class _Item:
    """Base of the payload items: ``field`` is the offset field that locates the value."""

    __slots__ = ("field",)

    def __init__(self, field: str) -> None:
        self.field = field

    @property
    def name(self) -> str:
        """The logical name callers use for this value."""
        return logical_name(self.field)

    @property
    def computed(self) -> tuple[str, ...]:
        """The fixed fields the writer fills in for this item."""
        return (self.field,)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.field!r})"


class CString(_Item):
    """A NUL-terminated UTF-8 string at ``field`` (``optional``: offset 0 = absent)."""

    __slots__ = ("optional",)

    def __init__(self, field: str, *, optional: bool = False) -> None:
        super().__init__(field)
        self.optional = optional


class BufferString(_Item):
    """A NUL-terminated UTF-8 string stored directly in the flexible ``Buffer``."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__("Buffer")

    @property
    def computed(self) -> tuple[str, ...]:
        return ()


class Blob(_Item):
    """Raw bytes at ``field``, their length in ``size_field`` (``optional``: offset 0 = absent)."""

    __slots__ = ("optional", "size_field")

    def __init__(self, field: str, size_field: str, *, optional: bool = False) -> None:
        super().__init__(field)
        self.size_field = size_field
        self.optional = optional

    @property
    def computed(self) -> tuple[str, ...]:
        return (self.field, self.size_field)


class StringList(_Item):
    """``count_field`` consecutive NUL-terminated strings (``placeholder``: one NUL when empty)."""

    __slots__ = ("count_field", "placeholder")

    def __init__(self, field: str, count_field: str, *, placeholder: bool = False) -> None:
        super().__init__(field)
        self.count_field = count_field
        self.placeholder = placeholder

    @property
    def computed(self) -> tuple[str, ...]:
        return (self.field, self.count_field)


class MultiSz(_Item):
    """NUL-terminated non-empty strings followed by an extra NUL."""

    __slots__ = ()


class EnvBlock(_Item):
    """An environment block (``MultiSz``) followed by one more NUL (``CopyToSpan``)."""

    __slots__ = ()


PayloadItem: TypeAlias = CString | BufferString | Blob | StringList | MultiSz | EnvBlock


class Block:
    """An embedded struct with its own variable part (the create-process ``Common``).

    Its offsets are relative to the start of the block and its strings start at its own
    ``offsetof(Buffer)``.
    """

    __slots__ = ("buffer_offset", "name", "payload", "struct")

    def __init__(self, name: str, struct: Any, *, buffer_offset: int, payload: Sequence[PayloadItem]) -> None:
        self.name = name
        self.struct = declare_struct(name, struct)
        self.buffer_offset = buffer_offset
        self.payload = tuple(payload)

    def __repr__(self) -> str:
        return f"Block({self.name!r})"


# --------------------------------------------------------------------------------------------------
# Parsed messages.


# --------------------------------------------------------------------------------------------------
# Schemas.

_SCHEMAS: dict[str, MessageSchema] = {}


def schema(name: str) -> MessageSchema:
    """The schema of a message by WSL struct name (``"RESULT_MESSAGE<uint32_t>"``, ...)."""
    try:
        return _SCHEMAS[name]
    except KeyError:
        raise KeyError(f"no message schema named {name!r}") from None


def schemas() -> Mapping[str, MessageSchema]:
    """Every message schema by WSL struct name (pywsl extensions included)."""
    return MappingProxyType(_SCHEMAS)


class _Level:
    """The top of a message or its ``Common`` block while building / parsing."""

    __slots__ = ("base", "payload", "prefix", "struct")

    def __init__(self, prefix: str, base: int, struct: Any, payload: tuple[PayloadItem, ...]) -> None:
        self.prefix = prefix  # "" or "Common."
        self.base = base  # absolute position the offsets are relative to
        self.struct = struct
        self.payload = payload


class MessageSchema:
    """One WSL message struct: ``build(**values) -> bytes`` and ``parse(data) -> Message``.

    ``message_type`` is the struct's static ``Type``; ``accepted_types`` the header types a
    receiver accepts for it (several for ``LX_MINI_INIT_MESSAGE``). ``buffer_offset`` is where the
    variable part starts (``sizeof`` for fixed-size messages). ``response`` names the ``TResponse``
    struct when WSL declares one.
    """

    def __init__(
        self,
        name: str,
        struct: Any,
        *,
        message_type: int,
        buffer_offset: int | None = None,
        payload: Sequence[PayloadItem] = (),
        common: Block | None = None,
        other_types: Sequence[int] = (),
        response: str | None = None,
    ) -> None:
        self.name = name
        self.struct = declare_struct(name, struct)
        self.message_type = int(message_type)
        self.accepted_types = frozenset({self.message_type, *(int(t) for t in other_types)})
        self.response = response
        self.sizeof: int = struct.sizeof()
        self.fields = struct_layout(struct)
        self.payload = tuple(payload)
        self.common = common
        offsets = {field.name: field.offset for field in self.fields}
        if self.fields[0].name != "Header" or self.fields[0].subcon is not MESSAGE_HEADER:
            raise ValueError(f"{name} does not start with MESSAGE_HEADER")
        self._levels = [_Level("", 0, struct, self.payload)]
        if common is not None:
            self.common_offset = offsets["Common"]
            self.buffer_offset = self.common_offset + common.buffer_offset
            self._levels.append(_Level("Common.", self.common_offset, common.struct, common.payload))
        else:
            self.common_offset = 0
            self.buffer_offset = self.sizeof if buffer_offset is None else buffer_offset
        self.has_buffer = bool(self.payload) or common is not None
        computed = {"Header.MessageSize"}
        for level in self._levels:
            names = {field.name for field in struct_layout(level.struct)}
            for item in level.payload:
                missing = [f for f in item.computed if f not in names]
                if missing or item.name in names:
                    raise ValueError(f"{name}: payload item {item} does not match the struct")
                computed.update(level.prefix + f for f in item.computed)
        self.computed_fields = frozenset(computed)
        if name in _SCHEMAS:
            raise ValueError(f"message schema {name} declared twice")
        _SCHEMAS[name] = self

    def __repr__(self) -> str:
        return f"MessageSchema({self.name!r}, type={self.message_type}, sizeof={self.sizeof})"

    def _error(self, message: str, field: str) -> ProtocolError:
        return ProtocolError(message, struct=self.name, field=field)

    # ---- parsing ---------------------------------------------------------------------------------

    def parse(self, data: bytes | bytearray | memoryview) -> Message:
        """Decode one whole message (header included); raises ``ProtocolError`` when malformed."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"expected bytes, got {type(data).__name__}")
        data = bytes(data)
        raw = self._parse_fixed(data)
        values = self._wrap(self.struct, raw)
        for level in self._levels:
            target = values if not level.prefix else values["Common"]
            level_raw = raw if not level.prefix else raw["Common"]
            for item in level.payload:
                target[item.name] = self._decode_item(item, data, level_raw, level)
        if self.common is not None:
            values["Common"] = Message(self.common.name, values["Common"])
        return Message(self.name, values)

    def _parse_fixed(self, data: bytes) -> dict[str, Any]:
        size = len(data)
        if size < MESSAGE_HEADER_SIZE:
            raise self._error(
                f"message is {size} bytes, shorter than the {MESSAGE_HEADER_SIZE}-byte header", "Header"
            )
        message_type, message_size = _HEADER_PREFIX.unpack_from(data)
        if message_size != size:
            raise self._error(
                f"MessageSize is {message_size} but the message is {size} bytes", "Header.MessageSize"
            )
        if size > MAX_MESSAGE_SIZE:
            raise self._error(
                f"message is {size} bytes, larger than {MAX_MESSAGE_SIZE}", "Header.MessageSize"
            )
        if message_type not in self.accepted_types:
            expected = " or ".join(str(t) for t in sorted(self.accepted_types))
            raise self._error(f"message type {message_type}, expected {expected}", "Header.MessageType")
        if size < self.sizeof:
            raise self._error(
                f"message is {size} bytes, shorter than sizeof({self.name}) = {self.sizeof}",
                "Header.MessageSize",
            )
        try:
            parsed = self.struct.parse(data)
        except cs.ConstructError as exc:  # not reachable with size >= sizeof; kept as a guard
            raise self._error(f"cannot decode: {exc}", _construct_path(exc) or "Header") from None
        result: dict[str, Any] = _plain(parsed)
        return result

    def _wrap(self, struct: Any, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Raw fields as Message values: embedded structs become nested ``Message`` objects."""
        values: dict[str, Any] = {}
        for field in struct_layout(struct):
            value = raw[field.name]
            if isinstance(field.subcon, cs.Struct):
                inner = self._wrap(field.subcon, value)
                nested = _STRUCT_NAMES.get(id(field.subcon), field.name)
                is_common = self.common is not None and field.subcon is self.common.struct
                value = inner if is_common else Message(nested, inner)
            values[field.name] = value
        return values

    def _decode_item(self, item: PayloadItem, data: bytes, raw: Mapping[str, Any], level: _Level) -> Any:
        where = level.prefix + item.field
        if isinstance(item, BufferString):
            if len(data) <= self.buffer_offset:
                return None
            return self._cstring(data, self.buffer_offset, where)[0]
        offset: int = raw[item.field]
        if offset == 0 and isinstance(item, CString | Blob) and item.optional:
            return None
        position = level.base + offset
        if isinstance(item, Blob):
            length: int = raw[item.size_field]
            if length < 0:
                raise self._error(f"negative size {length}", level.prefix + item.size_field)
            self._check_span(data, position, length, where)
            return data[position : position + length]
        if isinstance(item, StringList | MultiSz | EnvBlock):
            return self._decode_strings(
                data, raw[item.count_field] if isinstance(item, StringList) else None, position, where
            )
        return self._cstring(data, position, where)[0]

    def _decode_strings(self, data: bytes, count: int | None, position: int, where: str) -> list[str]:
        """A counted list (``count`` given) or a list ended by an empty string."""
        strings: list[str] = []
        if count == 0:
            self._check_span(data, position, 0, where)
            return strings
        while count is None or len(strings) < count:
            text, position = self._cstring(data, position, f"{where}[{len(strings)}]")
            if count is None and not text:
                return strings
            strings.append(text)
        return strings

    def _check_span(self, data: bytes, position: int, length: int, where: str) -> None:
        if position < self.buffer_offset or position + length > len(data):
            raise self._error(
                f"{length} bytes at byte {position} lie outside the variable part "
                f"(bytes {self.buffer_offset}..{len(data)})",
                where,
            )

    def _cstring(self, data: bytes, position: int, where: str) -> tuple[str, int]:
        try:
            return cstring_at(data, position, self.buffer_offset)
        except ValueError as error:
            raise self._error(str(error), where) from None

    # ---- building --------------------------------------------------------------------------------

    def build(self, **values: Any) -> bytes:
        """Encode a message from Python values; offsets, counts, sizes and MessageSize are computed.

        Fixed fields take their WSL names (missing ones are 0 / False, ``Header.MessageType`` the
        static type); the variable part takes logical names (``Hostname``, ``Entropy`` as bytes,
        ``Common={"CommandLine": [...], ...}``). ``None`` leaves an optional string absent. An
        offset / count / size field or ``MessageSize`` given anyway must equal the computed value.
        """
        claims: dict[str, Any] = {}
        fixed, logical = self._split(values, self._levels[0], claims)
        levels: list[tuple[_Level, dict[str, Any], dict[str, Any]]] = [(self._levels[0], fixed, logical)]
        if self.common is not None:
            given = fixed.pop("Common", None)
            common_values = _mapping(given, "Common", self)
            common_fixed, common_logical = self._split(common_values, self._levels[1], claims)
            fixed["Common"] = common_fixed
            levels.append((self._levels[1], common_fixed, common_logical))
        header = fixed.get("Header", {})
        message_type = header.get("MessageType", self.message_type)
        if isinstance(message_type, int) and message_type not in self.accepted_types:
            expected = " or ".join(str(t) for t in sorted(self.accepted_types))
            raise self._error(f"message type {message_type}, expected {expected}", "Header.MessageType")
        body = bytearray()
        for level, level_fixed, level_logical in levels:
            for item in level.payload:
                value = level_logical.get(item.name, _missing(item))
                offset = self.buffer_offset + len(body) - level.base
                encoded, updates = self._encode_item(item, value, offset, level.prefix)
                body += encoded
                level_fixed.update(updates)
        end = self.buffer_offset + len(body)
        total = max(end, self.sizeof)
        if total > MAX_MESSAGE_SIZE:
            raise self._error(
                f"message would be {total} bytes, larger than {MAX_MESSAGE_SIZE}", "Header.MessageSize"
            )
        complete = _merge(_default(self.struct), fixed, "", self)
        complete["Header"]["MessageType"] = message_type
        complete["Header"]["MessageSize"] = total
        for path, claimed in claims.items():
            holder = complete
            *parents, leaf = path.split(".")
            for parent in parents:
                holder = holder[parent]
            if isinstance(claimed, bool) or not isinstance(claimed, int) or claimed != holder[leaf]:
                raise self._error(f"given {claimed!r}, but the writer computes {holder[leaf]}", path)
        try:
            head: bytes = self.struct.build(complete)
        except cs.ConstructError as exc:
            raise self._error(_construct_message(exc), _construct_path(exc) or "Header") from None
        return head[: self.buffer_offset] + bytes(body) + bytes(total - end)

    def _split(
        self, values: Mapping[str, Any], level: _Level, claims: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Sort caller values into fixed fields and logical payload values; reject unknown names.

        Fields the writer computes (offsets, counts, sizes, MessageSize) may be given too: they are
        collected in ``claims`` and must then equal what the writer computes.
        """
        names = {field.name for field in struct_layout(level.struct)}
        logical = {item.name: item for item in level.payload}
        computed = {f: item.name for item in level.payload for f in item.computed}
        fixed: dict[str, Any] = {}
        payload: dict[str, Any] = {}
        for key, value in values.items():
            if key in logical:
                payload[key] = value
            elif key in computed:
                claims[level.prefix + key] = value
            elif key == "Header" and not level.prefix:
                header = dict(_mapping(value, "Header", self))
                if "MessageSize" in header:
                    claims["Header.MessageSize"] = header.pop("MessageSize")
                fixed[key] = header
            elif key in names:
                fixed[key] = value
            else:
                raise TypeError(f"{self.name} has no field {level.prefix}{key}")
        return fixed, payload

    def _encode_item(
        self, item: PayloadItem, value: Any, offset: int, prefix: str
    ) -> tuple[bytes, dict[str, int]]:
        where = prefix + (item.name if not isinstance(item, BufferString) else item.field)
        if isinstance(item, BufferString | CString):
            return self._encode_string_item(item, value, offset, where)
        if isinstance(item, Blob):
            return self._encode_blob(item, value, offset, where)
        return self._encode_strings(item, value, offset, where)

    def _encode_string_item(
        self, item: BufferString | CString, value: Any, offset: int, where: str
    ) -> tuple[bytes, dict[str, int]]:
        if isinstance(item, BufferString):
            return (b"", {}) if value is None else (self._encode_text(value, where) + b"\0", {})
        if value is None:
            if item.optional:
                return b"", {item.field: 0}
            value = ""  # WriteString(Index, nullptr) writes an empty string
        return self._encode_text(value, where) + b"\0", {item.field: offset}

    def _encode_blob(self, item: Blob, value: Any, offset: int, where: str) -> tuple[bytes, dict[str, int]]:
        if value is None:
            if item.optional:
                return b"", {item.field: 0, item.size_field: 0}
            value = b""
        if not isinstance(value, bytes | bytearray | memoryview):
            raise self._error(f"expected bytes, got {type(value).__name__}", where)
        blob = bytes(value)
        return blob, {item.field: offset, item.size_field: len(blob)}

    def _encode_strings(
        self, item: StringList | MultiSz | EnvBlock, value: Any, offset: int, where: str
    ) -> tuple[bytes, dict[str, int]]:
        strings = self._encode_list(value, where)
        if isinstance(item, StringList):
            data = b"".join(s + b"\0" for s in strings)
            if not strings and item.placeholder:
                data = b"\0"
            return data, {item.field: offset, item.count_field: len(strings)}
        for index, entry in enumerate(strings):
            if not entry:
                raise self._error("an empty entry would end the list", f"{where}[{index}]")
        data = b"".join(s + b"\0" for s in strings) + b"\0"
        if isinstance(item, EnvBlock):
            data += b"\0"
        return data, {item.field: offset}

    def _encode_text(self, value: Any, where: str) -> bytes:
        if not isinstance(value, str):
            raise self._error(f"expected str, got {type(value).__name__}", where)
        if "\0" in value:
            raise self._error("string contains a NUL character", where)
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise self._error(f"cannot encode as UTF-8: {exc.reason}", where) from None

    def _encode_list(self, value: Any, where: str) -> list[bytes]:
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):
            raise self._error(f"expected a list of str, got {type(value).__name__}", where)
        return [self._encode_text(entry, f"{where}[{index}]") for index, entry in enumerate(value)]


def _missing(item: PayloadItem) -> Any:
    """The value of a payload item the caller did not give."""
    if isinstance(item, BufferString):
        return None
    if isinstance(item, CString):
        return None if item.optional else ""
    if isinstance(item, Blob):
        return None if item.optional else b""
    return []


def _mapping(value: Any, field: str, owner: MessageSchema) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise owner._error(f"expected a mapping of fields, got {type(value).__name__}", field)
    return value


def _merge(
    defaults: dict[str, Any], given: Mapping[str, Any], prefix: str, owner: MessageSchema
) -> dict[str, Any]:
    """Caller values over the value-initialised struct; nested dicts are merged field by field."""
    result = dict(defaults)
    for key, value in given.items():
        path = prefix + key
        if key not in defaults:
            raise TypeError(f"{owner.name} has no field {path}")
        if isinstance(defaults[key], dict):
            result[key] = _merge(defaults[key], _mapping(value, path, owner), path + ".", owner)
        elif isinstance(defaults[key], list):
            if isinstance(value, str | bytes) or not isinstance(value, Sequence):
                raise owner._error(f"expected a list, got {type(value).__name__}", path)
            result[key] = list(value)
        else:
            result[key] = value
    return result


def _plain(value: Any) -> Any:
    """construct containers as plain dicts and lists (without construct's private keys)."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items() if not key.startswith("_")}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _construct_path(exc: cs.ConstructError) -> str:
    """``(building) -> Common -> Flags`` -> ``Common.Flags``."""
    path = getattr(exc, "path", None) or ""
    parts = [part.strip() for part in path.split("->")]
    return ".".join(part for part in parts if part and not part.startswith("("))


def _construct_message(exc: cs.ConstructError) -> str:
    text = str(exc)
    return text.split("\n", 1)[1] if text.startswith("Error in path") and "\n" in text else text
