"""The layering the README describes, checked on the source: no import circles, the backends
know nothing of the app, and no caller decides behaviour by a backend's name."""

from __future__ import annotations

import ast
from pathlib import Path

from backends import BACKENDS

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("backends", "studio", "ui", "pages")


def modules() -> dict[str, Path]:
    found = {"app": ROOT / "app.py"}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if path.stem == "__init__" else parts)
            found[name] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules a module imports, TYPE_CHECKING imports and relative ones too."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = f"{package}.{base}" if base else package
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        found.update(target for target in targets if target in known and target != name)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, set(known)) for name, path in known.items()}


def test_no_import_circles() -> None:
    edges = graph()
    # A package imports its own modules through __init__; that is not a circle of ideas.
    packages = {name for name, path in modules().items() if path.stem == "__init__"}
    edges = {name: {t for t in targets if not (name.startswith(f"{t}.") and t in packages)}
             for name, targets in edges.items()}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                cycle = [*path[path.index(target):], target]
                raise AssertionError(f"import circle: {' -> '.join(cycle)}")
            if target not in state:
                visit(target)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)


def test_backends_import_nothing_of_the_app() -> None:
    for name, targets in graph().items():
        if name.startswith("backends"):
            assert all(t.startswith("backends") for t in targets), (name, targets)


def test_no_caller_compares_a_backends_name() -> None:
    """Backends say what they can do; only the backends and the config know the names."""
    names = set(BACKENDS)
    offenders = []
    for name, path in modules().items():
        if name.startswith("backends") or name == "studio.settings.config":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Compare):
                operands = [node.left, *node.comparators]
                values = {o.value for o in operands if isinstance(o, ast.Constant)}
                for operand in operands:  # x in ("vllm", ...) too
                    if isinstance(operand, ast.Tuple | ast.List | ast.Set):
                        values |= {e.value for e in operand.elts if isinstance(e, ast.Constant)}
                if values & names:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []
