"""The module map of docs/architecture.md holds: layers, what each may import, no circles.

The table on that page is the rule: every module of ``src/jobrunner`` belongs to exactly one
layer row, and each import (module level, inside a function, under ``TYPE_CHECKING``: all
count) goes to its own layer or to one its row allows. Import circles between files are
refused, but for the ones declared below with their reason; a declared exception that no
longer occurs fails too, so the lists only shrink.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "jobrunner"
ARCHITECTURE_MD = ROOT / "docs" / "architecture.md"

#: Imports that break the map today, (importer, imported) as paths under src/jobrunner, each
#: with why it is still there.
KNOWN_EXCEPTIONS: dict[tuple[str, str], str] = {}

#: Import circles that exist today, each with why.
KNOWN_CIRCLES: dict[frozenset[str], str] = {}


# -- the table ---------------------------------------------------------------------------------
def _map() -> tuple[dict[str, list[str]], dict[str, set[str]]]:
    """Layer -> its file patterns, and layer -> the layers it may import."""
    text = ARCHITECTURE_MD.read_text(encoding="utf-8")
    section = text.split("## The module map", 1)[1].split("\n## ", 1)[0]
    files: dict[str, list[str]] = {}
    allowed: dict[str, set[str]] = {}
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        assert len(cells) == 4, line
        layer = cells[0].strip("`")
        files[layer] = re.findall(r"`([^`]+)`", cells[1])
        allowed[layer] = set(re.findall(r"`([^`]+)`", cells[3]))
    assert files, "docs/architecture.md has no module map table"
    for layer, others in allowed.items():
        assert others <= set(files), f"{layer} may import unknown layers {others - set(files)}"
    return files, allowed


def _modules() -> dict[str, Path]:
    """Dotted module name -> its file, for every module of the package."""
    found: dict[str, Path] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _relative(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def _layer_of(relative: str, files: dict[str, list[str]]) -> str:
    owners = [
        layer
        for layer, patterns in files.items()
        for pattern in patterns
        if relative == pattern or (pattern.endswith("/") and relative.startswith(pattern))
    ]
    assert len(owners) == 1, (
        f"src/jobrunner/{relative} belongs to {owners or 'no'} layer(s) of docs/architecture.md"
    )
    return owners[0]


# -- the imports -------------------------------------------------------------------------------
def _imports(path: Path, modules: dict[str, Path]) -> Iterator[tuple[int, Path]]:
    """(line, file imported) for every import of a jobrunner module in ``path``."""
    module = next(name for name, file in modules.items() if file == path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target.startswith("jobrunner") and modules[target] != path:
                yield node.lineno, modules[target]


def _edges() -> set[tuple[str, str, int]]:
    modules = _modules()
    return {
        (_relative(path), _relative(target), line)
        for path in modules.values()
        for line, target in _imports(path, modules)
    }


# -- the tests ---------------------------------------------------------------------------------
def test_every_module_is_in_exactly_one_layer() -> None:
    files, _ = _map()
    for path in _modules().values():
        _layer_of(_relative(path), files)


def test_imports_follow_the_module_map() -> None:
    files, allowed = _map()
    broken: list[str] = []
    seen_exceptions: set[tuple[str, str]] = set()
    for importer, imported, line in sorted(_edges()):
        source, target = _layer_of(importer, files), _layer_of(imported, files)
        if target == source or target in allowed[source]:
            continue
        if (importer, imported) in KNOWN_EXCEPTIONS:
            seen_exceptions.add((importer, imported))
            continue
        broken.append(f"{importer}:{line} ({source}) imports {imported} ({target})")
    assert not broken, "imports docs/architecture.md does not allow:\n" + "\n".join(broken)
    stale = set(KNOWN_EXCEPTIONS) - seen_exceptions
    assert not stale, f"declared exceptions that no longer occur (delete them): {stale}"


def _circles(edges: set[tuple[str, str, int]]) -> list[frozenset[str]]:
    """Strongly connected components of more than one file (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for importer, imported, _ in edges:
        graph.setdefault(importer, set()).add(imported)
        graph.setdefault(imported, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circles_but_the_declared_ones() -> None:
    circles = set(_circles(_edges()))
    new = circles - set(KNOWN_CIRCLES)
    assert not new, "import circles: " + "; ".join(" <-> ".join(sorted(c)) for c in new)
    gone = set(KNOWN_CIRCLES) - circles
    assert not gone, f"declared circles that no longer exist (delete them): {gone}"


def test_the_checks_can_fail() -> None:
    """A made-up back edge is a circle and a layer violation (the checks are not vacuous)."""
    files, allowed = _map()
    assert _layer_of("_runner.py", files) == "core"
    assert "postgres" not in allowed["core"]
    edges = {("a.py", "b.py", 1), ("b.py", "c.py", 1), ("c.py", "a.py", 1), ("c.py", "d.py", 1)}
    assert _circles(edges) == [frozenset({"a.py", "b.py", "c.py"})]
    with pytest.raises(AssertionError):
        _layer_of("no_such_module.py", files)


# -- imports inside functions ------------------------------------------------------------------
#: What may be imported inside a function: the optional extras (third-party packages a user may
#: not have installed, and jobrunner's modules that need them), so ``import jobrunner`` works
#: and loads no web framework without them.
OPTIONAL_EXTRAS = (
    "temporalio",
    "jobrunner.backends.temporal",
    "django",
    "fastapi",
    "starlette",
    "uvicorn",
    "jobrunner.dashboard",
    "opentelemetry",
    "importlib",  # _telemetry loads OpenTelemetry's optional parts by name
    "prometheus_client",
    "jobrunner.prometheus",
    "uvloop",  # a dependency only on CPython outside Windows
    "pgserver",
    "docker",
    "testcontainers",
)

#: Folders where imports in functions follow their framework's rules, each with why.
FRAMEWORK_CONVENTIONS = {
    "contrib/django/": "Django loads apps, models and commands in its own order: a Django app "
    "imports in AppConfig.ready() and in commands' handle()",
}


def _function_imports(path: Path) -> Iterator[tuple[int, str]]:
    def visit(node: ast.AST, inside: bool) -> Iterator[tuple[int, str]]:
        for child in ast.iter_child_nodes(node):
            if inside and isinstance(child, ast.Import):
                for alias in child.names:
                    yield child.lineno, alias.name
            elif inside and isinstance(child, ast.ImportFrom):
                yield child.lineno, child.module or "."
            yield from visit(
                child, inside or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            )

    yield from visit(ast.parse(path.read_text(encoding="utf-8")), False)


def test_imports_inside_functions_are_for_optional_extras_only() -> None:
    found = []
    for path in _modules().values():
        relative = _relative(path)
        if any(relative.startswith(folder) for folder in FRAMEWORK_CONVENTIONS):
            continue
        for line, module in _function_imports(path):
            if not any(
                module == extra or module.startswith(extra + ".") for extra in OPTIONAL_EXTRAS
            ):
                found.append(f"{relative}:{line} imports {module} inside a function")
    assert not found, "import these at module level (or add the extra):\n" + "\n".join(found)


def test_the_function_import_check_can_fail(tmp_path: Path) -> None:
    module = tmp_path / "sample.py"
    module.write_text(
        "import json\n\n\ndef f():\n    import temporalio\n    from jobrunner import _errors\n"
    )
    assert list(_function_imports(module)) == [(5, "temporalio"), (6, "jobrunner")]
