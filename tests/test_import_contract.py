"""The layering contract: cli → api → vm → wire, guest → wire; nothing imports upward."""

from __future__ import annotations

import ast
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


def _imported_layers(path: Path, root: Path = PACKAGE.parent) -> set[tuple[str, int]]:
    """Every `pywsl.<layer>` a module imports, with the line, relative imports resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    module_parts = path.relative_to(root).with_suffix("").parts
    found: set[tuple[str, int]] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(module_parts[: len(module_parts) - node.level])
                if path.name == "__init__.py":
                    base = list(module_parts[: len(module_parts) - node.level + 1])
                target = ".".join(base + ([node.module] if node.module else []))
                names = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
            elif node.module:
                names = [node.module]
                if node.module == "pywsl":
                    names = [f"pywsl.{alias.name}" for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "pywsl" and len(parts) > 1 and parts[1] in ALLOWED:
                found.add((parts[1], node.lineno))
            elif parts[0] == "pywsl" and len(parts) == 1:
                found.add(("pywsl", node.lineno))
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


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    """The contract test would notice an upward import (guards against a checker that sees nothing)."""
    probe = tmp_path / "pywsl" / "wire" / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text("from pywsl.api import session\nfrom ..cli import main\nfrom . import codec\n")
    assert {name for name, _ in _imported_layers(probe, tmp_path)} == {"api", "cli", "wire"}


def test_every_layer_exists() -> None:
    for layer in ALLOWED:
        assert (PACKAGE / layer / "__init__.py").is_file()
