"""The package's floors, read from the source with `ast`: `schemas` (the contract language
and the errors) at the bottom, `adapters` (moving bytes and rows) above it, `gateway` on
top. A lower floor importing a higher one is how a "small" convenience import turns into
a cycle, so these tests name the file and line of every such import."""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# What each floor must never import (a prefix of the imported module's dotted name).
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "schemas": ("gateway", "adapters"),
    "adapters": ("gateway",),
}


def python_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, node: ast.AST) -> Iterator[str]:
    """The dotted names an import statement brings in (relative imports resolved)."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            package = module_name(path).split(".")
            if path.name != "__init__.py":
                package.pop()
            package = package[: len(package) - (node.level - 1)]
            base = ".".join([*package, base] if base else package)
        yield base


def every_import(path: Path, source: str | None = None) -> Iterator[tuple[int, str]]:
    """(line, module) of every import in the file, those inside functions included."""
    text = path.read_text(encoding="utf-8") if source is None else source
    tree = ast.parse(text, filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            for name in imported_modules(path, node):
                yield node.lineno, name


def is_under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


@pytest.mark.parametrize("floor", sorted(FORBIDDEN))
def test_a_lower_floor_never_imports_a_higher_one(floor: str) -> None:
    found = [f"{path.relative_to(ROOT)}:{line}: imports {name}"
             for path in python_files(floor)
             for line, name in every_import(path)
             if any(is_under(name, above) for above in FORBIDDEN[floor])]
    assert not found, f"{floor}/ must not import {', '.join(FORBIDDEN[floor])}:\n" + "\n".join(found)


def test_the_import_walker_sees_lazy_and_relative_imports() -> None:
    # The check is only as good as its walker: a lazy import inside a function (how
    # schemas once reached gateway.contract_scoring) must be found too.
    source = "import os\nfrom . import layout\n\ndef f():\n    from ..gateway.x import y\n    return y\n"
    assert list(every_import(ROOT / "schemas" / "sample.py", source)) == [
        (1, "os"), (2, "schemas"), (5, "gateway.x")]


# ---------------------------------------------------------------- import cycles

PACKAGES = ("gateway", "adapters", "schemas")


def module_level_imports(path: Path, known: set[str]) -> Iterator[tuple[int, str]]:
    """(line, module) of the imports run when the module is imported: not those inside
    functions, nor those under `if TYPE_CHECKING:`. `from package import name` counts as
    an import of package.name when that is a module."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))

    def walk(body: list[ast.stmt]) -> Iterator[tuple[int, str]]:
        for node in body:
            if isinstance(node, ast.If):
                if not is_type_checking(node):
                    yield from walk(node.body)
                yield from walk(node.orelse)
            elif isinstance(node, ast.Try):
                for block in (node.body, *(h.body for h in node.handlers), node.orelse, node.finalbody):
                    yield from walk(block)
            elif isinstance(node, ast.With):
                yield from walk(node.body)
            elif isinstance(node, ast.Import | ast.ImportFrom):
                for name in imported_modules(path, node):
                    yield node.lineno, name
                    if isinstance(node, ast.ImportFrom):
                        for alias in node.names:
                            if f"{name}.{alias.name}" in known:
                                yield node.lineno, f"{name}.{alias.name}"

    yield from walk(tree.body)


def is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def type_checking_lines(path: Path) -> set[int]:
    """Lines of the imports under `if TYPE_CHECKING:` (annotations only, never run)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return {inner.lineno for node in ast.walk(tree) if isinstance(node, ast.If) and is_type_checking(node)
            for stmt in node.body for inner in ast.walk(stmt) if isinstance(inner, ast.Import | ast.ImportFrom)}


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {imported module of ours: line}."""
    files = {module_name(p): p for package in PACKAGES for p in python_files(package)}
    known = set(files)
    graph: dict[str, dict[str, int]] = {}
    for module, path in files.items():
        edges: dict[str, int] = {}
        for line, name in module_level_imports(path, known):
            # `import a.b.c` runs a/__init__ and a/b/__init__ too, but those are the
            # package's own business; the edge that matters is to the named module.
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                edges.setdefault(name, line)
        graph[module] = edges
    return graph


def find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [one_cycle(graph, set(c)) for c in components]


def one_cycle(graph: dict[str, dict[str, int]], component: set[str]) -> list[str]:
    """A shortest cycle through the component's first module, for the failure message."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v]):
                if w == start:
                    return [*paths[v], start]
                if w in component and w not in paths:
                    paths[w] = [*paths[v], w]
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start}")  # a component of >1 always has one


def describe(cycle: list[str], graph: dict[str, dict[str, int]]) -> str:
    return " -> ".join(f"{a} (line {graph[a][b]})" for a, b in itertools.pairwise(cycle)) + f" -> {cycle[-1]}"


def test_no_import_cycles() -> None:
    graph = import_graph()
    cycles = find_cycles(graph)
    assert not cycles, "module-level import cycles:\n" + "\n".join(describe(c, graph) for c in cycles)


# Pairs that once imported each other, one side lazily: the lower one must not import the
# upper one at all, not even inside a function (an annotation under TYPE_CHECKING is fine).
UPPER_LOWER = [
    ("gateway.cli", "gateway.commands"),
    ("schemas.contract", "schemas.docs"),
    ("schemas.contract", "schemas.validate"),
]


@pytest.mark.parametrize(("upper", "lower"), UPPER_LOWER)
def test_a_lower_module_never_imports_its_caller(upper: str, lower: str) -> None:
    path = ROOT / (lower.replace(".", "/") + ".py")
    typing_only = type_checking_lines(path)
    found = [f"{path.relative_to(ROOT)}:{line}: imports {name}"
             for line, name in every_import(path)
             if is_under(name, upper) and line not in typing_only]
    assert not found, f"{lower} is called by {upper} and must not import it back:\n" + "\n".join(found)


def test_the_cycle_finder_names_the_cycle() -> None:
    graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3, "d": 4}, "d": {}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b": 1}, "b": {}}) == []


# ---------------------------------------------------------------- private names

CHECKED = (*PACKAGES, "tests", "bench", "scripts")


def private_imports(path: Path) -> Iterator[tuple[int, str, str]]:
    """(line, dotted name, owner) for every import of one of our private names (a
    component starting with one underscore): `owner` is the module or package the name
    is private to."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        for base in imported_modules(path, node):
            names = [base] if isinstance(node, ast.Import) else [f"{base}.{a.name}" for a in node.names]
            for name in names:
                parts = name.split(".")
                if parts[0] not in CHECKED:
                    continue  # the standard library's and third parties' privates are their business
                for i, part in enumerate(parts):
                    if part.startswith("_") and not part.startswith("__"):
                        yield node.lineno, name, ".".join(parts[:i])
                        break


def test_no_private_name_is_imported_from_another_module() -> None:
    # A private name may be used inside what owns it: `adapters.models._http` by the
    # modules of adapters.models, never from gateway/ or from a sibling module.
    found = [f"{path.relative_to(ROOT)}:{line}: imports {name}"
             for package in CHECKED for path in python_files(package)
             for line, name, owner in private_imports(path)
             if not module_name(path).startswith(owner + ".")]
    assert not found, "private names imported from outside their module:\n" + "\n".join(found)
