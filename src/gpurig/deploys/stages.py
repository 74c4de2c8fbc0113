"""The install stages: system, Python, the LLM environment, and the opt-in containers and DCGM
stages, each its part of the plan.

Nothing is decided here: gpurig.plan says what each stage converges (docs/host-end-state.md),
gpurig.deploys.render turns each step into operations.
"""

from __future__ import annotations

from pyinfra.api.deploy import deploy

from gpurig.deploys import SPEC_DEFAULTS, host_plan
from gpurig.deploys.render import apply


def _render(stage: str) -> None:
    for step in host_plan().stage(stage):
        apply(step)


@deploy("System", data_defaults=SPEC_DEFAULTS)
def system() -> None:
    """Trust, proxy, apt packages, the environment file, the service user and its folders."""
    _render("system")


@deploy("Python", data_defaults=SPEC_DEFAULTS)
def python() -> None:
    """uv, the spec's Python where the distribution's does not fit, the login PATH."""
    _render("python")


@deploy("LLM environment", data_defaults=SPEC_DEFAULTS)
def llm_env() -> None:
    """The wheels hosts cannot download, then the locked venv with bloomkit, swapped in."""
    _render("llm_env")


@deploy("Containers", data_defaults=SPEC_DEFAULTS)
def containers() -> None:
    """stack.yml containers: the engine, and NVIDIA's container toolkit on GPU hosts."""
    _render("containers")


@deploy("DCGM", data_defaults=SPEC_DEFAULTS)
def dcgm() -> None:
    """stack.yml dcgm: NVIDIA's DCGM and its host engine, on hosts with datacenter GPUs."""
    _render("dcgm")
