"""The layering contract: cli → api → vm → wire, guest → wire; nothing imports upward. Top-level
modules are leaves every layer may import (``pywsl.coverage_startup``): they import no pywsl."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pywsl"

# Which pywsl sub-packages each layer may import (itself included).
ALLOWED: dict[str, set[str]] = {
    "wire": {"wire"},
    "guest": {"guest", "wire"},
    "vm": {"vm", "wire"},
    "api": {"api", "vm", "wire"},
    "cli": {"cli", "api", "vm", "wire"},
}

# Top-level modules every layer may import; they import nothing of pywsl themselves.
LEAF_MODULES = {"cgroup_tables", "coverage_startup", "lean_context", "lean_pathlib", "records", "sha256"}


_MODULE_NAME = re.compile(r"pywsl(\.[A-Za-z_]\w*)+")


def _spawned_modules(tree: ast.AST) -> set[int]:
    """ids of the string constants that follow "-m" in a list or tuple: modules run as a new process
    (the VM's host side starts ``python -m pywsl.guest.mini_init``), not imported."""
    spawned: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.List, ast.Tuple)):
            for before, item in zip(node.elts, node.elts[1:], strict=False):
                if isinstance(before, ast.Constant) and before.value == "-m":
                    spawned.add(id(item))
    return spawned


def _lazy_names(tree: ast.AST) -> list[tuple[str, int]]:
    """Module names in strings: ``importlib.import_module("pywsl.api.x")``, tables of lazy exports,
    ``f"pywsl.cli.{module}"``; every string that is a dotted ``pywsl.…`` name counts."""
    spawned = _spawned_modules(tree)
    names: list[tuple[str, int]] = []
    formatted: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr) and node.values:
            first = node.values[0]
            formatted.update(id(value) for value in node.values)
            if (
                isinstance(first, ast.Constant)
                and isinstance(first.value, str)
                and _MODULE_NAME.match(first.value.rstrip("."))
            ):
                names.append((first.value.rstrip("."), node.lineno))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in formatted
            and id(node) not in spawned
            and _MODULE_NAME.fullmatch(node.value)
        ):
            names.append((node.value, node.lineno))
    return names


