"""``dataclass`` and ``field`` for small records, without loading ``dataclasses``; ``NamedTuple``
without loading ``typing``.

A leaf module (it imports nothing of pywsl), for the guest and for the host's cold launch.
Every guest module is loaded when the VM starts (``mini_init``), and a root launch that finds no
VM boots one (``VmConfig``, ``VmCgroup``); ``dataclasses.dataclass`` compiles each class's methods
from source: about half a millisecond a class, besides loading ``dataclasses`` (with ``inspect``,
``ast`` and ``dis``). Those modules import these two instead, as::

    TYPE_CHECKING = False
    if TYPE_CHECKING:
        from dataclasses import dataclass, field
    else:
        from pywsl.records import dataclass, field

so that the type checker sees real dataclasses, while at run time the class gets the same
behaviour from plain functions: ``__init__`` (positional or keyword arguments, defaults,
``default_factory``, then the class's ``__post_init__`` when it has one), ``__repr__``, ``__eq__``,
``__hash__`` (a frozen class hashes its fields, another one is unhashable), ``__match_args__``,
and for ``frozen=True`` a ``__setattr__`` and ``__delattr__`` that refuse
(:class:`FrozenInstanceError`, an ``AttributeError``). A method the class defines itself is kept,
as ``dataclasses`` does. :func:`replace` is ``dataclasses.replace`` for them.

``dataclasses.fields``, ``replace``, ``asdict`` and ``is_dataclass`` work on them too: the first
time something asks a class for its ``__dataclass_fields__`` (or ``__dataclass_params__``), a real
dataclass with the same fields is made and its descriptions are handed over (``dataclasses`` is
only loaded then, by that caller).

Only what these records use is supported: the ``frozen`` option, ``field(default=...)`` or
``field(default_factory=...)``, and ``__post_init__`` without ``InitVar``s; no ``ClassVar`` and no
inheritance between records.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ["FrozenInstanceError", "NamedTuple", "dataclass", "field", "replace"]

_MISSING = object()


class FrozenInstanceError(AttributeError):
    """An assignment to a field of a frozen record (``dataclasses.FrozenInstanceError``'s role)."""


class _Field:
    """What ``field()`` returns: a default value or a default factory."""

    __slots__ = ("default", "default_factory")

    def __init__(self, default: object, default_factory: object) -> None:
        self.default = default
        self.default_factory = default_factory


def field(*, default: object = _MISSING, default_factory: object = _MISSING) -> object:
    """``dataclasses.field`` with ``default`` or ``default_factory`` only."""
    if default is not _MISSING and default_factory is not _MISSING:
        raise ValueError("cannot specify both default and default_factory")
    return _Field(default, default_factory)


class _Spec:
    """A record class's fields: names in order, defaults, factories."""

    __slots__ = ("defaults", "factories", "frozen", "names")

    def __init__(self, names: tuple[str, ...], frozen: bool) -> None:
        self.names = names
        self.frozen = frozen
        self.defaults: dict[str, object] = {}
        self.factories: dict[str, Callable[[], object]] = {}


def _plural(names: list[str]) -> str:
    """Names as CPython's argument errors list them: 'a', 'a' and 'b', 'a', 'b', and 'c'."""
    quoted = [repr(name) for name in names]
    if len(quoted) == 1:
        return quoted[0]
    if len(quoted) == 2:
        return f"{quoted[0]} and {quoted[1]}"
    return ", ".join(quoted[:-1]) + f", and {quoted[-1]}"


def _takes(spec: _Spec) -> str:
    """How many positional arguments ``__init__`` takes, as CPython words it (self included)."""
    most = len(spec.names) + 1
    required = most - len(spec.defaults) - len(spec.factories)
    if required < most:
        return f"from {required} to {most} positional arguments"
    return f"{most} positional argument{'s' if most > 1 else ''}"


def _bind(
    qualname: str, spec: _Spec, args: tuple[object, ...], kwargs: dict[str, object]
) -> dict[str, object]:
    """Each field's value for ``__init__(*args, **kwargs)``; TypeError as Python's own calls."""
    names = spec.names
    if len(args) > len(names):
        raise TypeError(f"{qualname}.__init__() takes {_takes(spec)} but {len(args) + 1} were given")
    values = dict(zip(names, args, strict=False))
    for name, value in kwargs.items():
        if name not in names:
            raise TypeError(f"{qualname}.__init__() got an unexpected keyword argument {name!r}")
        if name in values:
            raise TypeError(f"{qualname}.__init__() got multiple values for argument {name!r}")
        values[name] = value
    missing: list[str] = []
    for name in names:
        if name in values:
            continue
        if name in spec.defaults:
            values[name] = spec.defaults[name]
        elif name in spec.factories:
            values[name] = spec.factories[name]()
        else:
            missing.append(name)
    if missing:
        count = f"{len(missing)} required positional argument{'s' if len(missing) > 1 else ''}"
        raise TypeError(f"{qualname}.__init__() missing {count}: {_plural(missing)}")
    return values


def _methods(cls: type, spec: _Spec) -> dict[str, object]:
    """The methods ``dataclasses`` would give ``cls``, over its fields ``spec``."""
    qualname, names, frozen = cls.__qualname__, spec.names, spec.frozen

    post_init = vars(cls).get("__post_init__")

    def __init__(self: object, *args: object, **kwargs: object) -> None:
        values = _bind(qualname, spec, args, kwargs)
        for name in names:
            if frozen:
                object.__setattr__(self, name, values[name])
            else:
                setattr(self, name, values[name])
        if post_init is not None:
            post_init(self)

    def __repr__(self: object) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in names)
        return f"{self.__class__.__qualname__}({shown})"

    def __eq__(self: object, other: object) -> bool:
        if other.__class__ is self.__class__:
            mine = tuple(getattr(self, name) for name in names)
            return mine == tuple(getattr(other, name) for name in names)
        return NotImplemented

    methods: dict[str, object] = {"__init__": __init__, "__repr__": __repr__, "__eq__": __eq__}
    if frozen:
        methods.update(_frozen_methods(cls, names))
    for name, method in methods.items():
        method.__qualname__ = f"{qualname}.{name}"  # type: ignore[attr-defined]
    return methods


