"""The driver stage when a step fails: a failed command prints named diagnoses, never dpkg's
wall of output, and the checks after the install stop with the diagnosis's name."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from pyinfra.api import Config, Inventory, State
from pyinfra.api.command import StringCommand
from pyinfra.api.host import Host
from pyinfra.connectors.util import CommandOutput, OutputLine

from gpurig import diagnose
from gpurig.diagnose import Context
from gpurig.operations import control, diagnosed
from gpurig.plan import driver as driver_plan
from helpers.driver_stage import DEBIAN_KERNEL, converged, fresh, run_stage, stack, verdict


def test_dkms_without_headers_stops_with_the_named_diagnosis() -> None:
    run = run_stage(fresh(), "debian-12", stack(535, ["cu126"]), verdict(variant="cu126"))
    after = replace(
        fresh(),
        packages={**fresh().packages, "nvidia-kernel-dkms": "535.309.01-0", "libcuda1": "535"},
        dkms=["nvidia-current/535.309.01: added"],
        smi_rc=9,
        smi_output="NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver",
    )
    build = run.execute(after)[f"Build the NVIDIA module for kernel {DEBIAN_KERNEL}"]
    assert build == [
        f"Stop(DKMS build failed: no kernel headers for {DEBIAN_KERNEL} (dkms: "
        "nvidia-current/535.309.01: added). Fix: apt install "
        f"linux-headers-{DEBIAN_KERNEL} and re-run; if no archive has them any more, boot the "
        "current kernel first (apt install linux-image-amd64 linux-headers-amd64, reboot) and "
        "re-run)"
    ]


def test_check_driver_after_install() -> None:
    the_stack = stack()
    plan = driver_plan.plan_driver("ubuntu", "24.04", fresh("ubuntu"), the_stack.nvidia)
    run = run_stage(fresh("ubuntu"), "ubuntu-24.04", the_stack)
    name = "Check nvidia-smi sees every GPU"
    assert run.execute(converged(plan))[name] == []
    blind = converged(plan, smi_gpus=[], smi_output="No devices were found", smi_rc=6)
    stop = run.execute(blind)[name]
    assert len(stop) == 1
    assert stop[0].startswith(f"Stop({diagnose.NO_DEVICE}: ")


# A failed command prints named diagnoses, never dpkg's wall of output.


@pytest.fixture
def failing_apt(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    wall = [f"Unpacking libthing{i} (1.{i}) ..." for i in range(300)]
    wall += ["Module build for kernel 6.8.0-45-generic was skipped since the",
             "kernel headers for this kernel do not seem to be installed."]  # fmt: skip
    lines = [OutputLine("stdout", line) for line in wall]

    def execute(self: StringCommand, state: State, host: Host, args: Any) -> Any:
        return False, CommandOutput(lines)

    monkeypatch.setattr(StringCommand, "execute", execute)
    control.FAILURES.clear()
    yield wall
    control.FAILURES.clear()


def test_diagnosed_command_replaces_the_output(failing_apt: list[str]) -> None:
    inventory = Inventory((["gpu-1"], {}))
    state = State(inventory, Config())
    host = inventory.get_host("gpu-1")
    host.get_fact = lambda cls, *a, **k: fresh("ubuntu")  # type: ignore[method-assign]
    the_verdict = verdict()
    command = diagnosed.DiagnosedCommand(
        "apt-get install ...", Context(os_id="ubuntu"), the_verdict
    )
    status, output = command.execute(state, host, {})
    assert status is False
    assert output.output_lines == [
        "DKMS build failed: no kernel headers for 6.8.0-45-generic. Fix: apt install "
        "linux-headers-6.8.0-45-generic and re-run, or use Canonical's precompiled modules "
        "(linux-modules-nvidia-<branch>-server-6.8.0-45-generic), which need no headers"
    ]
    assert control.FAILURES["gpu-1"].startswith("DKMS build failed: ")
    assert the_verdict.diagnoses[0].name == diagnose.DKMS_FAILED
    assert not the_verdict.ok
