"""`pywsl.api.lean_json` is the `json` module for the values a launch reads and sends."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pywsl
from pywsl.api.lean_json import dumps, loads

REPO = Path(pywsl.__file__).resolve().parent.parent

_TEXT = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=20)
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | _TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_TEXT, children, max_size=4),
    max_leaves=25,
)


def _json_dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(_VALUES)
def test_dumps_writes_what_json_writes_and_loads_reads_it_back(value: object) -> None:
    assert dumps(value) == _json_dumps(value)
    assert loads(dumps(value)) == value
    assert loads(" \n" + json.dumps(value, indent=2) + "\t\r\n") == value


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet='{}[]",:0123456789.-+eEtrufalsn \t\n\\/abN\u00e9', max_size=30))
def test_loads_accepts_and_refuses_what_json_does(text: str) -> None:
    try:
        expected = json.loads(text, parse_constant=_refuse)
    except (ValueError, RecursionError):
        with pytest.raises(ValueError):
            loads(text)
        return
    assert _same(loads(text), expected)


def _refuse(name: str) -> float:
    raise ValueError(name)


def _same(left: object, right: object) -> bool:
    """Equality that also holds for NaN-free floats parsed the same way."""
    if isinstance(left, float) and isinstance(right, float):
        return left == right or (math.isnan(left) and math.isnan(right))
    return left == right and type(left) is type(right)


@pytest.mark.parametrize(
    "text", ["NaN", "[Infinity]", '{"a": -Infinity}', "", "  ", "[1,]", "{} x", "[1] [2]"]
)
def test_loads_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        loads(text)


def test_loads_refuses_a_document_that_nests_too_deeply() -> None:
    with pytest.raises((ValueError, RecursionError)):
        loads("[" * 100_000 + "]" * 100_000)


@pytest.mark.parametrize("value", [1.5, float("nan"), {1: "a"}, {"a": b"x"}, object(), {"a": {1, 2}}])
def test_dumps_refuses_what_a_launch_never_sends(value: object) -> None:
    with pytest.raises(ValueError):
        dumps(value)


def test_dumps_refuses_a_value_that_nests_too_deeply() -> None:
    value: list[object] = []
    for _ in range(200):
        value = [value]
    with pytest.raises(ValueError):
        dumps(value)


def test_strings_keep_what_json_escapes_and_what_it_does_not() -> None:
    text = 'quote " backslash \\ newline \n tab \t nul \0 e\u0301 \u2028 \U0001f600'
    assert dumps({"k": text}) == _json_dumps({"k": text})
    assert loads(dumps({"k": text})) == {"k": text}


def test_it_loads_neither_json_nor_re() -> None:
    script = (
        "import sys; import pywsl.api.lean_json; print(sorted(m for m in sys.modules if m in ('json', 're')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={"PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "[]"
