"""What the Ansible plugins do on the controller, as typed and tested Python.

The preflight action plugin runs `probe_command()` on a host (the pyinfra deploy's own fact
probes, in one round trip), then hands its output and the host's variables to `host_plan()`, which
asks gpurig.controller for the host's plan (gpurig.plan), as the pyinfra deploy does. The roles
only act on the returned plan, step by step, so both front ends write the same bytes to a host.
Nothing here imports gpurig's pyinfra deploys or operations.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gpurig import diagnose, lock
from gpurig.controller import Controller
from gpurig.diagnose import Context
from gpurig.errors import GpurigError
from gpurig.facts import preflight_probe
from gpurig.facts.gpu import GpuHost
from gpurig.hostlayout import LOG_DIR
from gpurig.model.host import HostFacts
from gpurig.plan import HostPlan, converged


def probe_command(venv: str, hub: str = "") -> str:
    """The pyinfra deploy's fact probe (system, the GPU layer's, apt sources: one round trip)
    as one `sh -c` command line. Run it as the SSH user, without become: it tests passwordless
    sudo itself. hub: the Hub test's lines (`hub_probe`), "" when the host's models need none."""
    return "/bin/sh -c " + shlex.quote(preflight_probe.script(venv, hub))


def parse_probe(stdout: str) -> preflight_probe.Probed:
    """The probe's output, parsed by the pyinfra deploy's own code."""
    probed = preflight_probe.parse(stdout.splitlines())
    if not probed.probe.get("arch") or not probed.probe.get("mem_kb"):
        raise GpurigError(f"the fact probe printed no facts: {stdout[-300:]!r}")
    return probed


def _mtime(path: Path) -> int:
    return path.stat().st_mtime_ns if path.exists() else 0


_controllers: dict[tuple[str, str, int, int], Controller] = {}


def controller(stack_file: Path, lock_dir: Path) -> Controller:
    """The spec, lock and bloomkit wheel, loaded once per process and version of the files."""
    manifest = lock_dir / lock.MANIFEST
    key = (str(stack_file), str(lock_dir), _mtime(stack_file), _mtime(manifest))
    if key not in _controllers:
        _controllers[key] = Controller.load(stack_file, lock_dir)
    return _controllers[key]


def venv_path(stack_file: Path, lock_dir: Path, values: Mapping[str, Any]) -> str:
    """The host's live venv (gpurig_host_venv, else stack.yml's): the probe measures its disk."""
    ctl = controller(stack_file, lock_dir)
    try:
        return ctl.host_stack(values).host.venv
    except GpurigError:
        return ctl.stack.host.venv  # the plan names the invalid host data


def hub_probe(stack_file: Path, lock_dir: Path, values: Mapping[str, Any]) -> str:
    """The Hub test the probe adds for this host (gpurig.controller.Controller.hub_probe)."""
    return controller(stack_file, lock_dir).hub_probe(values)


def host_plan(stdout: str, stack_file: Path, lock_dir: Path, values: Mapping[str, Any]) -> HostPlan:
    """Facts -> verdict -> the host's plan (gpurig.plan).

    values: the host's variables, in the override vocabulary both front ends share
    (gpurig.overrides): gpurig_host_venv, gpurig_smoke_timeout_s, ...
    """
    ctl = controller(stack_file, lock_dir)
    probed = parse_probe(stdout)
    return ctl.host_plan(values, probed.facts, probed.gpu, probed.sources)


def converged_probe(planned: HostPlan) -> str | None:
    """The one round trip (as root) that tells which steps the host already has; None when
    the plan has no steps to check (a refused host)."""
    if not planned.stages:
        return None
    return converged.probe_command(planned.steps(), planned.folders())


def converged_steps(planned: HostPlan, stdout: str) -> list[str]:
    """The step ids the roles skip: every check of each was made, and passed."""
    return converged.converged(planned.steps(), planned.folders(), stdout)


def driver_diagnoses(
    output: str, context: Mapping[str, Any], facts: Mapping[str, Any] | None, gpu_stdout: str
) -> list[str]:
    """A failed driver step's named diagnoses, as the pyinfra stage names them: its output,
    then the GPU fact read right after the failure (gpu_stdout: GpuHost's output, or "")."""
    state = GpuHost().process(gpu_stdout.splitlines()) if gpu_stdout.strip() else None
    base = None
    if facts:
        base = HostFacts(**{**facts, "gpus": []})  # the GPU fields come from the new read
    found = diagnose.after_failure(output, Context(**context), base, state, f"{LOG_DIR}/")
    return [str(d) for d in found]


def gpu_probe_command() -> str:
    return "/bin/sh -c " + shlex.quote(GpuHost().command())
