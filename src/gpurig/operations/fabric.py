"""HGX boards' fabric manager as pyinfra operations: each reads the GPU fact when it runs and
runs the plan's script (gpurig.plan.fabric) only when the host differs, failures named."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from pyinfra.api.operation import operation
from pyinfra.context import host

from gpurig.diagnose import Context
from gpurig.facts.gpu import GpuHost
from gpurig.operations.diagnosed import DiagnosedCommand, note
from gpurig.plan import fabric as plan
from gpurig.preflight import Verdict


def _upstream(version: str) -> str:
    """580.65.06-0ubuntu0.24.04.2 -> 580.65.06 (no epoch, no Debian revision)."""
    return version.split(":", 1)[-1].split("-", 1)[0]


@operation()
def fabric_manager(
    fabric: plan.Fabric, context: Context, verdict: Verdict | None
) -> Generator[Any, None, None]:
    """nvidia-fabricmanager-<branch> at exactly the driver's version."""
    state = host.get_fact(GpuHost)
    have = state.packages.get(fabric.package)
    driver = state.module_version or state.driver_version
    if have and driver and _upstream(have) == driver:
        host.noop(f"{fabric.package} {have} matches driver {driver}")
        return
    yield DiagnosedCommand(plan.install_script(fabric), context, verdict)


@operation()
def fabric_service(context: Context, verdict: Verdict | None) -> Generator[Any, None, None]:
    """nvidia-fabricmanager enabled and running; said, not failed, without systemd."""
    state = host.get_fact(GpuHost)
    if not state.systemd:
        note(verdict, f"no systemd: {plan.SERVICE} not started (CUDA waits for it on NVSwitches)")
        return
    if state.fabricmanager == ("active", "enabled"):
        host.noop(f"{plan.SERVICE} is active and enabled")
        return
    yield DiagnosedCommand(plan.service_script(), context, verdict)
