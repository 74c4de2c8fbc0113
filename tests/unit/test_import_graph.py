"""No import cycles in gpurig or bloomkit: the layers of docs/ARCHITECTURE.md stay layers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = {"gpurig": REPO / "src" / "gpurig", "bloomkit": REPO / "bloomkit" / "src" / "bloomkit"}


def _modules(package: str, root: Path) -> dict[str, Path]:
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The modules of ours this one imports, at its top level or inside a function (an import
    moved into a function to dodge a cycle is still a cycle); `if TYPE_CHECKING:` aside.

    `from package import module` is an edge to the module; `from module import name`, to the
    module that holds the name.
    """
    found: set[str] = set()
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                found.add(sub if (sub := f"{base}.{alias.name}") in known else base)
        stack.extend(ast.iter_child_nodes(node))
    return {m for m in found if m in known and m != module}


def graph() -> dict[str, set[str]]:
    modules: dict[str, Path] = {}
    for package, root in PACKAGES.items():
        modules |= _modules(package, root)
    return {
        name: _imports(ast.parse(path.read_text()), name, path.name == "__init__.py", set(modules))
        for name, path in modules.items()
    }


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges[node]):
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


def test_the_graph_sees_imports() -> None:
    edges = graph()
    assert "bloomkit.stages" in edges["bloomkit.smoke"]
    assert "bloomkit.smoke" in edges["bloomkit.distributed"]
    assert "gpurig.plan.image" in edges["gpurig.images.render"]
    assert "gpurig.diagnose.signatures" in edges["gpurig.diagnose"]


def test_a_cycle_is_found() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(edges) == [["a", "b", "c"]]


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_no_import_cycle(package: str) -> None:
    found = [c for c in cycles(graph()) if c[0].split(".")[0] == package]
    assert found == [], "import cycles: " + "; ".join(" <-> ".join(c) for c in found)
