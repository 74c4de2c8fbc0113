"""Every path gpurig gives a host is defined once, in gpurig.hostlayout."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# A path of gpurig's on a host: its folders, files and binaries, and the uv it installs.
HOST_PATH = re.compile(
    r"/(?:etc|opt|srv|var/lib|var/cache|var/log|usr/local/bin|usr/local/share)/\S*gpurig[^\s\"';]*"
    r"|/usr/local/bin/uv\b"
)
LAYOUT = REPO / "src" / "gpurig" / "hostlayout.py"
# The sandbox's own test hosts (a pretend-GPU marker, sshd settings): not what gpurig gives
# a provisioned host.
SANDBOX = REPO / "src" / "gpurig" / "sandbox"


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        first = body[0] if isinstance(body, list) and body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
            found.add(id(first.value))
    return found


def literal_paths(path: Path, root: Path = REPO) -> list[str]:
    """Host paths in the module's string literals (f-string parts too), docstrings aside."""
    tree = ast.parse(path.read_text())
    docs = _docstrings(tree)
    return [
        f"{path.relative_to(root)}:{node.lineno}: {match[0]}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs
        for match in HOST_PATH.finditer(node.value)
    ]


def yaml_paths(path: Path) -> list[str]:
    """Host paths in a role's YAML, comments aside (argument_specs describe, they do not act)."""
    return [
        f"{path.relative_to(REPO)}:{number}: {match[0]}"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if not line.lstrip().startswith("#")
        for match in HOST_PATH.finditer(line)
    ]


def test_the_check_sees_a_literal(tmp_path: Path) -> None:
    module = tmp_path / "sample.py"
    module.write_text(
        '"""Writes /etc/gpurig/x."""\nX = "/etc/gpurig/environment"\nY = f"{X} /usr/local/bin/uv"\n'
    )
    assert literal_paths(module, tmp_path) == [
        "sample.py:2: /etc/gpurig/environment",
        "sample.py:3: /usr/local/bin/uv",
    ]


def test_no_host_path_outside_hostlayout() -> None:
    modules = [*(REPO / "src" / "gpurig").rglob("*.py"), *(REPO / "plugins").rglob("*.py")]
    found = [
        hit
        for module in sorted(modules)
        if module != LAYOUT and SANDBOX not in module.parents
        for hit in literal_paths(module)
    ]
    roles = [
        path
        for path in sorted((REPO / "roles").rglob("*.yml"))
        if path.name != "argument_specs.yml"
    ]
    found += [hit for role in roles for hit in yaml_paths(role)]
    assert found == [], "define these in gpurig.hostlayout:\n" + "\n".join(found)