def _typing_only(tree: ast.AST) -> set[int]:
    """ids of the nodes inside ``if TYPE_CHECKING:`` blocks: names for the type checker, not loads."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for statement in node.body:
                inside.update(id(child) for child in ast.walk(statement))
    return inside


def _imported_names(
    path: Path, root: Path = PACKAGE.parent, *, typing_too: bool = True
) -> set[tuple[str, int]]:
    """Every dotted ``pywsl…`` name a module imports, with the line: import statements (relative
    ones resolved against the module's package), and module names in strings (lazy imports)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skipped = set() if typing_too else _typing_only(tree)
    # For a package's __init__.py the last part is "__init__": level 1 is then the package itself.
    module_parts = path.relative_to(root).with_suffix("").parts
    named: list[tuple[str, int]] = _lazy_names(tree)
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            named += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(module_parts[: len(module_parts) - node.level])
                target = ".".join(base + ([node.module] if node.module else []))
                named += [(f"{target}.{alias.name}", node.lineno) for alias in node.names]
            elif node.module:
                named += [(f"{node.module}.{alias.name}", node.lineno) for alias in node.names]
    return {(name, line) for name, line in named if name.split(".")[0] == "pywsl"}


def _imported_layers(path: Path, root: Path = PACKAGE.parent) -> set[tuple[str, int]]:
    """Every `pywsl.<layer>` (or top-level module other than a leaf) a module imports, with the line."""
    found: set[tuple[str, int]] = set()
    for name, line in _imported_names(path, root):
        parts = name.split(".")
        if len(parts) == 1:
            found.add(("pywsl", line))
        elif parts[1] in ALLOWED or (
            parts[1] not in LEAF_MODULES and (root / "pywsl" / f"{parts[1]}.py").is_file()
        ):
            found.add((parts[1], line))
    return found


def _modules(layer: str) -> list[Path]:
    return sorted((PACKAGE / layer).rglob("*.py"))


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_only_downward(layer: str) -> None:
    violations = []
    for path in _modules(layer):
        for imported, line in _imported_layers(path):
            if imported not in ALLOWED[layer]:
                violations.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports pywsl.{imported}")
    assert not violations, "\n".join(violations)


def test_leaf_modules_import_nothing_of_pywsl() -> None:
    """A leaf imports nothing of pywsl's layers: at most another leaf (`cgroup_tables` its digest)."""
    assert {path.stem for path in PACKAGE.glob("*.py")} == {"__init__", *LEAF_MODULES}
    leaves = {f"pywsl.{leaf}" for leaf in LEAF_MODULES}
    for leaf in sorted(LEAF_MODULES):
        imported = {".".join(name.split(".")[:2]) for name, _line in _imported_names(PACKAGE / f"{leaf}.py")}
        assert imported <= leaves - {f"pywsl.{leaf}"}, leaf
    assert {name for name, _line in _imported_names(PACKAGE / "sha256.py")} == set()  # the leaves' leaf


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    """The contract test would notice an upward import (guards against a checker that sees nothing)."""
    probe = tmp_path / "pywsl" / "wire" / "probe.py"
    probe.parent.mkdir(parents=True)
    (tmp_path / "pywsl" / "other_module.py").write_text("")
    probe.write_text(
        "from pywsl.api import session\nfrom ..cli import main\nfrom . import codec\n"
        "from pywsl import coverage_startup\nimport pywsl.other_module\n"
    )
    assert {name for name, _ in _imported_layers(probe, tmp_path)} == {"api", "cli", "wire", "other_module"}


def test_relative_imports_in_a_package_init_resolve_to_the_package(tmp_path: Path) -> None:
    init = tmp_path / "pywsl" / "wire" / "__init__.py"
    init.parent.mkdir(parents=True)
    init.write_text("from . import codec\nfrom .. import api\nfrom ..guest import relay\n")
    assert {name for name, _ in _imported_layers(init, tmp_path)} == {"wire", "api", "guest"}


def test_lazy_imports_by_name_are_seen(tmp_path: Path) -> None:
    probe = tmp_path / "pywsl" / "vm" / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text(
        "import importlib\n"
        "importlib.import_module('pywsl.api.session.user_session')\n"
        "TABLE = {'x': 'pywsl.cli.main'}\n"
        "def load(name):\n    return importlib.import_module(f'pywsl.guest.{name}')\n"
        "ARGV = ['python', '-m', 'pywsl.guest.mini_init']\n"  # a new process: not an import
        "LOGGER = 'pywsl.vm-monitor'\n"
    )
    assert {name for name, _ in _imported_layers(probe, tmp_path)} == {"api", "cli", "guest"}


def test_the_top_level_package_loads_only_the_api() -> None:
    assert {name for name, _ in _imported_layers(PACKAGE / "__init__.py")} == {"api"}


def test_every_layer_exists() -> None:
    for layer in ALLOWED:
        assert (PACKAGE / layer / "__init__.py").is_file()


# Which api sub-packages each may import (itself and the api's foundations — errors, cancellation,
# credentials, lean_json — always). `connect` and the package's own `__init__` are entry points: free.
API_FOUNDATIONS = {"errors", "cancellation", "credentials", "lean_json"}
API_ALLOWED: dict[str, set[str]] = {
    "files": set(),
    "process": set(),
    "install": {"files", "session"},
    "session": {"files", "process"},
    "service": {"files", "install", "process", "session"},
    "com": {"process", "session"},
}
API = PACKAGE / "api"


def _api_part(name: str) -> str | None:
    """The api sub-package or foundation module a dotted name lies in (None outside the api)."""
    parts = name.split(".")
    if parts[:2] != ["pywsl", "api"] or len(parts) < 3:
        return None
    return parts[2]


def test_every_api_module_lies_in_a_sub_package_or_is_a_foundation() -> None:
    top = {path.stem for path in API.glob("*.py")} - {"__init__", "connect"}
    assert top == API_FOUNDATIONS
    assert {path.name for path in API.iterdir() if (path / "__init__.py").is_file()} == set(API_ALLOWED)


@pytest.mark.parametrize("package", sorted(API_ALLOWED))
def test_api_sub_packages_import_only_what_their_job_needs(package: str) -> None:
    allowed = API_ALLOWED[package] | API_FOUNDATIONS | {package}
    violations = []
    for path in sorted((API / package).rglob("*.py")):
        for name, line in _imported_names(path, typing_too=False):
            part = _api_part(name)
            if part is not None and part not in allowed:
                violations.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}")
    assert not violations, "\n".join(violations)


def test_api_foundations_import_no_sub_package() -> None:
    violations = []
    for stem in sorted(API_FOUNDATIONS):
        path = API / f"{stem}.py"
        for name, line in _imported_names(path, typing_too=False):
            part = _api_part(name)
            if part is not None and part not in API_FOUNDATIONS:
                violations.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}")
    assert not violations, "\n".join(violations)


def test_the_sub_package_checker_sees_a_violation(tmp_path: Path) -> None:
    probe = tmp_path / "pywsl" / "api" / "install" / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text(
        "from typing import TYPE_CHECKING\n"
        "from ..service import rpc\n"
        "if TYPE_CHECKING:\n    from pywsl.api.process.terminal import Terminal\n"
    )
    loads = {_api_part(name) for name, _ in _imported_names(probe, tmp_path, typing_too=False)}
    assert loads == {"service"}
    everything = {_api_part(name) for name, _ in _imported_names(probe, tmp_path)}
    assert everything == {"service", "process"}
