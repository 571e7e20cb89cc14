"""`pywsl.records.NamedTuple`: `typing.NamedTuple`'s class syntax at run time without `typing`.

Root's cold launch boots the VM itself (`cold_start.boot_vm`): the identity, the paths, the
`.wslconfig` and the VM's settings are named tuples, and `typing` was the largest module that boot
loaded only for them. Each behaviour is checked against `typing.NamedTuple`, and a fresh
interpreter checks that the boot's modules load no `typing`.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import typing
from pathlib import Path

import pytest

import pywsl
from pywsl import records

REPO = Path(pywsl.__file__).resolve().parent.parent


def _define(base: typing.Any) -> typing.Any:
    class Sample(base):  # type: ignore[misc]
        """A sample record."""

        name: str
        number: int = 3
        items: tuple[int, ...] = ()
        LIMIT = 10

        @property
        def doubled(self) -> int:
            return self.number * 2

        @classmethod
        def named(cls, name: str) -> typing.Any:
            return cls(name)

        def describe(self) -> str:
            return f"{self.name}:{self.number}"

    return Sample


Typed = _define(typing.NamedTuple)
Lean = _define(records.NamedTuple)


def test_the_lean_class_is_a_namedtuple_as_typing_makes_it() -> None:
    for made in (Typed, Lean):
        assert made.__bases__ == (tuple,)
        assert made._fields == ("name", "number", "items")
        assert made._field_defaults == {"number": 3, "items": ()}
        assert made.__doc__ == "A sample record."
        assert made.__module__ == __name__
        assert made.LIMIT == 10
    assert list(Lean.__annotations__) == list(Typed.__annotations__) == ["name", "number", "items"]


def test_instances_behave_the_same() -> None:
    typed, lean = Typed("a", 4), Lean("a", 4)
    assert tuple(typed) == tuple(lean) == ("a", 4, ())
    assert repr(lean) == repr(typed).replace("Typed", "Lean") == "Sample(name='a', number=4, items=())"
    assert lean == typed and hash(lean) == hash(typed)  # tuples
    assert (lean.doubled, lean.describe(), Lean.named("b")) == (8, "a:4", Lean("b"))
    assert lean._replace(number=5) == Lean("a", 5)
    assert lean._asdict() == typed._asdict()
    assert Lean._make(["c", 1, (2,)]) == Lean("c", 1, (2,))
    with pytest.raises(AttributeError):
        lean.name = "other"
    with pytest.raises(TypeError):
        Lean()


def test_pickles_by_module_and_name() -> None:
    assert pickle.loads(pickle.dumps(records_sample())) == records_sample()


_LeanBase: typing.Any = records.NamedTuple  # (the type checker sees typing's in the package)


class Pickled(_LeanBase):  # type: ignore[misc]
    label: str
    size: int = 0


def records_sample() -> Pickled:
    return Pickled("x", 2)


@pytest.mark.parametrize("base", [typing.NamedTuple, records.NamedTuple], ids=["typing", "lean"])
def test_the_same_mistakes_are_refused(base: typing.Any) -> None:
    with pytest.raises(TypeError):

        class Misordered(base):  # type: ignore[misc]
            first: int = 0
            second: int

    with pytest.raises(AttributeError):

        class Overwriting(base):  # type: ignore[misc]
            first: int

            def _asdict(self) -> dict[str, int]:
                return {}


def test_the_cold_boot_loads_no_typing() -> None:
    """What root's cold launch loads to boot the VM (`cold_start.boot_vm`) leaves `typing` out."""
    code = (
        "import sys\n"
        "import pywsl.cli.fast_launch, pywsl.api.session.quick_launch, pywsl.api.session.cold_start\n"
        "from pywsl.api.credentials import UserIdentity\n"
        "from pywsl.api.session import user_vm\n"
        "from pywsl.api.session.paths import user_paths\n"
        "from pywsl.api.session.wslconfig import load_wslconfig\n"
        "import pywsl.vm.core_vm, pywsl.vm.backends.namespaces, pywsl.vm.cgroups, pywsl.vm.idmap\n"
        "UserIdentity.current()\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={"PYTHONPATH": str(REPO), "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    ).stdout.split()
    assert "pywsl.vm.core_vm" in loaded
    assert sorted({"typing", "dataclasses", "pywsl.wire.enums", "construct"} & set(loaded)) == []
