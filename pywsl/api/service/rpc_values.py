"""The values of the service's format: Python arguments and results as JSON and back.

`rpc.py` documents them (its docstring is the one place the format is written down): a distribution
argument is `null`, `{"name": ...}` or `{"id": ...}`; GUIDs and paths are strings, enums their
values, and the dataclasses `UserSession` returns (`DistributionInfo`, `DistributionConfiguration`)
objects keyed by field name. `encode_value` writes a result; `decode_value` rebuilds one for the
type the client declares, refusing anything that does not fit that type.
"""

from __future__ import annotations

import enum
import math
import types
import typing
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import PurePath
from typing import Any


def decode_uuid(text: Any) -> uuid.UUID:
    if not isinstance(text, str):
        raise ValueError("expected a GUID string")
    try:
        return uuid.UUID(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a GUID") from None


def encode_distro(distro: str | uuid.UUID | None) -> dict[str, str] | None:
    if distro is None:
        return None
    if isinstance(distro, uuid.UUID):
        return {"id": str(distro)}
    if isinstance(distro, str):
        return {"name": distro}
    raise TypeError(f"a distribution is a name, a uuid.UUID or None, not {type(distro).__name__}")


def encode_value(value: Any) -> Any:
    """A result value as JSON: dataclasses by field, enums by value, GUIDs and paths as strings."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, enum.Enum):
        return encode_value(value.value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("non-finite number")
        return value
    if isinstance(value, uuid.UUID | PurePath):
        return str(value)
    if hasattr(type(value), "__dataclass_fields__"):  # a dataclass instance (no `dataclasses` import)
        import dataclasses

        return {field.name: encode_value(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(key): encode_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [encode_value(item) for item in value]
    raise TypeError(f"cannot encode a {type(value).__name__}")


def decode_value(annotation: Any, value: Any) -> Any:
    """The inverse of ``encode_value`` for a declared type; ValueError on a mismatch."""
    generic = _GENERIC_DECODERS.get(typing.get_origin(annotation))
    if generic is not None:
        return generic(annotation, value)
    if annotation is Any:
        return value
    if annotation is type(None):
        if value is not None:
            raise ValueError("expected null")
        return None
    if not isinstance(annotation, type):
        raise ValueError(f"cannot decode into {annotation!r}")
    return _decode_class(annotation, value)


def _decode_union(annotation: Any, value: Any) -> Any:
    """The first member of the union that takes the value (None for an optional's null)."""
    arguments = typing.get_args(annotation)
    if value is None and type(None) in arguments:
        return None
    errors = []
    for argument in arguments:
        if argument is type(None):
            continue
        try:
            return decode_value(argument, value)
        except ValueError as error:
            errors.append(str(error))
    raise ValueError("; ".join(errors) or "no matching type")


def _decode_sequence(annotation: Any, value: Any) -> Any:
    """A JSON list as ``list[T]``, ``Sequence[T]``, ``tuple[T, ...]`` or a fixed-length tuple."""
    origin = typing.get_origin(annotation)
    if not isinstance(value, list):
        raise ValueError(f"expected a list, got {type(value).__name__}")
    arguments = typing.get_args(annotation)
    if origin is tuple and arguments and arguments[-1] is not Ellipsis:
        if len(arguments) != len(value):
            raise ValueError(f"expected {len(arguments)} items")
        return tuple(decode_value(a, v) for a, v in zip(arguments, value, strict=True))
    inner = arguments[0] if arguments else Any
    items = [decode_value(inner, item) for item in value]
    return tuple(items) if origin is tuple else items


def _decode_mapping(annotation: Any, value: Any) -> Any:
    """A JSON object as ``dict[K, V]`` or ``Mapping[K, V]``."""
    if not isinstance(value, dict):
        raise ValueError(f"expected an object, got {type(value).__name__}")
    key_type, item_type = typing.get_args(annotation) or (Any, Any)
    return {decode_value(key_type, k): decode_value(item_type, v) for k, v in value.items()}


# The decoder of each generic type's origin (``typing.get_origin`` of the annotation).
_GENERIC_DECODERS: dict[Any, Callable[[Any, Any], Any]] = {
    typing.Union: _decode_union,
    types.UnionType: _decode_union,
    list: _decode_sequence,
    Sequence: _decode_sequence,
    tuple: _decode_sequence,
    dict: _decode_mapping,
    Mapping: _decode_mapping,
}


def _decode_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("expected a boolean")
    return value


def _decode_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("expected an integer")
    return value


def _decode_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("expected a number")
    return float(value)


def _decode_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value


# The decoder of each plain class that is taken as it is (no subclasses).
_SCALAR_DECODERS: dict[type, Callable[[Any], Any]] = {
    bool: _decode_bool,
    int: _decode_int,
    float: _decode_float,
    str: _decode_str,
    uuid.UUID: decode_uuid,
}


def _decode_class(cls: type, value: Any) -> Any:
    scalar = _SCALAR_DECODERS.get(cls)
    if scalar is not None:
        return scalar(value)
    if hasattr(cls, "__dataclass_fields__"):  # a dataclass (`dataclasses` is loaded only then)
        return decode_dataclass(cls, value)
    if issubclass(cls, enum.Enum):
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a {cls.__name__}") from None
    if issubclass(cls, PurePath):
        if not isinstance(value, str):
            raise ValueError("expected a path string")
        return cls(value)
    raise ValueError(f"cannot decode into {cls.__name__}")


def decode_dataclass(cls: type, value: Any) -> Any:
    """Build dataclass ``cls`` from its JSON object (unknown keys are ignored)."""
    import dataclasses

    if not isinstance(value, dict):
        raise ValueError(f"expected a {cls.__name__} object")
    hints = typing.get_type_hints(cls)
    arguments: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if not field.init:
            continue
        if field.name not in value:
            has_default = (
                field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING
            )
            if has_default:
                continue
            raise ValueError(f"{cls.__name__}.{field.name} is missing")
        try:
            arguments[field.name] = decode_value(hints.get(field.name, Any), value[field.name])
        except ValueError as error:
            raise ValueError(f"{cls.__name__}.{field.name}: {error}") from None
    return cls(**arguments)
