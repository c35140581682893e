"""The package's import graph: no circles, and no core package importing Dagster wiring.

Every `import` and `from ... import` inside cti_assets counts, module-level or inside a function
(a lazy import is still a dependency), so a circle cannot hide behind one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "cti_assets"
# Wiring and commands: they may import anything; nothing in the core may import them.
WRAPPERS = ("cti_assets.defs", "cti_assets.cli", "cti_assets.definitions")
CORE = ("intake", "sources", "providers", "scoring", "writeback", "storage", "sandbox",
        "connector", "tables", "settings", "refresh", "state", "schemas", "lifeline",
        "pool_guard")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Modules of the package that `path` imports (a `from pkg import mod` names the module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("cti_assets"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith("cti_assets"):
                continue
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in known else node.module)
    return {name for name in found if name in known}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(path, set(known)) - {name} for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_import_circles():
    assert cycles(graph()) == []


def test_the_checker_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("core", CORE)
def test_core_packages_never_import_wiring_or_commands(core):
    upward = {
        (name, target)
        for name, targets in graph().items()
        if name == f"cti_assets.{core}" or name.startswith(f"cti_assets.{core}.")
        for target in targets
        if target.startswith(WRAPPERS)
    }
    assert upward == set()


@pytest.mark.parametrize("core", CORE)
def test_core_packages_are_free_of_dagster(core):
    for name, path in modules().items():
        if name == f"cti_assets.{core}" or name.startswith(f"cti_assets.{core}."):
            tree = ast.parse(path.read_text())
            names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
            names |= {n.module for n in ast.walk(tree)
                      if isinstance(n, ast.ImportFrom) and n.module}
            assert not {n for n in names if n.split(".")[0] == "dagster"}, name
