"""JSON for the launch path, with the `json` module's own C parts and without its start-up.

`import json` loads `re` and compiles its patterns (and `json.encoder` more of them): together more
than a warm launch spends on its round trips. The launch reads one registry entry and, for a user,
sends one request to the service and reads its reply. `loads` is `json.loads` without hooks (the
same C scanner, `_json.make_scanner`, with the same settings; NaN and Infinity refused, as the
registry and the service refuse them) and `dumps` is `json.dumps(value, ensure_ascii=False,
separators=(",", ":"), allow_nan=False)` for the values a launch sends (None, bool, int, str,
lists and objects with str keys), with `_json.encode_basestring` for strings. Anything else is a
ValueError, as it is for `json`.
"""

from __future__ import annotations

import _json

__all__ = ["dumps", "loads"]

_WHITESPACE = " \t\n\r"
_MAX_DEPTH = 100


class _Settings:
    """What `_json.make_scanner` reads: plain JSON, as `json.loads` with no hooks."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int

    @staticmethod
    def parse_constant(name: str) -> float:
        raise ValueError(f"{name} is not allowed")


def loads(text: str) -> object:
    """The value of the JSON document `text`; ValueError when it is not one (RecursionError when
    it nests too deeply, as with `json.loads`)."""
    start = len(text) - len(text.lstrip(_WHITESPACE))
    scan = _json.make_scanner(_Settings())  # type: ignore[arg-type]  # it reads the settings' attributes
    try:
        value, end = scan(text, start)
    except StopIteration:
        raise ValueError("not a JSON document") from None
    if text[end:].strip(_WHITESPACE):
        raise ValueError("extra data after the JSON document")
    return value


def dumps(value: object) -> str:
    """`value` as compact JSON text."""
    parts: list[str] = []
    _encode(value, parts, 0)
    return "".join(parts)


def _encode(value: object, parts: list[str], depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise ValueError("the value nests too deeply")
    if isinstance(value, list | tuple):
        parts.append("[")
        for index, item in enumerate(value):
            parts.append("," if index else "")
            _encode(item, parts, depth + 1)
        parts.append("]")
    elif isinstance(value, dict):
        parts.append("{")
        for index, (key, item) in enumerate(value.items()):
            if not isinstance(key, str):
                raise ValueError(f"an object key must be a string, not {type(key).__name__}")
            parts.append(("," if index else "") + _json.encode_basestring(key) + ":")
            _encode(item, parts, depth + 1)
        parts.append("}")
    else:
        parts.append(_scalar(value))


def _scalar(value: object) -> str:
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if type(value) is int:
        return int.__repr__(value)
    if isinstance(value, str):
        return _json.encode_basestring(value)
    raise ValueError(f"{type(value).__name__} is not JSON")
