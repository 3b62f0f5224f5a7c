"""Packages only depend downward, and modules of one package import no cycle.

The layers, top to bottom: `edge_ee` → `converters` → `device_runners` →
`hardware_profiles`. Every `import` statement of every module of the four packages
(module level and inside functions alike) is read with `ast`; an import of a package
above the importing module's own is an upward edge and fails the test. Module-level
imports between modules of one package must form no cycle (function-level imports are
how a lazy dependency is written, and are not counted for cycles).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("edge_ee", "converters", "device_runners", "hardware_profiles")


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in LAYERS:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or \
        (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(module: str, path: Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, at module level) for every import in the file."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    out: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                out.extend((a.name, child.lineno, top) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    pkg = module.split(".") if is_pkg else module.split(".")[:-1]
                    pkg = pkg[: len(pkg) - (child.level - 1)]
                    base = ".".join([*pkg, base] if base else pkg)
                for a in child.names:
                    sub = f"{base}.{a.name}"
                    out.append((sub if sub in MODULES else base, child.lineno, top))
            elif isinstance(child, ast.If) and _is_type_checking(child):
                continue
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, False)
            else:
                visit(child, top)

    visit(tree, True)
    return out


def upward_edges() -> list[str]:
    bad = []
    for mod, path in MODULES.items():
        own = LAYERS.index(mod.split(".")[0])
        for target, line, _ in _imports(mod, path):
            top = target.split(".")[0]
            if top in LAYERS and LAYERS.index(top) < own:
                bad.append(f"{path.relative_to(ROOT)}:{line} {mod} imports {target} "
                           f"({LAYERS[own]} must not import {top})")
    return bad


def cycles() -> list[list[str]]:
    """Cycles of module-level imports between modules of the same top-level package."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for mod, path in MODULES.items():
        for target, _, top in _imports(mod, path):
            if top and target in MODULES and target != mod and \
                    target.split(".")[0] == mod.split(".")[0] and not mod.startswith(target + "."):
                graph[mod].add(target)
    found, state, stack = [], {}, []

    def dfs(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                found.append([*stack[stack.index(n):], n])
            elif n not in state:
                dfs(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            dfs(m)
    return found


def test_every_package_is_read() -> None:
    assert {m.split(".")[0] for m in MODULES} == set(LAYERS)
    assert len(MODULES) > 50


def test_no_upward_import() -> None:
    bad = upward_edges()
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_no_import_cycle_within_a_package() -> None:
    found = cycles()
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


@pytest.mark.parametrize("source, target", [("converters.x", "edge_ee.errors"),
                                            ("device_runners.x", "converters.bundle")])
def test_an_upward_import_is_caught(tmp_path: Path, source: str, target: str) -> None:
    """The walker sees an upward import written in a function body."""
    path = tmp_path / "m.py"
    path.write_text(f"def f():\n    from {target} import thing\n")
    imported = [t for t, _, _ in _imports(source, path)]
    assert imported and imported[0].split(".")[0] == target.split(".")[0]
    assert LAYERS.index(target.split(".")[0]) < LAYERS.index(source.split(".")[0])