def _frozen_methods(cls: type, names: tuple[str, ...]) -> dict[str, object]:
    """A frozen dataclass's ``__hash__``, ``__setattr__`` and ``__delattr__``."""

    def __hash__(self: object) -> int:
        return hash(tuple(getattr(self, name) for name in names))

    def __setattr__(self: object, name: str, value: object) -> None:
        if type(self) is cls or name in names:
            raise FrozenInstanceError(f"cannot assign to field {name!r}")
        object.__setattr__(self, name, value)

    def __delattr__(self: object, name: str) -> None:
        if type(self) is cls or name in names:
            raise FrozenInstanceError(f"cannot delete field {name!r}")
        object.__delattr__(self, name)

    return {"__hash__": __hash__, "__setattr__": __setattr__, "__delattr__": __delattr__}


class _DataclassDescription:
    """``__dataclass_fields__`` / ``__dataclass_params__``: a real dataclass's, made when first asked."""

    def __init__(self, attribute: str, spec: _Spec) -> None:
        self.attribute = attribute
        self.spec = spec

    def __get__(self, instance: object, owner: type) -> object:
        import dataclasses  # only for introspection (fields, replace, asdict), never at start

        spec = self.spec
        namespace: dict[str, object] = {"__annotations__": dict.fromkeys(spec.names, "object")}
        for name, value in spec.defaults.items():
            namespace[name] = dataclasses.field(default=value)
        for name, factory in spec.factories.items():
            namespace[name] = dataclasses.field(default_factory=factory)
        shadow: type = dataclasses.dataclass(type(owner.__name__, (), namespace), frozen=spec.frozen)
        annotations = vars(owner).get("__annotations__", {})
        descriptions = vars(shadow)["__dataclass_fields__"]
        for name, description in descriptions.items():
            description.type = annotations.get(name, "object")
        for name in ("__dataclass_fields__", "__dataclass_params__"):
            setattr(owner, name, vars(shadow)[name])
        return vars(owner)[self.attribute]


