"""Two of pyinfra's per-operation costs, paid once per operation per host, made cheap.

Profiling a no-change run of 16 hosts (docs/BENCHMARKS.md) put a third of the controller's
time in two pyinfra helpers that every operation call runs:

- `get_operation_order_from_stack` orders operations by the call stack's line numbers. It
  builds `inspect.stack()`, which reads every frame's source file and scans `sys.modules` for
  each frame, to use only each frame's file name and line number.
- `all_global_arguments` evaluates the type hints of a TypedDict that never changes.

`install()` puts in equivalent versions: the same line numbers from a walk of the frames, and
the hints computed once. tests/unit/test_pyinfra_costs.py holds each against pyinfra's own, so
a pyinfra release that changes either fails there, not in a deploy. Only the functions this
pyinfra defines are replaced; anything else found under those names is left alone.
"""

from __future__ import annotations

import sys
from functools import cache
from importlib import import_module
from types import FrameType
from typing import Any

import pyinfra

# By module path: `from pyinfra.api import operation` is the decorator, not the module.
arguments = import_module("pyinfra.api.arguments")
facts = import_module("pyinfra.api.facts")
operation = import_module("pyinfra.api.operation")
util = import_module("pyinfra.api.util")


def operation_order_from_stack(state: Any) -> list[int]:
    """pyinfra's `get_operation_order_from_stack`, from frame objects alone.

    Walks what `inspect.stack()` lists (this frame, then its callers), outermost first: from
    the first frame of the deploy file, the line of every frame outside pyinfra's own folder.
    If no frame is the deploy file's, only the innermost counts (pyinfra's loop variable
    stays at the last index), and that is this frame, which pyinfra would have skipped as its
    own."""
    frames: list[tuple[str, int]] = []
    frame: FrameType | None = sys._getframe(0)
    while frame is not None:
        frames.append((frame.f_code.co_filename, frame.f_lineno))
        frame = frame.f_back
    frames.reverse()
    frames[-1] = (util.PYINFRA_INSTALL_DIR, 0)  # this frame stands for pyinfra's own
    start = 0
    if state.current_deploy_filename:
        found = (i for i, (name, _) in enumerate(frames) if name == state.current_deploy_filename)
        start = next(found, len(frames) - 1)
    lines: list[int] = []
    if pyinfra.is_cli:
        lines.append(state.current_op_file_number)
    lines += [
        n for filename, n in frames[start:] if not filename.startswith(util.PYINFRA_INSTALL_DIR)
    ]
    return lines


@cache
def _global_arguments() -> tuple[tuple[str, type], ...]:
    return tuple(_ORIGINALS["all_global_arguments"]())


def all_global_arguments() -> list[tuple[str, type]]:
    """pyinfra's `all_global_arguments`, computed once (a fresh list each call, as before)."""
    return list(_global_arguments())


_ORIGINALS: dict[str, Any] = {
    "get_operation_order_from_stack": util.get_operation_order_from_stack,
    "all_global_arguments": arguments.all_global_arguments,
}
_REPLACEMENTS = {
    "get_operation_order_from_stack": (operation_order_from_stack, [operation]),
    "all_global_arguments": (all_global_arguments, [arguments, facts]),
}


def install() -> None:
    """Idempotent; a module whose name no longer holds pyinfra's original is left as it is."""
    for name, (replacement, modules) in _REPLACEMENTS.items():
        for module in modules:
            if getattr(module, name, None) is _ORIGINALS[name]:
                setattr(module, name, replacement)
