"""The layers of the package, as the architecture document draws them.

``rembus_proto`` (the sans-IO core) imports nothing from ``rembus``; client
drivers never import the broker or the command line; the broker never imports
client drivers; the test kit (client drivers over the broker core) imports
neither the broker server nor the command line, and neither imports it;
nothing imports the command line but itself; module-level imports
(``TYPE_CHECKING`` blocks included) form no cycle anywhere in ``src``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"

#: package prefix -> prefixes it must never import
FORBIDDEN = {
    "rembus_proto": ("rembus",),
    "rembus.client": ("rembus.broker", "rembus.cli", "rembus.testing"),
    "rembus.broker": ("rembus.client", "rembus.cli", "rembus.testing"),
    "rembus.testing": ("rembus.broker", "rembus.cli"),
    "rembus.security": ("rembus.broker", "rembus.cli"),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def imports(name: str, path: Path, *, top_level_only: bool,
            known: frozenset[str] = frozenset()) -> Iterator[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved).

    ``from package import module`` counts as importing ``package.module`` when that is
    one of the ``known`` modules, as ``package`` otherwise.
    """
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    nodes = _top_level(tree) if top_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            for alias in node.names:
                full = f"{module}.{alias.name}"
                yield full if full in known else module


def _top_level(tree: ast.Module) -> Iterator[ast.AST]:
    """Statements run at import time (including ``if TYPE_CHECKING:`` blocks), not in defs."""
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_layer_imports_only_what_is_below_it(layer: str) -> None:
    wrong = []
    for name, path in modules().items():
        if name != layer and not name.startswith(layer + "."):
            continue
        for imported in imports(name, path, top_level_only=False, known=frozenset(modules())):
            if any(imported == f or imported.startswith(f + ".") for f in FORBIDDEN[layer]):
                wrong.append(f"{name} imports {imported}")
    assert wrong == []


def test_only_the_command_line_imports_the_command_line() -> None:
    wrong = [f"{name} imports {imported}"
             for name, path in modules().items()
             if not name.startswith("rembus.cli") and name != "rembus.__main__"
             for imported in imports(name, path, top_level_only=False)
             if imported == "rembus.cli" or imported.startswith("rembus.cli.")]
    assert wrong == []
def test_module_level_imports_form_no_cycle() -> None:
    known = modules()
    names = frozenset(known)
    graph = {name: sorted({i for i in imports(name, path, top_level_only=True, known=names)
                           if i in known and i != name and not name.startswith(i + ".")})
             for name, path in known.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt):], nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [name])
    assert cycles == []
