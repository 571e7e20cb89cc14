"""Messages in the shape of WSL's published test vectors (``examples.json`` of the wire spec).

An example describes a message as ``fields`` (every fixed field by its WSL name with its raw value:
nested dicts for ``Header`` / ``Common`` and other embedded structs, lists for arrays, numbers for
enums, booleans for bools) and ``payload`` (the variable part, keyed by the offset field that
locates it: ``strings``, ``string_lists``, ``multi_sz``, ``env_blocks``, ``blobs_hex`` and
``absent``; ``Buffer`` for a string stored directly in the flexible array; fields inside
``Common`` as ``Common.<field>``). ``dump`` turns message bytes into that shape and ``build`` turns
it back into bytes through the same declarations as ``pywsl.wire.schema``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pywsl.wire.codec import (
    Blob,
    BufferString,
    CString,
    EnvBlock,
    Message,
    MessageSchema,
    MultiSz,
    PayloadItem,
    StringList,
    schema,
    struct_layout,
)

__all__ = ["build", "dump"]

# payload category of each kind of item, in the order the categories appear in a dump
_CATEGORIES: tuple[tuple[str, tuple[type, ...]], ...] = (
    ("strings", (CString, BufferString)),
    ("string_lists", (StringList,)),
    ("multi_sz", (MultiSz,)),
    ("env_blocks", (EnvBlock,)),
    ("blobs_hex", (Blob,)),
)


def _category(item: PayloadItem) -> str:
    for category, kinds in _CATEGORIES:
        if isinstance(item, kinds):
            return category
    raise AssertionError(f"unknown payload item {item!r}")


def _items(message_schema: MessageSchema) -> list[tuple[str, PayloadItem]]:
    """``(path of the locating field, item)`` of every payload item, in struct field order."""
    levels: list[tuple[str, Any, tuple[PayloadItem, ...]]] = [
        ("", message_schema.struct, message_schema.payload)
    ]
    if message_schema.common is not None:
        common = message_schema.common
        levels.append(("Common.", common.struct, common.payload))
    found: list[tuple[int, str, PayloadItem]] = []
    for prefix, struct, payload in levels:
        order = {field.name: index for index, field in enumerate(struct_layout(struct))}
        base = 0 if not prefix else 1000
        for item in payload:
            found.append((base + order.get(item.field, len(order)), prefix + item.field, item))
    return [(path, item) for _, path, item in sorted(found, key=lambda entry: entry[0])]


def _raw(value: Any, logical: frozenset[str] = frozenset()) -> Any:
    """A parsed value as plain JSON-like data: enums as numbers, embedded structs as dicts."""
    if isinstance(value, Message):
        return {key: _raw(item) for key, item in value.items() if key not in logical}
    if isinstance(value, list):
        return [_raw(item) for item in value]
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)  # IntEnum / IntFlag members as plain numbers
    return value


def dump(struct: str, data: bytes) -> dict[str, Any]:
    """Decode ``data`` as ``struct`` into ``{"fields": ..., "payload": ...}`` (examples.json shape).

    Raises ``ProtocolError`` for a malformed message.
    """
    message_schema = schema(struct)
    message = message_schema.parse(data)
    top_logical = frozenset(item.name for item in message_schema.payload)
    fields: dict[str, Any] = _raw(message, top_logical)
    if message_schema.common is not None:
        common_logical = frozenset(item.name for item in message_schema.common.payload)
        fields["Common"] = _raw(message["Common"], common_logical)
    payload: dict[str, Any] = {}
    absent: list[str] = []
    for path, item in _items(message_schema):
        holder = message["Common"] if path.startswith("Common.") else message
        value = holder[item.name]
        if value is None:
            absent.append(path)
            continue
        category = _category(item)
        payload.setdefault(category, {})[path] = value.hex() if isinstance(item, Blob) else value
    ordered = {category: payload[category] for category, _ in _CATEGORIES if category in payload}
    if absent:
        ordered["absent"] = absent
    return {"fields": fields, "payload": ordered}


def build(struct: str, fields: Mapping[str, Any], payload: Mapping[str, Any]) -> bytes:
    """Encode a message from ``fields`` and ``payload`` in examples.json shape.

    Offset, count and size fields and ``Header.MessageSize`` in ``fields`` are ignored: the writer
    computes them from ``payload``.
    """
    message_schema = schema(struct)
    values = _without_computed(fields, message_schema.computed_fields, "")
    common: dict[str, Any] | None = None
    if message_schema.common is not None:
        common = dict(values.pop("Common", None) or {})
    by_path = dict(_items(message_schema))
    for category, entries in payload.items():
        for path, value in _payload_pairs(struct, category, entries):
            item = _payload_item(struct, by_path, category, path)
            logical = bytes.fromhex(value) if category == "blobs_hex" and value is not None else value
            if path.startswith("Common."):
                assert common is not None
                common[item.name] = logical
            else:
                values[item.name] = logical
    if common is not None:
        values["Common"] = common
    return message_schema.build(**values)


def _payload_pairs(struct: str, category: str, entries: Any) -> list[tuple[str, Any]]:
    """(path, value) of one payload category; the paths of ``absent`` have the value None."""
    if category == "absent":
        if isinstance(entries, str) or not isinstance(entries, list | tuple):
            raise ValueError(f"{struct}: payload 'absent' must be a list of field names")
        return [(path, None) for path in entries]
    if category in dict(_CATEGORIES):
        if not isinstance(entries, Mapping):
            raise ValueError(f"{struct}: payload {category!r} must map field names to values")
        return list(entries.items())
    raise ValueError(f"{struct}: unknown payload category {category!r}")


def _payload_item(struct: str, by_path: Mapping[str, PayloadItem], category: str, path: str) -> PayloadItem:
    """The payload item ``path`` locates; it must belong to ``category`` (any, for ``absent``)."""
    item = by_path.get(path)
    if item is None:
        raise ValueError(f"{struct}: {path!r} does not locate a payload value")
    if category != "absent" and _category(item) != category:
        raise ValueError(f"{struct}: {path!r} is not in payload category {category!r}")
    return item


def _without_computed(fields: Mapping[str, Any], computed: frozenset[str], prefix: str) -> dict[str, Any]:
    """``fields`` minus the ones the writer computes (offsets, counts, sizes, MessageSize)."""
    kept: dict[str, Any] = {}
    for key, value in fields.items():
        path = prefix + key
        if path in computed:
            continue
        if isinstance(value, Mapping) and key in ("Header", "Common"):
            kept[key] = _without_computed(value, computed, path + ".")
        else:
            kept[key] = value
    return kept
