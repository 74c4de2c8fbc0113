"""The wait for a background job a step started (gpurig.plan.background): apt's install, the
trust store's update."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from pyinfra.api.operation import operation
from pyinfra.context import host

from gpurig.diagnose import Context
from gpurig.operations.diagnosed import DiagnosedCommand
from gpurig.plan.steps import JobWait


@operation()
def wait(step: JobWait, started: bool = True) -> Generator[Any, None, None]:
    """The job's log and exit status; its failure is diagnosed as the starting step's own
    would be. started: false when the probe found that step in place (nothing ran)."""
    if not started:
        host.noop(f"{step.started_by} was in place: nothing ran in the background")
        return
    yield DiagnosedCommand(step.script, Context(), None)
