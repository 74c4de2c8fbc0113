"""A plan Script step as a pyinfra operation: a shell test read as a fact decides whether the
script runs, so a host where the step is in place reports no change."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from pyinfra.api.operation import operation
from pyinfra.context import host

from gpurig.diagnose import Context
from gpurig.facts.system import ShellTest
from gpurig.operations.diagnosed import DiagnosedCommand
from gpurig.plan.steps import Script


@operation()
def scripted(step: Script) -> Generator[Any, None, None]:
    """Run the step's script unless its test holds; a failure reads as a named diagnosis."""
    if step.unless and host.get_fact(ShellTest, test=step.unless):
        host.noop(f"in place: {step.name}")
        return
    yield DiagnosedCommand(step.script, Context(), None)
