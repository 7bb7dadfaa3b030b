"""No import circle between plutok modules, read from the source (nothing heavy is imported).

Counted: imports at module level (a module's import of its own enclosing packages, which
are mid-initialisation whenever it runs, is not an edge), including those under ``if TYPE_CHECKING:`` (a circle
for the type checker is still a circle in the design). Not counted: imports inside
functions, which the package uses on purpose to load torch and friends lazily.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import plutok

PACKAGE_ROOT = Path(plutok.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Import statements not inside a function or class (``if``/``try`` blocks included)."""
    found: list[ast.Import | ast.ImportFrom] = []
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, (ast.If, ast.Try)):
            pending.extend(node.body)
            pending.extend(node.orelse)
            if isinstance(node, ast.Try):
                for handler in node.handlers:
                    pending.extend(handler.body)
                pending.extend(node.finalbody)
    return found


def import_graph() -> dict[str, set[str]]:
    """``module -> plutok modules it imports at module level`` over the whole package."""
    modules = {_module_name(path): path for path in PACKAGE_ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in _module_level_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
                continue
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets.add(base)
            # `from plutok import streaming` imports the submodule plutok.streaming.
            targets.update(
                f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules
            )
        edges = set()
        for target in targets:
            # Importing a.b.c runs a/__init__ and a/b/__init__ first.
            pieces = target.split(".")
            edges.update(".".join(pieces[:i]) for i in range(1, len(pieces) + 1))
        # A package's own ancestors are being initialised already when it runs: not an edge.
        ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        graph[name] = {
            target for target in edges if target in modules and target != name and target not in ancestors
        }
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_graph_finds_a_circle() -> None:
    """The check itself: a made-up circle is found, a chain is not."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_graph_sees_plutok_imports() -> None:
    graph = import_graph()
    assert "plutok.synthesis" in graph["plutok.api"]
    assert "plutok.streaming" in graph["plutok.api"]


def test_no_import_circle() -> None:
    assert find_cycle(import_graph()) is None


def test_streaming_imports_without_the_facade() -> None:
    """``plutok.streaming`` imported first, in a fresh interpreter, does not pull in ``plutok.api``."""
    code = "import sys, plutok.streaming; print('plutok.api' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
