"""The package's floors, read from the source with `ast`: `schemas` (the contract language
and the errors) at the bottom, `adapters` (moving bytes and rows) above it, `gateway` on
top. A lower floor importing a higher one is how a "small" convenience import turns into
a cycle, so these tests name the file and line of every such import."""

from __future__ import annotations

import ast
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
