"""A pretend HGX board (eight GPUs, four NVSwitches, driver 535 loaded) on a systemd sandbox host:
`gpurig preflight` on it, and the fabric manager's service step meeting a unit that fails as it
does without GPUs."""

from __future__ import annotations

import json
import shlex

import pytest

from gpurig import diagnose
from gpurig.plan import fabric
from helpers.nvidia_runs import Fleet, gpurig

pytestmark = pytest.mark.integration


HGX = {"os": "bookworm", "pretend_gpu": "HGX-H100-535", "init": "systemd", "name": "nvidia-hgx"}


def test_gpurig_preflight_on_a_pretend_hgx_board_with_driver_535(sandbox_fleet: Fleet) -> None:
    """The HGX-H100-535 shape: eight GPUs, four NVSwitches, 535 loaded. The driver is kept, the
    CUDA 12 build chosen, and the fabric manager planned at the loaded driver's branch."""
    hgx = sandbox_fleet(**HGX)
    run = gpurig(hgx, "--json")
    assert run.returncode == 0, run.stdout + run.stderr
    (result,) = json.loads(run.stdout)
    assert result["ok"]
    assert result["install_driver"] is False
    assert result["target"] == "cu128-cp311"
    facts = result["facts"]
    assert (len(facts["gpus"]), facts["nvswitches"], facts["driver_version"]) == (
        8,
        4,
        "535.261.03",
    )
    assert (
        "HGX board: installs nvidia-fabricmanager-535 from NVIDIA's CUDA repository for its 4 "
        "NVSwitches, at the driver's version"
    ) in result["notes"]
    text = gpurig(hgx)
    assert text.returncode == 0
    assert (
        "8x NVIDIA H100 SXM5 80GB (sm_90), 4 NVSwitch, driver 535.261.03, installs cu128-cp311"
    ) in text.stdout


# What nvidia-fabricmanager does on a board whose NVSwitches it cannot reach: it exits at start.
NO_SWITCH_UNIT = """\
[Unit]
Description=stand-in for NVIDIA fabric manager on a host without NVSwitch devices
[Service]
Type=forking
ExecStart=/bin/sh -c 'echo "request to query NVSwitch device information from NVSwitch driver failed" >&2; exit 1'
[Install]
WantedBy=multi-user.target
"""  # noqa: E501


def test_the_fabric_manager_failing_under_systemd_is_the_named_diagnosis(
    sandbox_fleet: Fleet,
) -> None:
    """The plan's service step on a systemd pretend-HGX host, real systemctl and journal, a unit
    that fails as the fabric manager does without GPUs: one named diagnosis, no traceback."""
    hgx = sandbox_fleet(**HGX)
    host = hgx.hosts[0]
    unit = "/etc/systemd/system/nvidia-fabricmanager.service"
    rc, out = hgx.ssh(host, f"printf '%s' {shlex.quote(NO_SWITCH_UNIT)} | sudo -n tee {unit}")
    assert rc == 0, out
    rc, out = hgx.ssh(host, f"sudo -n sh -c {shlex.quote(fabric.service_script())}", timeout=120)
    assert rc == 1, out
    (found,) = diagnose.from_output(out)
    assert found.name == "fabric manager not running"
    assert found.message.startswith("nvidia-fabricmanager did not start")
    assert "request to query NVSwitch device information" in out  # its journal, for the reader
    _, state = hgx.ssh(
        host, "systemctl is-enabled nvidia-fabricmanager; systemctl is-active nvidia-fabricmanager"
    )
    assert state.split() == ["enabled", "failed"]  # enabled for the next boot; failed now
