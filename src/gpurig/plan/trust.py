"""The trust store's update as a background job (gpurig.plan.background).

update-ca-certificates takes about a second on a fresh host (a process or three per
certificate, then the hash links): started by the CA bundle's step, it overlaps the small steps
after it. The apt job lets it end first (apt's https sources may go through an intercepting
proxy), and a wait step before the first step that downloads takes its result. A failed
update removes the bundle it was adding, so the next run copies it again and retries.
"""

from __future__ import annotations

import shlex

from gpurig.plan.background import Job
from gpurig.plan.steps import JobWait, Stage

# ca-certificates' own install runs the update too, if the package comes later.
UPDATE_CA = "if command -v update-ca-certificates >/dev/null; then update-ca-certificates; fi"
JOB = Job("trust", "the trust store updates", wait_s=300)


def update_script(ca_file: str) -> str:
    """The CA bundle step's `then`: the update started as a background job."""
    removed = f"rc=$?; rm -f {shlex.quote(ca_file)}; exit $rc"
    return "\n".join(JOB.start(f"{UPDATE_CA} || {{ {removed}; }}"))


def place_wait(stages: list[Stage], ca_step: str, early: bool) -> None:
    """Before the first step that downloads: with `early` (a uv-managed Python to download, or
    a GPU host, whose driver stage comes before the venv) right after uv's binary is placed;
    else right before the venv build."""
    if early:
        stage = next(s for s in stages if s.name == "python")
        index = next(i for i, step in enumerate(stage.steps) if step.id == "python.uv") + 1
    else:
        stage = next(s for s in stages if s.name == "llm_env")
        index = next(i for i, step in enumerate(stage.steps) if step.id == "llm_env.venv")
    wait = JobWait(
        f"{stage.name}.trust_wait",
        "Wait for the trust store",
        started_by=ca_step,
        script=JOB.wait(),
    )
    stage.steps.insert(index, wait)
