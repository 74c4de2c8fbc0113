"""For real: Debian's driver packages installed on a bookworm sandbox host, whose DKMS build
cannot work (the container runs this machine's kernel; no archive has its headers). Both front
ends must end in the named diagnosis, not in dpkg's output."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from helpers.nvidia_runs import (
    DEBIAN_535,
    Fleet,
    failing_playbook,
    made_up_lock,
    pyinfra,
    stack_file,
)

pytestmark = pytest.mark.integration


@pytest.mark.slow
def test_debian_driver_install_for_real_ends_in_the_named_dkms_diagnosis(
    sandbox_fleet: Fleet, tmp_path: Path
) -> None:
    """Debian's nvidia-kernel-dkms really installs (~1 min here); its module cannot build."""
    fleet = sandbox_fleet(os="bookworm", count=1, pretend_gpu="H100", name="nvidia-real")
    name = fleet.hosts[0].name
    _, kernel = fleet.ssh(name, "uname -r")
    kernel = kernel.strip()
    began = time.monotonic()
    run = pyinfra(fleet, stack_file(tmp_path, DEBIAN_535), "-y", timeout=900)
    took = time.monotonic() - began
    print(f"real Debian driver install and diagnosis: {took:.0f} s")
    output = run.stdout + run.stderr
    assert run.returncode != 0, output[-3000:]
    assert f"DKMS build failed: no kernel headers for {kernel}" in output, output[-3000:]
    assert f"Fix: apt install linux-headers-{kernel}" in output
    assert "Unpacking" not in output  # not a wall of dpkg output
    assert "Traceback" not in output
    failure = [ln for ln in output.splitlines() if "DKMS build failed" in ln]
    assert len(failure) == 1, failure
    # The packages did install, for real, and the full log stayed on the host.
    _status, dpkg = fleet.ssh(name, "dpkg-query -W -f='${Status} ${Version}' nvidia-kernel-dkms")
    assert dpkg.startswith("install ok installed 535."), dpkg
    _status, log = fleet.ssh(name, "sudo grep -c 'Setting up' /var/log/gpurig/nvidia-driver.log")
    assert int(log.strip()) > 10, log
    assert took < 300, f"the real install took {took:.0f} s"
    # A re-run stops at the same place with the same one line: the install itself is a no-op.
    again = pyinfra(fleet, stack_file(tmp_path, DEBIAN_535), "-y", timeout=600)
    rerun = again.stdout + again.stderr
    assert f"DKMS build failed: no kernel headers for {kernel}" in rerun
    install = rerun.split("Install NVIDIA driver 535", 1)[1].split("-->", 1)[0]
    assert "No changes" in install


def test_ansible_ends_in_the_same_dkms_diagnosis(sandbox_fleet: Fleet, tmp_path: Path) -> None:
    """The Ansible roles on a fresh pretend-H100 host with Debian's 535 driver: the real
    install, then the same one-line DKMS diagnosis as the pyinfra deploy (test above)."""
    fleet = sandbox_fleet(os="bookworm", count=1, pretend_gpu="H100", name="nvidia-real-ansible")
    name = fleet.hosts[0].name
    _, kernel = fleet.ssh(name, "uname -r")
    kernel = kernel.strip()
    stack = stack_file(tmp_path, DEBIAN_535)
    (tmp_path / "lock").mkdir()
    lock_dir = made_up_lock(stack, tmp_path / "lock")
    output = failing_playbook(
        fleet, tmp_path / "reports", GPURIG_STACK=str(stack), GPURIG_LOCK=str(lock_dir)
    )
    report = json.loads((tmp_path / "reports" / f"{name}.json").read_text())
    (failure,) = report["failures"]
    assert f"DKMS build failed: no kernel headers for {kernel}" in failure, failure
    assert f"Fix: apt install linux-headers-{kernel}" in failure
    assert "Traceback" not in output
    _status, dpkg = fleet.ssh(name, "dpkg-query -W -f='${Status} ${Version}' nvidia-kernel-dkms")
    assert dpkg.startswith("install ok installed 535."), dpkg
