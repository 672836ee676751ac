"""The import structure of medexport: no import cycles, and every submodule imports.

A cycle works only as long as no one imports its modules in another order or moves an import to
module level, so it is a defect even where it runs today. The graph is read with ``ast`` from the
source: module-level and function-level imports are edges, ``if TYPE_CHECKING:`` imports are not
(they never run). ``from a.b import c`` names ``a.b.c`` if that is a module, else the package
``a.b``; importing a submodule is not an edge to its parent package's ``__init__``.
"""
from __future__ import annotations

import ast
import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path

import pytest

import medexport

SRC = Path(medexport.__file__).resolve().parent
ROOT = "medexport"


@dataclass(frozen=True)
class Edge:
    """``source`` imports ``target`` at ``file:line``."""

    source: str
    target: str
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.source} -> {self.target}  ({self.file}:{self.line})"


def module_files(src: Path = SRC, root: str = ROOT) -> dict[str, Path]:
    """Every module under ``src`` by dotted name; a package is named by its ``__init__.py``. Files in a folder that
    is not a package (package data such as ``packaging/device/run.py``, copied into edge packages) are not modules."""
    files = {}
    for path in sorted(src.rglob("*.py")):
        if any(not (src / folder / "__init__.py").exists() for folder in path.relative_to(src).parents[:-1]):
            continue
        parts = path.relative_to(src).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        files[".".join((root, *parts))] = path
    return files


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_imports(tree: ast.AST):
    """Import statements that can run: everything but the bodies of ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, modules: set[str]) -> list[str]:
    """The medexport modules one import statement names (see the module docstring for the rule)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name in modules]
    if node.level:
        package = module if is_package else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = ".".join(p for p in (package, node.module) if p)
    else:
        base = node.module or ""
    targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
    return [t for t in dict.fromkeys(targets) if t in modules]


def import_graph(src: Path = SRC, root: str = ROOT) -> list[Edge]:
    """Every runtime import between two modules under ``src``, with the file and line it is written on."""
    files = module_files(src, root)
    edges = []
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        shown = str(path.relative_to(src.parent))
        for node in _runtime_imports(tree):
            for target in _targets(node, module, path.name == "__init__.py", set(files)):
                edges.append(Edge(module, target, shown, node.lineno))
    return sorted(edges, key=lambda e: (e.source, e.line, e.target))


def cycles(edges: list[Edge]) -> list[list[Edge]]:
    """The edges inside each strongly connected component of more than one module, or of a self-import."""
    successors: dict[str, set[str]] = {}
    for e in edges:
        successors.setdefault(e.source, set()).add(e.target)
        successors.setdefault(e.target, set())
    component = _strongly_connected(successors)
    found: dict[int, list[Edge]] = {}
    for e in edges:
        if component[e.source] == component[e.target]:
            found.setdefault(component[e.source], []).append(e)
    sizes = {c: sum(1 for v in component.values() if v == c) for c in found}
    return [group for c, group in sorted(found.items())
            if sizes[c] > 1 or any(e.source == e.target for e in group)]


def _strongly_connected(successors: dict[str, set[str]]) -> dict[str, int]:
    """Tarjan's algorithm, iterative: each node mapped to the index of its component."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    component: dict[str, int] = {}
    stack: list[str] = []
    for start in sorted(successors):
        if start in index:
            continue
        work = [(start, iter(sorted(successors[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    n = len(set(component.values()))
                    while True:
                        member = stack.pop()
                        component[member] = n
                        if member == node:
                            break
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                work.append((child, iter(sorted(successors[child]))))
            elif child not in component:
                low[node] = min(low[node], index[child])
    return component


def describe(found: list[list[Edge]]) -> str:
    """One paragraph per cycle: its modules, then each import that closes it."""
    parts = []
    for group in found:
        names = sorted({e.source for e in group})
        parts.append(f"cycle through {', '.join(names)}:\n" + "\n".join(f"    {e}" for e in group))
    return "\n".join(parts)


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, f"{len(found)} import cycle(s) in medexport:\n{describe(found)}"


def _write(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path / "pkg"


def test_graph_reads_relative_function_level_and_package_imports(tmp_path):
    src = _write(tmp_path, {
        "__init__.py": "from pkg.sub import helper\n",
        "sub/__init__.py": "",
        "sub/helper.py": "def f():\n    from .. import other\n",
        "other.py": "from pkg.sub import name_in_init\nimport pkg.sub.helper\n",
    })
    edges = {(e.source, e.target, e.line) for e in import_graph(src, "pkg")}
    assert edges == {("pkg", "pkg.sub.helper", 1), ("pkg.sub.helper", "pkg.other", 2),
                     ("pkg.other", "pkg.sub", 1), ("pkg.other", "pkg.sub.helper", 2)}


def test_cycle_is_found_with_its_lines_and_type_checking_is_not_an_edge(tmp_path):
    src = _write(tmp_path, {
        "__init__.py": "",
        "a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import c\nimport pkg.b\n",
        "b.py": "def g():\n    from pkg import a\n",
        "c.py": "import pkg.a\n",
        "d.py": "from . import d\n",
    })
    found = cycles(import_graph(src, "pkg"))
    assert [[str(e) for e in group] for group in found] == [
        ["pkg.a -> pkg.b  (pkg/a.py:4)", "pkg.b -> pkg.a  (pkg/b.py:2)"],
        ["pkg.d -> pkg.d  (pkg/d.py:1)"],
    ]


MAIN = f"{ROOT}.__main__"  # importing it runs the CLI


def _submodules() -> list[str]:
    """Every module of medexport but ``__main__``, found the way Python finds them (with any package that fails)."""
    failed: list[str] = []
    found = [m.name for m in pkgutil.walk_packages(medexport.__path__, f"{ROOT}.", onerror=failed.append)]
    return [ROOT, *(name for name in found if name != MAIN), *failed]


def test_walk_finds_every_source_file():
    assert set(_submodules()) == set(module_files()) - {MAIN}


@pytest.mark.parametrize("name", _submodules())
def test_submodule_imports(name):
    assert importlib.import_module(name).__name__ == name
