"""A pyinfra deploy of the models step alone (bench/bench_models.py times it): preflight, then
only the plan's `llm_env.models` step, on a host a full deploy already provisioned."""

from pyinfra import config

from gpurig.deploys.preflight import preflight
from gpurig.deploys.render import apply

config.SUDO = True

plan = preflight()
if plan.ok:
    for step in plan.stage("llm_env"):
        if step.id == "llm_env.models":
            apply(step)
