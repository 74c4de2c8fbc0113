"""Three of pyinfra's per-operation costs, paid once per operation per host, made cheap.

Profiling a no-change run of 16 hosts (docs/BENCHMARKS.md) put most of the controller's
own time in three pyinfra helpers that every operation call runs:

- `get_operation_order_from_stack` orders operations by the call stack's line numbers. It
  builds `inspect.stack()`, which reads every frame's source file and scans `sys.modules` for
  each frame, to use only each frame's file name and line number.
- `all_global_arguments` evaluates the type hints of a TypedDict that never changes.
- `pop_global_arguments` looks each of the ~40 global arguments up in the host's data, and
  every lookup evaluates all five data layers again (override, host, the merge of the
  host's groups, global, deploy defaults): 200 layer evaluations per operation per host.

`install()` puts in equivalent versions: the same line numbers from a walk of the frames, the
hints computed once, and pyinfra's own `pop_global_arguments` given the host's data layers
evaluated once per call (the same layers, in the same order, each value copied as before).
tests/unit/test_pyinfra_costs.py holds each against pyinfra's own, so a pyinfra release that
changes one fails there, not in a deploy. Only the functions this pyinfra defines are
replaced; anything else found under those names is left alone.
"""

from __future__ import annotations

import sys
from copy import copy
from functools import cache
from importlib import import_module
from types import FrameType
from typing import Any

import pyinfra

# By module path: `from pyinfra.api import operation` is the decorator, not the module.
arguments = import_module("pyinfra.api.arguments")
deploy = import_module("pyinfra.api.deploy")
facts = import_module("pyinfra.api.facts")
host_module = import_module("pyinfra.api.host")
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


class _LayersOnce:
    """A host's `data` as `HostData.__getattr__` reads it, with its layers evaluated once."""

    def __init__(self, data: Any) -> None:
        self._host = data.host
        self._layers = list(host_module.extract_callable_datas(data.datas))

    def __getattr__(self, key: str) -> Any:
        for layer in self._layers:
            try:
                return copy(layer[key])
            except KeyError:
                pass
        raise AttributeError(f"Host `{self._host}` has no data `{key}`")


class _HostView:
    """The host, with its data read through `_LayersOnce`; everything else is the host's."""

    def __init__(self, host: Any) -> None:
        self.data = _LayersOnce(host.data)
        self._host = host

    def __getattr__(self, name: str) -> Any:
        return getattr(self._host, name)


def pop_global_arguments(state: Any, host: Any, kwargs: dict[str, Any]) -> Any:
    """pyinfra's `pop_global_arguments`, reading the host's data layers once. Only global
    arguments are read through the view, and nothing it calls writes host data, so every
    lookup sees what it would have seen."""
    return _ORIGINALS["pop_global_arguments"](state, _HostView(host), kwargs)


_ORIGINALS: dict[str, Any] = {
    "get_operation_order_from_stack": util.get_operation_order_from_stack,
    "all_global_arguments": arguments.all_global_arguments,
    "pop_global_arguments": arguments.pop_global_arguments,
}
_REPLACEMENTS = {
    "get_operation_order_from_stack": (operation_order_from_stack, [operation]),
    "all_global_arguments": (all_global_arguments, [arguments, facts]),
    "pop_global_arguments": (pop_global_arguments, [operation, facts, deploy]),
}


def install() -> None:
    """Idempotent; a module whose name no longer holds pyinfra's original is left as it is."""
    for name, (replacement, modules) in _REPLACEMENTS.items():
        for module in modules:
            if getattr(module, name, None) is _ORIGINALS[name]:
                setattr(module, name, replacement)
