"""The host plan: everything a front end needs to converge one host, as typed data.

`build(...)` is a pure function of the spec (with the host's overrides), the lock, the host's
facts and what the controller brings (the bloomkit wheel, uv, wheels to push). It imports
neither pyinfra nor Ansible: the pyinfra deploys (gpurig.deploys), the Ansible roles (through
gpurig.ansible_bridge) and the images render the same plan, so a host's end state cannot
depend on the tool that made it. `HostPlan.to_json()` is what the Ansible roles act on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from gpurig import preflight
from gpurig.bloomkit_wheel import Wheel
from gpurig.errors import GpurigError
from gpurig.lock import Lock
from gpurig.model.host import GpuState, HostFacts
from gpurig.overrides import overridden_lock_inputs
from gpurig.plan import (
    apt_background,
    containers,
    dcgm,
    driver_scripts,
    models,
    python,
    smoke,
    system,
    trust,
    venv,
)
from gpurig.plan.driver import Driver, driver_section
from gpurig.plan.fabric import with_fabric
from gpurig.plan.steps import File, Stage, Step, WheelFile, Wheels
from gpurig.preflight import Verdict
from gpurig.spec import Stack

STAGES = ("system", "python", "nvidia", "llm_env", "containers", "dcgm", "verify")
# The OS dispatch of the roles (vars/<distribution>.yml, setup-<os_family>.yml).
OS_NAMES = {"debian": ("Debian", "Debian"), "ubuntu": ("Ubuntu", "Debian")}


@dataclass(frozen=True)
class ControllerFiles:
    """What the controller brings to a host, read (and hashed) by the caller."""

    wheel: Wheel  # bloomkit's
    uv: tuple[str, str]  # the controller's uv binary: path, sha256
    ca_sha256: str | None  # of network.ca_bundle, when set
    requirements: str  # the lock's requirements text for the host's target
    wheels: list[WheelFile]  # everything to push (wheelhouse.host_wheels)
    models: list[models.PushedModel] = field(default_factory=list)  # snapshots to push


@dataclass
class HostPlan:
    stack: Stack  # with the host's overrides
    facts: HostFacts
    verdict: Verdict
    stages: list[Stage] = field(default_factory=list)
    driver: Driver | None = None
    skip_smoke: bool = False

    @property
    def ok(self) -> bool:
        return self.verdict.ok

    def stage(self, name: str) -> list[Step]:
        return next((s.steps for s in self.stages if s.name == name), [])

    def steps(self) -> list[Step]:
        return [step for stage in self.stages for step in stage.steps]

    def folders(self) -> list[str]:
        """Folders the steps write into: pyinfra's file operations create them on the way,
        Ansible's copy module does not, so the system role creates them first."""
        found = {str(PurePosixPath(s.path).parent) for s in self.steps() if isinstance(s, File)}
        found |= {s.directory for s in self.steps() if isinstance(s, Wheels)}
        return sorted(found)

    def to_json(self) -> dict[str, Any]:
        facts, verdict = self.facts, self.verdict
        target = verdict.target
        distribution, family = OS_NAMES.get(facts.os_id, (facts.os_id.capitalize(), ""))
        return {
            "ok": self.ok,
            "problems": verdict.problems,
            "notes": verdict.notes,
            "facts": dataclasses.asdict(facts),
            "os_name": facts.os_name,
            "distribution": distribution,
            "os_family": family or facts.os_id.capitalize(),
            "has_gpu": bool(facts.gpus),
            "systemd": facts.systemd,
            "install_driver": verdict.install_driver,
            "target": target.name if target else None,
            "variant": target.variant if target else None,
            "torch": target.torch if target else None,
            "python": verdict.python,
            "uv_python": verdict.uv_python,
            "skip_smoke": self.skip_smoke,
            "user": self.stack.host.user,
            "venv_link": self.stack.host.venv,
            "report": self.stack.host.report,
            "stages": {s.name: [step.id for step in s.steps] for s in self.stages},
            "steps": {step.id: step.to_json() for step in self.steps()},
            "folders": self.folders(),
            # Filled by the Ansible preflight from one probe (gpurig.plan.converged): the steps
            # the host already has, which the roles skip instead of checking one by one.
            "converged": [],
            "driver": driver_scripts.driver_json(self.driver) if self.driver else None,
        }


