"""`gpurig preflight` on real sandbox hosts, against the same inventory the deploy uses: a
pretend-H100 host, and a fleet with one host that fails and one that cannot be reached."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.nvidia_runs import REPO, Fleet, gpurig

pytestmark = pytest.mark.integration


def test_gpurig_preflight_reports_each_host_and_fails_on_any(sandbox_fleet: Fleet) -> None:
    gpu_host = sandbox_fleet(os="bookworm", count=1, pretend_gpu="H100", name="nvidia-dry-bookworm")
    run = gpurig(gpu_host, "--json")
    assert run.returncode == 0, run.stdout + run.stderr
    (result,) = json.loads(run.stdout)
    assert result["ok"]
    assert result["install_driver"] is True
    assert result["target"] == "cu130-cp311"
    assert result["facts"]["gpus"][0]["name"] == "NVIDIA H100 SXM5 80GB"
    assert "installs NVIDIA driver branch 580" in result["notes"]
    text = gpurig(gpu_host)
    assert text.returncode == 0
    assert "NVIDIA H100 SXM5 80GB (sm_90), no driver loaded, installs cu130-cp311" in text.stdout


def test_gpurig_preflight_names_the_unreachable_and_the_failing(
    sandbox_fleet: Fleet, tmp_path: Path
) -> None:
    fleet = sandbox_fleet(os="bookworm", count=2, name="nvidia-no-gpu")
    first, second = fleet.hosts
    fleet.stop(second)
    try:
        required = tmp_path / "stack.yml"
        required.write_text(
            (REPO / "stack.yml").read_text().replace("require_gpu: false", "require_gpu: true", 1)
        )
        run = gpurig(fleet, "--json", "--stack", str(required))
        assert run.returncode == 1
        results = {r["host"]: r for r in json.loads(run.stdout)}
        assert not results[first.name]["ok"]
        assert "nvidia.require_gpu is true" in results[first.name]["problems"][0]
        assert results[second.name]["problems"][0].startswith("cannot reach the host")
    finally:
        fleet.start(second)
