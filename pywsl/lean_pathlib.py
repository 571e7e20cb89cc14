"""`pathlib`, loaded without the modules it needs only when a method runs (a cold launch's boot).

`pathlib` imports `fnmatch` and `re` for `glob` and `match`, and `urllib.parse` for `as_uri`,
at the top, and they import `enum`, `ipaddress` and more: over half of the time `import pathlib`
takes, about 2.5 ms of a cold launch, for methods its boot never calls. `import_pathlib` imports
`pathlib` while `sys.modules` holds stand-ins for those three (where they are not loaded yet),
then removes the stand-ins: a later `import re` anywhere loads the real module as always, and
`pathlib`'s own references load it on their first use (`_StandIn.__getattr__`), so every method
of `pathlib` works as before. A leaf module: `sys` only.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType

__all__ = ["DEFERRED", "import_pathlib"]

DEFERRED = ("fnmatch", "re", "urllib.parse")  # what `pathlib` imports for methods alone


class _StandIn:
    """A module `pathlib` imports at its top and uses only in methods: the real one is loaded on
    the first attribute asked for (``re.compile``, ``fnmatch.translate``)."""

    __spec__ = None  # what the import system asks a module in `sys.modules` first

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> object:
        if attribute.startswith("__") and attribute.endswith("__"):
            raise AttributeError(attribute)  # `__path__` and the like: the import system's questions
        if sys.modules.get(self._name) is self:  # type: ignore[comparison-overlap]  # while `pathlib` loads
            del sys.modules[self._name]
        __import__(self._name)
        return getattr(sys.modules[self._name], attribute)

    def quote_from_bytes(self, *args: object, **kwargs: object) -> object:
        """`urllib.parse.quote_from_bytes`, which `pathlib` imports by name (for `as_uri`)."""
        return self.__getattr__("quote_from_bytes")(*args, **kwargs)  # type: ignore[operator]


def import_pathlib() -> ModuleType:
    """`pathlib`, imported now without loading `DEFERRED` (the modules already loaded stay)."""
    if "pathlib" in sys.modules:
        return sys.modules["pathlib"]
    stand_ins = {name: _StandIn(name) for name in DEFERRED if name not in sys.modules}
    sys.modules.update(stand_ins)  # type: ignore[arg-type]
    try:
        import pathlib
    finally:
        for name, stand_in in stand_ins.items():
            if sys.modules.get(name) is stand_in:  # type: ignore[comparison-overlap]
                del sys.modules[name]
    return pathlib
