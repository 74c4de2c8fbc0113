"""The driver stage as pyinfra operation tests: facts in, commands out, operation by operation
(tests/helpers/driver_stage.py runs it); a converged host plans no change at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpurig.facts import gpu
from gpurig.plan import driver as driver_plan
from helpers.driver_stage import (
    DEBIAN_SOURCES,
    OS,
    UBUNTU_KERNEL,
    converged,
    fresh,
    install_command,
    run_stage,
    stack,
    verdict,
)


def test_ubuntu_fresh_host_dkms_path() -> None:
    run = run_stage(fresh("ubuntu"), "ubuntu-24.04")
    assert run.ops["Install NVIDIA driver 580 from Canonical's -server packages, DKMS modules"] == [
        install_command("nvidia-headless-580-server nvidia-utils-580-server")
    ]
    headers = run.ops[f"Install kernel headers for {UBUNTU_KERNEL}"][0]
    assert f"linux-headers-{UBUNTU_KERNEL} linux-headers-generic" in headers
    assert run.ops[f"Build the NVIDIA module for kernel {UBUNTU_KERNEL}"] == [
        f"dkms autoinstall -k {UBUNTU_KERNEL}"
    ]
    assert run.ops["Load the NVIDIA driver"] == ["modprobe nvidia 2>&1"]
    assert run.ops["Reboot into the NVIDIA driver if an old module holds the GPU"] == []
    assert run.ops["Check nvidia-smi sees every GPU"] == []  # once installed and loaded
    assert run.ops["Hold the NVIDIA driver packages"] == [
        "apt-mark hold nvidia-headless-580-server nvidia-utils-580-server"
    ]
    assert run.ops["Hold the kernel packages"] == ["apt-mark hold linux-image-generic"]
    assert run.ops["Blacklist nouveau"][1] == (
        "if command -v update-initramfs >/dev/null; then update-initramfs -u; fi"
    )
    assert (
        "Unattended-Upgrade::Package-Blacklist"
        in run.ops["Keep unattended-upgrades off the driver"][0]
    )
    assert run.ops["Enable persistence mode (nvidia-persistenced)"][1:] == [
        "systemctl daemon-reload",
        "systemctl enable nvidia-persistenced",
        driver_plan.unit_command("restart", "nvidia-persistenced"),
    ]
    assert not any("cuda" in name.lower() for name in run.ops)


def test_ubuntu_secure_boot_uses_signed_precompiled_modules() -> None:
    run = run_stage(fresh("ubuntu", secure_boot=True), "ubuntu-22.04")
    name = "Install NVIDIA driver 580 from Canonical's -server packages, signed precompiled modules"
    assert run.ops[name] == [
        install_command(
            "nvidia-headless-no-dkms-580-server nvidia-utils-580-server "
            f"linux-modules-nvidia-580-server-{UBUNTU_KERNEL} "
            "linux-modules-nvidia-580-server-generic"
        )
    ]
    assert not [n for n in run.ops if n.startswith(("Install kernel headers", "Build the"))]
    assert "Check the DKMS signing key is enrolled" not in run.ops


def test_debian_archive_branch() -> None:
    run = run_stage(fresh(), "debian-12", stack(535, ["cu126", "cpu"]), verdict(variant="cu126"))
    assert run.ops["Enable Debian's contrib and non-free"] == [
        "mkdir -p /etc/apt/sources.list.d && printf '%s' '# Written by gpurig: Debian'\"'\"'s "
        "NVIDIA driver lives in non-free.\ndeb http://deb.debian.org/debian bookworm contrib "
        "non-free non-free-firmware\ndeb http://deb.debian.org/debian-security bookworm-security "
        "contrib non-free non-free-firmware\n' > /etc/apt/sources.list.d/gpurig-debian-nonfree.list"
        " && chmod 644 /etc/apt/sources.list.d/gpurig-debian-nonfree.list"
    ]
    assert run.ops["Install NVIDIA driver 535 from Debian's non-free archive, DKMS modules"] == [
        install_command("nvidia-kernel-dkms nvidia-smi libcuda1 nvidia-persistenced")
    ]
    dropin = run.ops["Enable persistence mode (nvidia-persistenced)"][0]
    assert "--user nvpd --persistence-mode" in dropin
    assert not [n for n in run.ops if "CUDA repository" in n]


def test_debian_nonfree_already_enabled_is_a_noop() -> None:
    sources = [{**DEBIAN_SOURCES[0], "components": ["main", "contrib", "non-free"]}]
    run = run_stage(fresh(), "debian-12", stack(535, ["cu126"]), verdict(variant="cu126"),
                    sources=sources)  # fmt: skip
    # The sources have it: the plan writes no list, and no operation touches one.
    assert "Enable Debian's contrib and non-free" not in run.ops
    assert not any(gpu.NONFREE_LIST in " ".join(commands) for commands in run.ops.values())


def test_debian_newer_branch_comes_from_the_cuda_repository_key_checked() -> None:
    run = run_stage(fresh(), "debian-12")
    name = "Add NVIDIA's CUDA repository (key 3BF863CC checked)"
    script = run.ops[name][0]
    url = "https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/"
    assert f'curl -fsSL --retry 3 -o "$tmp/keyring.deb" {url}cuda-keyring_1.1-1_all.deb' in (script)
    assert f'if [ "$fprs" != {driver_plan.CUDA_KEY_FINGERPRINT} ]' in script
    assert script.index("gpg --show-keys") < script.index("dpkg -i")  # checked before trusted
    assert run.ops["Install NVIDIA driver 580 from NVIDIA's CUDA repository, DKMS modules"] == [
        install_command("cuda-drivers-580")
    ]
    assert list(run.ops).index(name) < list(run.ops).index(
        "Install NVIDIA driver 580 from NVIDIA's CUDA repository, DKMS modules"
    )
    trixie = run_stage(fresh(), "debian-13")
    assert "/repos/debian13/x86_64/" in trixie.ops[name][0]


def test_debian_secure_boot_checks_the_dkms_key() -> None:
    run = run_stage(fresh(secure_boot=True), "debian-12")
    stop = run.ops["Check the DKMS signing key is enrolled"]
    assert len(stop) == 1
    assert stop[0].startswith("Stop(Secure Boot is on and the module is ")
    assert "mokutil --import /var/lib/dkms/mok.pub" in stop[0]
    enrolled = run_stage(fresh(secure_boot=True, dkms_mok_enrolled=True), "debian-12")
    assert enrolled.ops["Check the DKMS signing key is enrolled"] == []


@pytest.mark.parametrize("os_name", list(OS))
def test_a_converged_host_changes_nothing(os_name: str) -> None:
    os_id, os_version, _ = OS[os_name]
    the_stack = stack(DEBIAN_BRANCH.get(os_name, 580), ["cu126", "cu130", "cpu"])
    plan = driver_plan.plan_driver(os_id, os_version, fresh(os_id), the_stack.nvidia)
    done = converged(plan)
    run = run_stage(done, os_name, the_stack, verdict(install=False))
    assert run.changing == []
    assert all(commands == [] for commands in run.ops.values()), run.ops
    assert "Install NVIDIA" not in " ".join(run.ops)  # a good driver is left alone
    assert "Hold the NVIDIA driver packages" in run.ops  # and still held


DEBIAN_BRANCH = {"debian-12": 535, "debian-13": 550}


def test_hosts_without_a_gpu_get_no_operations() -> None:
    run = run_stage(fresh(gpus=[]), "debian-12")
    assert run.ops == {}


def test_drift_lock_can_be_released_piece_by_piece() -> None:
    plan = driver_plan.plan_driver("ubuntu", "24.04", fresh("ubuntu"), stack().nvidia)
    done = converged(plan)
    run = run_stage(done, "ubuntu-24.04", stack(hold_packages=False), verdict(install=False))
    assert run.ops["Release driver holds"] == [
        "apt-mark unhold nvidia-headless-580-server nvidia-utils-580-server"
    ]
    assert run.ops["Release kernel holds"] == ["apt-mark unhold linux-image-generic"]
    assert run.ops["Let unattended-upgrades upgrade the driver"] == [f"rm -f {gpu.UNATTENDED_CONF}"]
    kernel_only = run_stage(
        done, "ubuntu-24.04", stack(), verdict(install=False),
        data={"gpurig_nvidia_hold_kernel": False},
    )  # fmt: skip
    assert kernel_only.ops["Release kernel holds"] == ["apt-mark unhold linux-image-generic"]
    assert kernel_only.ops["Hold the NVIDIA driver packages"] == []


@pytest.mark.parametrize(
    ("os_name", "variant", "toolkit", "repo"),
    [
        ("ubuntu-24.04", "cu130", "cuda-toolkit-13-0", True),
        ("debian-12", "cu126", "cuda-toolkit-12-6", True),
        ("debian-12", "cu118", "nvidia-cuda-toolkit", False),
    ],
)
def test_cuda_toolkit_only_when_asked_and_from_the_matching_source(
    os_name: str, variant: str, toolkit: str, repo: bool
) -> None:
    os_id = OS[os_name][0]
    branch = 535 if os_name == "debian-12" else 580
    the_stack = stack(branch, [variant, "cpu"], cuda_toolkit=True)
    run = run_stage(fresh(os_id), os_name, the_stack, verdict(variant=variant))
    installs = [n for n in run.ops if n.startswith("Install nvcc")]
    assert len(installs) == 1
    assert run.ops[installs[0]] == [install_command(toolkit, "cuda-toolkit")]
    assert any("CUDA repository" in n for n in run.ops) is repo
    assert not [n for n in run_stage(fresh(os_id), os_name).ops if n.startswith("Install nvcc")]


def test_the_test_deploy_file_exists() -> None:
    assert (Path(__file__).parents[1] / "integration/deploys/nvidia_stage.py").exists()
