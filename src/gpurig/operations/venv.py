"""The locked venv: the plan's build script (gpurig.plan.venv), run only when the host differs.

The script decides everything itself, under a lock; this operation reads the venvs first so
that a converged host reports no change: from preflight's one probe when it ran
(gpurig.facts.in_place), else with its own fact.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from pyinfra.api.operation import operation
from pyinfra.context import host

from gpurig.facts.system import Venvs, VenvState
from gpurig.plan.steps import Venv


def _keep(venvs: Venvs, venv_dir: str) -> str | None:
    """The venv the script keeps for rollback: the live one before a swap, else the newest."""
    if venvs.live and venvs.live != venv_dir:
        return venvs.live
    others = [d for d in venvs.mtimes if d != venv_dir]
    return max(others, key=lambda d: (venvs.mtimes[d], d)) if others else None


@operation()
def locked_venv(step: Venv, venvs: Venvs | None = None) -> Generator[Any, None, None]:
    """venvs: the host's venvs as preflight read them; nothing else changes them in a run."""
    if venvs is None:
        venvs = host.get_fact(
            VenvState, link=step.link, venvs_dir=step.venvs_dir, marker=step.marker_file
        )
    complete = venvs.markers.get(step.venv_dir) == step.marker
    keep = _keep(venvs, step.venv_dir)
    leftovers = [d for d in venvs.mtimes if d not in (step.venv_dir, keep)]
    if complete and venvs.live == step.venv_dir and not venvs.live_is_dir and not leftovers:
        host.noop(f"{step.link} -> {step.venv_dir} is complete")
        return
    yield step.script
