"""Load the spec and its lock: the one way every front end and command reads them.

Schema first, then the compatibility table (every problem reported at once), then the lock,
refused when it was not resolved from this spec.
"""

from __future__ import annotations

from pathlib import Path

from gpurig import compat, lock, spec
from gpurig.lock import Lock
from gpurig.spec import SpecErrors, Stack


def checked_stack(path: Path) -> Stack:
    """stack.yml, valid by the schema and by the compatibility table."""
    stack = spec.load(path)
    problems = compat.problems(stack)
    if problems:
        raise SpecErrors(str(path), problems)
    return stack


def stack_and_lock(stack_path: Path, lock_dir: Path) -> tuple[Stack, Lock]:
    """The checked spec and the lock resolved from it (GpurigError when stale or missing)."""
    stack = checked_stack(stack_path)
    locked = lock.load(lock_dir)
    locked.assert_fresh(stack)
    return stack, locked
