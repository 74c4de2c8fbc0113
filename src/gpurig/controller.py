"""The controller's side of a run: the spec and lock loaded once, and each host's plan.

Both front ends call `Controller.host_plan` with the host's facts and its variables (pyinfra
host data, Ansible inventory variables: one vocabulary, gpurig.overrides) and render what it
returns. This module does the controller's I/O (the bloomkit wheel, hashes of the files it
pushes, the offline wheelhouse); the plan itself (gpurig.plan) stays pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpurig import bloomkit_wheel, digests, hfcache, loading, overrides, plan, wheelhouse
from gpurig.bloomkit_wheel import Wheel
from gpurig.errors import GpurigError, UsageError
from gpurig.facts import hub
from gpurig.lock import Lock, _uv
from gpurig.model.host import GpuState, HostFacts
from gpurig.plan import ControllerFiles, HostPlan, models
from gpurig.plan.models import pushed
from gpurig.preflight import Verdict
from gpurig.spec import Stack


@dataclass(frozen=True)
class Controller:
    stack_path: Path
    stack: Stack  # stack.yml, before any host's overrides
    lock: Lock
    wheel: Wheel

    @classmethod
    def load(cls, stack_path: Path, lock_dir: Path) -> Controller:
        stack, locked = loading.stack_and_lock(stack_path, lock_dir)
        return cls(stack_path, stack, locked, bloomkit_wheel.build_kept())

    def host_stack(self, values: Mapping[str, Any]) -> Stack:
        return overrides.host_stack(self.stack, values)

    def hub_probe(self, values: Mapping[str, Any]) -> str:
        """The Hub test preflight's probe adds for this host: only where stack.yml has an
        `auto` model the host may download; "" otherwise (and for invalid host data)."""
        try:
            stack = self.host_stack(values)
        except UsageError:
            return ""
        return hub.probe_script(stack) if models.asks_hub(stack) else ""

    def verdict(self, stack: Stack, facts: HostFacts) -> Verdict:
        return plan.decide(self.stack, stack, self.lock, facts)

    def files(self, stack: Stack, verdict: Verdict, facts: HostFacts) -> ControllerFiles:
        target = verdict.target
        assert target is not None
        uv = _uv()
        ca = stack.network.ca_bundle
        return ControllerFiles(
            wheel=self.wheel,
            uv=(uv, digests.file_digest(uv)),
            ca_sha256=digests.file_digest(ca) if ca else None,
            requirements=self.lock.requirements(target).read_text(),
            wheels=wheelhouse.host_wheels(stack, self.lock, target, self.wheel),
            models=[hfcache.snapshot(m.repo, m.revision) for m in pushed(stack, facts)],
        )

    def host_plan(
        self,
        values: Mapping[str, Any],
        facts: HostFacts,
        gpu: GpuState | None = None,
        apt_sources: Iterable[Mapping[str, Any]] = (),
    ) -> HostPlan:
        """One host's plan from its variables and facts; a refusal when preflight says no."""
        try:
            stack = self.host_stack(values)
        except UsageError as error:  # invalid host data: that host stops, the others go on
            return plan.build(self.stack, facts, Verdict(problems=[str(error)]), None)
        verdict = self.verdict(stack, facts)
        verdict.notes += models.notes(stack, facts)
        try:
            files = self.files(stack, verdict, facts) if verdict.ok and verdict.target else None
        except GpurigError as error:  # a model missing from the controller's cache: this host
            verdict.problems.append(str(error))
            files = None
        return plan.build(stack, facts, verdict, files, gpu, apt_sources, values)