def plan_problems(base: Stack, stack: Stack, verdict: Verdict) -> list[str]:
    """What the front ends add to `preflight.evaluate`: host overrides and install mode."""
    problems = []
    changed = overridden_lock_inputs(base, stack)
    if changed:
        problems.append(
            f"host data {', '.join(changed)} changes what lock/ was resolved from: set it in "
            "stack.yml and run `gpurig resolve`"
        )
    if stack.install.offline and verdict.uv_python:
        problems.append(
            f"offline install needs the distribution's python3 to be one of {stack.python}: "
            "uv cannot download a Python without an index (add this host's version to "
            "stack.yml's python and run `gpurig resolve`)"
        )
    return problems


def decide(base: Stack, stack: Stack, locked: Lock, facts: HostFacts) -> Verdict:
    """Preflight's verdict for this host, with the plan's own checks."""
    verdict = preflight.evaluate(facts, stack, locked)
    verdict.problems += plan_problems(base, stack, verdict)
    return verdict


def build(
    stack: Stack,
    facts: HostFacts,
    verdict: Verdict,
    files: ControllerFiles | None,
    gpu: GpuState | None = None,
    apt_sources: Iterable[Mapping[str, Any]] = (),
    knobs: Mapping[str, Any] | None = None,
) -> HostPlan:
    """The whole plan of a host that passed preflight, else its refusal; without `files`, the
    driver section only.

    gpu: the GPU layer's state (GPU hosts); apt_sources: the host's apt sources (Debian's
    non-free list is written from them); knobs: the front-end knobs (gpurig.overrides.KNOBS).
    """
    from gpurig.overrides import knob

    values = knobs or {}
    result = HostPlan(stack, facts, verdict, skip_smoke=bool(knob(values, "gpurig_skip_smoke")))
    target = verdict.target
    if not verdict.ok or target is None or verdict.python is None:
        return result
    if facts.gpus:
        try:
            state = gpu or GpuState()
            result.driver = with_fabric(
                driver_section(stack, facts, state, verdict, apt_sources, values), state
            )
            if result.driver.fabric:
                verdict.notes.append(f"HGX board: installs {result.driver.fabric.describe()}")
        except GpurigError as error:
            verdict.problems.append(str(error))
            return result
    if files is None:  # the driver stage alone (`gpurig preflight`, the driver tests)
        return result
    has_gpu = bool(facts.gpus)
    result.stages = [
        Stage("system", system.steps(stack, files.ca_sha256)),
        Stage(
            "python",
            python.steps(stack, verdict.python, verdict.uv_python, files.uv[0], files.uv[1]),
        ),
        Stage(
            "llm_env",
            venv.steps(
                stack,
                target,
                files.wheel,
                verdict.python,
                verdict.uv_python,
                files.requirements,
                files.wheels,
            )
            + models.steps(stack, files.models, facts),
        ),
    ]
    has_driver = result.driver is not None
    apt_background.place_wait(result.stages, "system.apt", gpu=has_driver)
    if stack.network.ca_bundle:
        trust.place_wait(result.stages, "system.ca", early=has_driver or verdict.uv_python)
    # Opt-in GPU services (stack.yml containers: and dcgm:), each its own stage.
    dcgm_steps, dcgm_notes = dcgm.steps(stack, facts, result.driver)
    new_notes = containers.notes(stack, facts) + dcgm_notes
    verdict.notes += [n for n in new_notes if n not in verdict.notes]  # built once per front end
    result.stages += [
        Stage("containers", containers.steps(stack, facts)),
        Stage("dcgm", dcgm_steps),
    ]
    smoking = not result.skip_smoke and stack.smoke.on_deploy
    verify: list[Step] = (
        [smoke.step(stack, has_gpu, dcgm.smoke_args(stack, facts))] if smoking else []
    )
    verify += containers.image_smoke(stack, facts, target) if smoking else []
    result.stages.append(Stage("verify", verify))
    return result
