"""The driver stage when the loaded module is not the installed driver: the reboot, where the
host can take one, and what the report says where it cannot; persistence mode's daemon."""

from __future__ import annotations

from gpurig.plan import driver as driver_plan
from helpers.driver_stage import converged, fresh, run_stage, stack, verdict

REBOOT_COMMAND = "( sleep 1 && systemctl reboot ) </dev/null >/dev/null 2>&1 &"


def test_driver_too_old_is_replaced_and_the_host_rebooted() -> None:
    old = fresh(
        "ubuntu",
        driver_version="535.183.01",
        modules=["nvidia"],
        packages={**fresh("ubuntu").packages, "libnvidia-compute-535-server": "535.183.01-0"},
    )
    run = run_stage(old, "ubuntu-24.04")
    reboot = run.ops["Reboot into the NVIDIA driver if an old module holds the GPU"]
    assert REBOOT_COMMAND in reboot
    assert run.ops["Load the NVIDIA driver"] == []  # the loaded module is replaced by a reboot
    # When it runs: the packages are the new driver, the old module still loaded.
    plan = driver_plan.plan_driver("ubuntu", "24.04", old, stack().nvidia)
    after = converged(plan, driver_version="535.183.01")
    executed = run.execute(after)
    assert (
        REBOOT_COMMAND in executed["Reboot into the NVIDIA driver if an old module holds the GPU"]
    )


def test_no_reboot_where_the_host_cannot_and_the_report_says_so() -> None:
    old = fresh("ubuntu", systemd=False, container=True, modules=["nouveau"])
    the_verdict = verdict()
    run = run_stage(old, "ubuntu-24.04", the_verdict=the_verdict)
    assert run.ops["Reboot into the NVIDIA driver if an old module holds the GPU"] == []
    assert run.ops["Enable persistence mode (nvidia-persistenced)"] == []
    executed = run.execute(old)
    assert executed["Check nvidia-smi sees every GPU"] == []  # waits for the reboot
    assert any(
        n.startswith("reboot needed (nouveau holds the GPU): gpurig cannot reboot this host")
        for n in the_verdict.notes
    )
    assert "no systemd: persistence mode not set (nvidia-persistenced needs it)" in (
        the_verdict.notes
    )


def test_a_vm_standin_reboots_into_the_installed_module_a_container_cannot() -> None:
    """The sandbox's systemd hosts are containers marked as VM stand-ins: their driver change
    reboots as a VM's does. The module a boot would load is modinfo's (as the Ansible role's
    script reads it), here without any driver package."""
    upgraded = {
        "driver_version": "535.247.01",
        "modules": ["nvidia"],
        "module_version": "535.261.03",
        "container": True,
    }
    reboot_op = "Reboot into the NVIDIA driver if an old module holds the GPU"
    standin = fresh(**upgraded, vm_standin=True)
    run = run_stage(standin, "debian-12", stack(535, ["cu126"]), verdict(False, "cu126"))
    assert REBOOT_COMMAND in run.ops[reboot_op]
    the_verdict = verdict(False, "cu126")
    container = fresh(**upgraded)
    run = run_stage(container, "debian-12", stack(535, ["cu126"]), the_verdict)
    assert run.ops[reboot_op] == []
    run.execute(container)
    assert (
        "reboot needed (the loaded module is 535.247.01, the installed driver 535.261.03): "
        "gpurig cannot reboot this host (it is a container)"
    ) in the_verdict.notes


def test_persistence_needs_the_daemon() -> None:
    plan = driver_plan.plan_driver("ubuntu", "24.04", fresh("ubuntu"), stack().nvidia)
    no_daemon = converged(plan, persistenced=("inactive", ""))
    the_verdict = verdict(install=False)
    run = run_stage(no_daemon, "ubuntu-24.04", the_verdict=the_verdict)
    assert run.ops["Enable persistence mode (nvidia-persistenced)"] == []
    run.execute(no_daemon)
    assert "nvidia-persistenced is not installed: persistence mode not set" in the_verdict.notes


def test_reboot_not_allowed_is_reported() -> None:
    old = fresh("ubuntu", modules=["nouveau"])
    the_verdict = verdict()
    run = run_stage(old, "ubuntu-24.04", stack(allow_reboot=False), the_verdict)
    run.execute(old)
    assert "reboot needed (nouveau holds the GPU): nvidia.allow_reboot is false" in (
        the_verdict.notes
    )
