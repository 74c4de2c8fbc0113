"""The GPU layer's facts and preflight on a real GPU machine (skipped without one).

Run on the GPU machine itself: `python -m pytest tests/gpu -m gpu`. It reads this machine the
way the deploy reads a host (the same fact scripts, under sh), then checks what no test double
can: the PCI ids and compute capabilities in data/gpus.yaml against what the driver reports,
and that preflight finds nothing wrong with a working driver.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from gpurig import compat, diagnose, lock, preflight, spec
from gpurig.facts import gpu
from gpurig.facts.gpu import GpuHost
from gpurig.facts.system import HostProbe, to_host_facts
from gpurig.model import host as host_model
from gpurig.model.host import GpuState

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not shutil.which("nvidia-smi") or not Path("/proc/driver/nvidia/version").exists(),
        reason="no NVIDIA driver on this machine",
    ),
]
REPO = Path(__file__).resolve().parents[2]


def sh(script: str) -> list[str]:
    run = subprocess.run(
        ["/bin/sh", "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    return run.stdout.splitlines()


@pytest.fixture(scope="module")
def state() -> GpuState:
    return GpuHost().process(sh(GpuHost().command()))


def test_every_gpu_is_known_and_matches_the_driver(state: GpuState) -> None:
    assert state.gpus, "nvidia-smi runs but no NVIDIA GPU on the PCI bus"
    assert state.driver_version, "no /proc/driver/nvidia/version"
    assert state.smi_rc == 0, state.smi_output
    assert len(state.smi_gpus) == len(state.gpus), (state.smi_gpus, state.gpus)
    by_bus = {g.bus_id: g for g in state.smi_gpus}
    table = host_model.gpu_table().gpus
    for found in state.gpus:
        assert found.device_id in table, f"add 10de:{found.device_id} to data/gpus.yaml"
        reported = by_bus[found.slot].compute_cap
        assert reported in (None, found.compute_capability), (found, reported)


def test_a_working_driver_has_nothing_to_diagnose(state: GpuState) -> None:
    probe = HostProbe().process(sh(HostProbe().command("/opt/gpurig/venv")))
    facts = gpu.apply(to_host_facts(probe), state)
    assert diagnose.from_facts(facts) == []
    stack = spec.load(REPO / "stack.yml")
    verdict = preflight.evaluate(facts, stack, lock.load(REPO / "lock"))
    gpu_words = ("GPU", "driver", "kernels", "nouveau", "Secure Boot", "DKMS", "NVML")
    gpu_problems = [p for p in verdict.problems if any(w in p for w in gpu_words)]
    assert gpu_problems == [], verdict.problems
    cuda = [v for v in stack.torch.variants if v != "cpu"]
    runs = any(compat.driver_runs(state.driver_version or "0", v) for v in cuda)
    assert verdict.install_driver is not runs, verdict.notes
