"""A systemd sandbox host (a VM stand-in) with a pretend driver upgraded under its loaded module
and Debian's real nvidia-persistenced: both front ends reboot it for real and reconnect, then
end in the named persistenced diagnosis (the daemon finds no driver); a host that does not come
back from the reboot is named within the bound."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gpurig.plan.driver import ENV_REBOOT_TIMEOUT as ENV_REBOOT
from gpurig.sandbox import doubles
from gpurig.sandbox.state import SandboxHost
from gpurig.sandbox.testing import SandboxFleet
from helpers.nvidia_runs import (
    DEBIAN_535,
    STAGE,
    Fleet,
    failing_playbook,
    made_up_lock,
    pyinfra,
    stack_file,
)

pytestmark = pytest.mark.integration


# A pretend driver on a systemd host (a VM stand-in): the module loaded at boot is OLD, and the
# driver is then upgraded under it to NEW, so the driver stage must reboot into NEW.
OLD_MODULE, NEW_MODULE = "535.247.01", "535.261.03"


def driver_upgraded_under_its_module(fleet: SandboxFleet) -> SandboxHost:
    """Debian's real nvidia-persistenced (a few seconds), the pretend driver upgraded to NEW,
    and OLD still loaded: what a host looks like after apt upgraded its driver."""
    host = fleet.hosts[0]
    status, out = fleet.ssh(
        host,
        "dpkg -s nvidia-persistenced >/dev/null 2>&1 || { sudo -n apt-get update -qq && "
        "sudo -n DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "
        "nvidia-persistenced >/dev/null; } && "
        f"echo {NEW_MODULE} | sudo -n tee {doubles.PRETEND_DRIVER_PATH} && "
        f"echo {OLD_MODULE} | sudo -n tee /sys/module/nvidia/version",
        timeout=300,
    )
    assert status == 0, out
    return host


def restarts(fleet: SandboxFleet, host: SandboxHost) -> int:
    count: int = fleet.fleet.client.containers.get(host.container).attrs["RestartCount"]
    return count


@pytest.mark.slow
def test_driver_change_reboots_a_vm_standin_and_a_failing_persistenced_is_named(
    sandbox_fleet: Fleet, tmp_path: Path
) -> None:
    """pyinfra: the reboot into the new module runs for real (the same container restarts:
    same port, host key, disk), the deploy reconnects with strict host keys and goes on; the
    real nvidia-persistenced then fails without a GPU, and the host stops with that name."""
    fleet = sandbox_fleet(
        count=1, pretend_gpu="H100", init="systemd", pretend_driver=OLD_MODULE, name="reboot"
    )
    host = driver_upgraded_under_its_module(fleet)
    before = restarts(fleet, host)
    run = pyinfra(fleet, stack_file(tmp_path, DEBIAN_535), "-y")
    output = run.stdout + run.stderr
    assert run.returncode != 0, output[-3000:]
    assert restarts(fleet, host) == before + 1
    assert fleet.ssh(host, "cat /sys/module/nvidia/version") == (0, f"{NEW_MODULE}\n")
    reboot = output.split("Reboot into the NVIDIA driver if an old module holds the GPU", 1)[1]
    assert "Success" in reboot.split("-->", 1)[0], output[-3000:]
    check = output.split("Check nvidia-smi sees every GPU", 1)[1].split("-->", 1)[0]
    assert "No changes" in check  # the new module is loaded: nvidia-smi sees the GPU
    failure = [ln for ln in output.splitlines() if "nvidia-persistenced failed" in ln]
    assert len(failure) == 1, output[-3000:]
    assert "the daemon did not start: Failed to open libnvidia-cfg.so.1" in failure[0]
    assert "Traceback" not in output
    # The unit was enabled for real, and is failed, not skipped.
    _, units = fleet.ssh(
        host, "systemctl is-enabled nvidia-persistenced; systemctl is-failed nvidia-persistenced"
    )
    assert units.split() == ["enabled", "failed"]


@pytest.mark.slow
def test_a_host_that_does_not_come_back_from_the_reboot_is_named(
    sandbox_fleet: Fleet, tmp_path: Path
) -> None:
    fleet = sandbox_fleet(
        count=1, pretend_gpu="H100", init="systemd", pretend_driver=OLD_MODULE, name="reboot"
    )
    host = driver_upgraded_under_its_module(fleet)
    container = fleet.fleet.client.containers.get(host.container)
    container.update(restart_policy={"Name": "no"})  # the reboot ends it for good
    try:
        began = time.monotonic()
        run = pyinfra(fleet, stack_file(tmp_path, DEBIAN_535), "-y", env={ENV_REBOOT: "5"})
        took = time.monotonic() - began
        output = run.stdout + run.stderr
        assert run.returncode != 0
        failure = [ln for ln in output.splitlines() if "host did not come back from reboot" in ln]
        assert len(failure) == 1, output[-3000:]
        assert f"{host.name} did not answer SSH from a new boot within 5 s" in failure[0]
        assert took < 60
    finally:
        container.update(restart_policy={"Name": "unless-stopped"})
        fleet.start(host)


@pytest.mark.slow
def test_ansible_reboots_and_names_persistenced_as_pyinfra_does(
    sandbox_fleet: Fleet, tmp_path: Path
) -> None:
    """The same host state (on the same host: the pyinfra test's changes are all undone or
    converged) through the Ansible roles: its reboot module restarts the same container (the
    plan's boot marker tells the new boot), then the same named failure."""
    fleet = sandbox_fleet(
        count=1, pretend_gpu="H100", init="systemd", pretend_driver=OLD_MODULE, name="reboot"
    )
    host = driver_upgraded_under_its_module(fleet)
    before = restarts(fleet, host)
    stack = stack_file(tmp_path, DEBIAN_535)
    (tmp_path / "lock").mkdir()
    lock_dir = made_up_lock(stack, tmp_path / "lock")
    output = failing_playbook(
        fleet,
        tmp_path / "reports",
        playbook=str(STAGE.with_suffix(".yml")),
        GPURIG_STACK=str(stack),
        GPURIG_LOCK=str(lock_dir),
    )
    assert restarts(fleet, host) == before + 1, output[-3000:]
    assert fleet.ssh(host, "cat /sys/module/nvidia/version") == (0, f"{NEW_MODULE}\n")
    failed = output.split("TASK [gpurig_nvidia : Start nvidia-persistenced at boot and now]", 1)[1]
    assert f"fatal: [{host.name}]: FAILED!" in failed, output[-3000:]
    assert (
        "nvidia-persistenced failed: the daemon did not start: Failed to open libnvidia-cfg.so.1"
        in " ".join(failed.split())
    ), failed[-3000:]
    assert "Traceback" not in output
    _, units = fleet.ssh(
        host,
        "systemctl is-enabled nvidia-persistenced; systemctl is-failed nvidia-persistenced",
    )
    assert units.split() == ["enabled", "failed"]
