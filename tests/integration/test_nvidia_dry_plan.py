"""The GPU layer's plan on real sandbox hosts (no GPU here: `--pretend-gpu` puts one on the PCI
bus): `--dry` on Debian 12 and 13, Secure Boot off and on, the skip on GPU-less hosts, and the
CUDA repository this machine cannot reach named by both front ends.

Ubuntu has no sandbox host (no Ubuntu archive here): its plans are operation tests with injected
facts (tests/unit/test_nvidia_driver_*.py), as are a loaded driver that is too old or right.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.nvidia_runs import DEBIAN_535, REPO, Fleet, failing_playbook, plan, pyinfra, stack_file

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("os", "sku", "stack", "expected"),
    [
        ("bookworm", "H100", None, [
            "Add NVIDIA's CUDA repository (key 3BF863CC checked)",
            "Install NVIDIA driver 580 from NVIDIA's CUDA repository, DKMS modules",
        ]),
        ("bookworm", "H100", DEBIAN_535, [
            "Install NVIDIA driver 535 from Debian's non-free archive, DKMS modules",
        ]),
        ("trixie", "L4", None, [
            "Add NVIDIA's CUDA repository (key 3BF863CC checked)",
            "Install NVIDIA driver 580 from NVIDIA's CUDA repository, DKMS modules",
        ]),
    ],
)  # fmt: skip
def test_dry_plan_installs_the_driver_for_a_pretend_gpu(
    sandbox_fleet: Fleet,
    tmp_path: Path,
    os: str,
    sku: str,
    stack: str | None,
    expected: list[str],
) -> None:
    fleet = sandbox_fleet(os=os, count=1, pretend_gpu=sku, name=f"nvidia-dry-{os}")
    name = fleet.hosts[0].name
    changes = plan(fleet, stack_file(tmp_path, stack))
    for op in [*expected, "Blacklist nouveau", "Load the NVIDIA driver"]:
        assert changes.get(op) == [name], (op, changes)
    kernel = next(op for op in changes if op.startswith("Build the NVIDIA module for kernel "))
    assert changes[kernel] == [name]
    assert changes["Hold the NVIDIA driver packages"] == [name]
    assert changes["Keep unattended-upgrades off the driver"] == [name]
    assert changes["Enable persistence mode (nvidia-persistenced)"] == []  # no systemd here
    assert "Check the DKMS signing key is enrolled" not in changes
    # --dry changed nothing.
    _status, out = fleet.ssh(name, "dpkg -l 'nvidia-*' 2>&1 | grep -c '^ii' || true")
    assert out.strip() == "0", out


def test_dry_plan_with_secure_boot_stops_at_the_unenrolled_key(
    sandbox_fleet: Fleet, tmp_path: Path
) -> None:
    fleet = sandbox_fleet(
        os="bookworm", count=1, pretend_gpu="H100", pretend_secure_boot=True, name="nvidia-sb"
    )
    name = fleet.hosts[0].name
    changes = plan(fleet, stack_file(tmp_path, DEBIAN_535))
    assert changes["Check the DKMS signing key is enrolled"] == [name]
    run = pyinfra(fleet, stack_file(tmp_path, DEBIAN_535), "--dry")
    assert "preflight: Secure Boot is on: DKMS signs the module with /var/lib/dkms/mok.pub" in (
        run.stdout + run.stderr
    )


def test_an_unreachable_cuda_repository_is_named(sandbox_fleet: Fleet, tmp_path: Path) -> None:
    """For real: driver 580 on Debian needs NVIDIA's repository, which this machine cannot reach."""
    fleet = sandbox_fleet(
        os="bookworm", count=1, pretend_gpu="H100", pretend_secure_boot=True, name="nvidia-sb"
    )
    run = pyinfra(fleet, stack_file(tmp_path, None), "-y")
    output = run.stdout + run.stderr
    assert run.returncode != 0
    failure = [ln for ln in output.splitlines() if "CUDA repository unreachable" in ln]
    assert len(failure) == 1, output[-3000:]
    assert "the host cannot download from NVIDIA's CUDA repository (curl error" in failure[0]
    assert "Fix: let it reach developer.download.nvidia.com" in failure[0]
    _status, out = fleet.ssh(fleet.hosts[0].name, "dpkg -l cuda-keyring 2>&1 | grep -c '^ii'")
    assert out.strip() == "0"  # nothing trusted, nothing installed


def test_ansible_names_the_unreachable_repository_as_pyinfra_does(
    sandbox_fleet: Fleet, tmp_path: Path
) -> None:
    """The same pretend-H100 host through the Ansible roles: the same one-line diagnosis."""
    fleet = sandbox_fleet(
        os="bookworm", count=1, pretend_gpu="H100", pretend_secure_boot=True, name="nvidia-sb"
    )
    output = failing_playbook(fleet, tmp_path)
    report = json.loads((tmp_path / f"{fleet.hosts[0].name}.json").read_text())
    (failure,) = report["failures"]
    assert "CUDA repository unreachable" in failure, failure
    assert "the host cannot download from NVIDIA's CUDA repository (curl error" in failure
    assert "Fix: let it reach developer.download.nvidia.com" in failure
    assert "Traceback" not in output
    _status, out = fleet.ssh(fleet.hosts[0].name, "dpkg -l cuda-keyring 2>&1 | grep -c '^ii'")
    assert out.strip() == "0"


def test_a_host_without_a_gpu_skips_the_layer_or_fails_when_gpus_are_required(
    sandbox_fleet: Fleet, tmp_path: Path
) -> None:
    fleet = sandbox_fleet(os="bookworm", count=2, name="nvidia-no-gpu")
    changes = plan(fleet, stack_file(tmp_path, None))
    assert changes == {}
    run = pyinfra(fleet, stack_file(tmp_path, None), "--dry")
    skipped = "preflight: no NVIDIA GPU on the PCI bus: GPU stage skipped"
    assert (run.stdout + run.stderr).count(skipped) == 2
    required = stack_file(tmp_path, (REPO / "stack.yml").read_text() + "\n")
    required.write_text(required.read_text().replace("require_gpu: false", "require_gpu: true", 1))
    stopped = plan(fleet, required)
    assert stopped == {"Preflight: stop this host": sorted(h.name for h in fleet.hosts)}