def _fields_of(cls: type, frozen: bool) -> _Spec:
    """The fields (annotations, in order) and their defaults; a ``field()`` default becomes the class
    attribute's value, a factory's class attribute goes, as with ``dataclasses``."""
    namespace = vars(cls)
    spec = _Spec(tuple(namespace.get("__annotations__", {})), frozen)
    seen_default = False
    for name in spec.names:
        value = namespace.get(name, _MISSING)
        if isinstance(value, _Field):
            delattr(cls, name)
            if callable(value.default_factory):
                spec.factories[name] = value.default_factory
            elif value.default is not _MISSING:
                spec.defaults[name] = value.default
                setattr(cls, name, value.default)
        elif value is not _MISSING:
            spec.defaults[name] = value
        if name in spec.defaults or name in spec.factories:
            seen_default = True
        elif seen_default:
            raise TypeError(f"non-default argument {name!r} follows default argument")
    return spec


def _process(cls: type, frozen: bool) -> type:
    spec = _fields_of(cls, frozen)
    namespace = vars(cls)
    methods = _methods(cls, spec)
    # A method the class defines itself stays; __hash__ as dataclasses decides it (a class that
    # defines __eq__ has __hash__ None in its namespace, which does not count as its own).
    for name in ("__init__", "__repr__", "__eq__"):
        if name in namespace:
            del methods[name]
    if namespace.get("__hash__") is None:
        methods.setdefault("__hash__", None)
    else:
        methods.pop("__hash__", None)
    if "__match_args__" not in namespace:
        methods["__match_args__"] = spec.names
    methods["__record__"] = spec
    methods["__dataclass_fields__"] = _DataclassDescription("__dataclass_fields__", spec)
    methods["__dataclass_params__"] = _DataclassDescription("__dataclass_params__", spec)
    for name, value in methods.items():
        setattr(cls, name, value)
    return cls


def dataclass(cls: type | None = None, /, *, frozen: bool = False) -> type | Callable[[type], type]:
    """``@dataclass`` or ``@dataclass(frozen=True)``: see the module's description."""
    if cls is None:
        return lambda cls: _process(cls, frozen)
    return _process(cls, frozen)


def replace(record: object, /, **changes: object) -> object:
    """``dataclasses.replace`` for a record: a new one, with ``changes`` over its fields' values."""
    spec: _Spec | None = getattr(type(record), "__record__", None)
    if spec is None:
        raise TypeError("replace() should be called on dataclass instances")
    values = {name: getattr(record, name) for name in spec.names if name not in changes}
    return type(record)(**values, **changes)


# -- NamedTuple ---------------------------------------------------------------------------------

# What a NamedTuple class body may not set, and what it sets that is not copied (as in `typing`).
_PROHIBITED = frozenset(
    {
        "__new__",
        "__init__",
        "__slots__",
        "__getnewargs__",
        "_fields",
        "_field_defaults",
        "_make",
        "_replace",
        "_asdict",
    }
)
_SPECIAL = frozenset({"__module__", "__name__", "__annotations__"})


class _NamedTupleMaker(type):
    """Makes each class written ``class Name(NamedTuple): field: type = default ...`` what
    ``typing.NamedTuple`` makes of it: a ``collections.namedtuple`` class with those fields and
    defaults (a field without a default after one with is a TypeError), the annotations as
    written, and the body's methods, properties and class attributes."""

    def __new__(cls, name: str, bases: tuple[type, ...], namespace: dict[str, Any]) -> Any:
        if not bases:  # `NamedTuple` itself
            return super().__new__(cls, name, bases, namespace)
        from collections import namedtuple

        make: Any = namedtuple  # (called with names known at run time only)
        if bases != (NamedTuple,):
            raise TypeError("can only inherit from a NamedTuple type")
        annotations: dict[str, Any] = namespace.get("__annotations__", {})
        defaults: list[str] = []
        for field_name in annotations:
            if field_name in namespace:
                defaults.append(field_name)
            elif defaults:
                raise TypeError(f"Non-default namedtuple field {field_name} cannot follow default field")
        made = make(
            name,
            list(annotations),
            defaults=[namespace[key] for key in defaults],
            module=namespace["__module__"],
        )
        made.__annotations__ = dict(annotations)
        for key, value in namespace.items():
            if key in _PROHIBITED:
                raise AttributeError(f"Cannot overwrite NamedTuple attribute {key}")
            if key not in _SPECIAL and key not in made._fields:
                setattr(made, key, value)
        return made


class NamedTuple(metaclass=_NamedTupleMaker):
    """``typing.NamedTuple``'s class syntax at run time, without loading ``typing`` (what a cold
    launch's boot reads); modules show the type checker ``typing.NamedTuple`` instead, as with
    :func:`dataclass`."""
