"""The driver stage as pyinfra operation tests: facts in, commands out (pyinfra-testing style).

Each case injects the GPU fact (and the others the stage reads) into a real pyinfra State,
runs `nvidia_driver` to make the plan, and compares each operation's commands; a converged
host must plan no change at all. Execution-time behaviour (facts read again after the install)
is checked by running the operations' generators again with the state the install left.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from pyinfra.api import Config, Inventory, State
from pyinfra.api.command import StringCommand
from pyinfra.api.deploy import add_deploy
from pyinfra.api.host import Host
from pyinfra.connectors.util import CommandOutput, OutputLine
from pyinfra.context import ctx_host, ctx_state
from pyinfra.facts.apt import AptSources
from pyinfra.facts.server import LinuxDistribution

from gpurig import diagnose, spec
from gpurig.deploys import FACTS_KEY
from gpurig.deploys import nvidia as stage
from gpurig.diagnose import Context
from gpurig.errors import GpurigError
from gpurig.facts import gpu
from gpurig.facts.gpu import GpuHost
from gpurig.lock import Target
from gpurig.model.host import GpuState, HostFacts, SmiGpu, pci_gpu
from gpurig.operations import control, diagnosed
from gpurig.plan import HostPlan
from gpurig.plan import driver as driver_plan
from gpurig.preflight import Verdict

H100 = pci_gpu("0000:3b:00.0", "2330")
UBUNTU_KERNEL = "6.8.0-45-generic"
DEBIAN_KERNEL = "6.1.0-25-cloud-amd64"
PREFIX = "NVIDIA driver | "
APT = "DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=120 -o Dpkg::Use-Pty=0"


def stack(branch: int = 580, variants: list[str] | None = None, **nvidia: object) -> spec.Stack:
    return spec.Stack.model_validate(
        {
            "python": ["3.11", "3.12", "3.13"],
            "torch": {"version": "2.13.0", "variants": variants or ["cu130", "cpu"]},
            "nvidia": {"driver_branch": branch, **nvidia},
        }
    )


def verdict(install: bool = True, variant: str = "cu130") -> Verdict:
    target = Target(f"{variant}-cp311", variant, "3.11", "x.txt", "", "", None, [], {})
    return Verdict(target=target, python="3.11", install_driver=install)


def fresh(os_id: str = "debian", **fields: Any) -> GpuState:
    """A GPU host as a cloud image boots: no driver, nothing held, systemd running."""
    kernel = UBUNTU_KERNEL if os_id == "ubuntu" else DEBIAN_KERNEL
    meta = "linux-image-generic" if os_id == "ubuntu" else "linux-image-cloud-amd64"
    base: dict[str, Any] = {
        "gpus": [H100],
        "secure_boot": False,
        "kernel": kernel,
        "kernel_headers": False,
        "packages": {meta: "1", "unattended-upgrades": "2.9"},
        "systemd": True,
    }
    return GpuState(**{**base, **fields})


def converged(plan: driver_plan.DriverPlan, **fields: Any) -> GpuState:
    """The host after a good run: driver loaded, everything held and written."""
    before = fresh(plan.os_name.split("-")[0])
    dropin = driver_plan.persistenced_dropin(plan.persistenced_user)
    ok = "installed"
    packages = {**before.packages, **dict.fromkeys(plan.packages, "580.95.05-1")}
    packages["libcuda1" if plan.source != "ubuntu" else "libnvidia-compute-580-server"] = (
        "580.95.05-1"
    )
    base: dict[str, Any] = {
        "driver_version": "580.95.05",
        "smi_rc": 0,
        "smi_gpus": [SmiGpu(H100.slot, "NVIDIA H100 80GB HBM3", "580.95.05", "9.0")],
        "modules": ["nvidia", "nvidia_uvm"],
        "kernel_headers": True,
        "module_version": "580.95.05",
        "packages": packages,
        "held": sorted({*plan.packages, *plan.kernel_holds}),
        "dkms": [] if plan.precompiled else [f"nvidia/580.95.05, {before.kernel}, x86_64: {ok}"],
        "files": {
            gpu.NOUVEAU_CONF: driver_plan.sha256(driver_plan.NOUVEAU_BLACKLIST),
            gpu.UNATTENDED_CONF: driver_plan.sha256(driver_plan.unattended_upgrades_file(True)),
            gpu.PERSISTENCED_DROPIN: driver_plan.sha256(dropin),
        },
        "persistenced": ("active", "enabled"),
    }
    return replace(before, **{**base, **fields})


OS = {
    "ubuntu-22.04": ("ubuntu", "22.04", "3.10"),
    "ubuntu-24.04": ("ubuntu", "24.04", "3.12"),
    "debian-12": ("debian", "12", "3.11"),
    "debian-13": ("debian", "13", "3.13"),
}
DEBIAN_SOURCES = [
    {"type": "deb", "url": "http://deb.debian.org/debian", "distribution": "bookworm",
     "components": ["main"], "options": {}},
    {"type": "deb", "url": "http://deb.debian.org/debian-security",
     "distribution": "bookworm-security", "components": ["main"], "options": {}},
]  # fmt: skip


@dataclass
class Run:
    """A planned stage: op name -> commands, and the changes the plan shows."""

    state: State
    host: Host
    facts: dict[type, Any]
    ops: dict[str, list[str]] = field(default_factory=dict)
    changing: list[str] = field(default_factory=list)
    hashes: dict[str, str] = field(default_factory=dict)

    def execute(self, after: GpuState) -> dict[str, list[str]]:
        """Each operation's commands when it runs, reading `after` (the post-install state)."""
        self.facts[GpuHost] = after
        self.state.is_executing = True
        try:
            return {name: self._commands(h) for name, h in self.hashes.items()}
        finally:
            self.state.is_executing = False

    def _commands(self, op_hash: str) -> list[str]:
        with ctx_state.use(self.state), ctx_host.use(self.host):
            data = self.state.ops[self.host][op_hash]
            return [text(c) for c in data.command_generator()]


def text(command: Any) -> str:
    return str(command) if isinstance(command, StringCommand) else repr(command)


def run_stage(
    state: GpuState,
    os_name: str = "debian-12",
    the_stack: spec.Stack | None = None,
    the_verdict: Verdict | None = None,
    data: dict[str, Any] | None = None,
    sources: list[dict[str, Any]] | None = None,
) -> Run:
    os_id, os_version, python = OS[os_name]
    inventory = Inventory((["gpu-1"], {}))
    pyinfra_state = State(inventory, Config())
    host = inventory.get_host("gpu-1")
    facts: dict[type, Any] = {
        GpuHost: state,
        AptSources: DEBIAN_SOURCES if sources is None else sources,
        LinuxDistribution: {"release_meta": {"ID": os_id, "VERSION_ID": os_version}},
    }

    def get_fact(cls: type, *args: Any, **kwargs: Any) -> Any:
        return facts[cls]

    host.get_fact = get_fact  # type: ignore[method-assign]
    host_facts = HostFacts(os_id, os_version, "x86_64", python, "2.36", 100.0, 64.0, True, True)
    for key, value in {FACTS_KEY: host_facts, **(data or {})}.items():
        setattr(host.data, key, value)
    pyinfra_state.activate_host(host)
    the_verdict = the_verdict or verdict()
    knobs = {k: v for k, v in (data or {}).items() if k.startswith("gpurig_nvidia_")}
    the_stack = the_stack or stack()
    # As preflight plans it: a host with no GPU on the PCI bus gets no driver section.
    section = (
        driver_plan.driver_section(
            the_stack, host_facts, state, the_verdict, facts[AptSources], knobs
        )
        if state.gpus
        else None
    )
    plan = HostPlan(the_stack, host_facts, the_verdict, driver=section)
    add_deploy(pyinfra_state, stage.nvidia_driver, plan)
    result = Run(pyinfra_state, host, facts)
    for op_hash in pyinfra_state.get_op_order():
        name = sorted(pyinfra_state.op_meta[op_hash].names)[0].removeprefix(PREFIX)
        result.hashes[name] = op_hash
        result.ops[name] = result._commands(op_hash)
        if pyinfra_state.ops[host][op_hash].operation_meta._maybe_is_change:
            result.changing.append(name)
    return result


def install_command(packages: str, log: str = "nvidia-driver") -> str:
    return driver_plan.logged(
        f"{APT} update && {APT} install -y --no-install-recommends -- {packages}", log
    )


# Plans for each supported OS, Secure Boot on and off.


@pytest.mark.parametrize(
    ("os_name", "secure_boot", "branch", "source", "packages", "precompiled", "mok"),
    [
        ("ubuntu-24.04", False, 580, "ubuntu",
         ["nvidia-headless-580-server", "nvidia-utils-580-server"], False, False),
        ("ubuntu-22.04", False, 570, "ubuntu",
         ["nvidia-headless-570-server", "nvidia-utils-570-server"], False, False),
        ("ubuntu-24.04", True, 580, "ubuntu",
         ["nvidia-headless-no-dkms-580-server", "nvidia-utils-580-server",
          f"linux-modules-nvidia-580-server-{UBUNTU_KERNEL}",
          "linux-modules-nvidia-580-server-generic"], True, False),
        ("ubuntu-22.04", None, 580, "ubuntu",
         ["nvidia-headless-no-dkms-580-server", "nvidia-utils-580-server",
          f"linux-modules-nvidia-580-server-{UBUNTU_KERNEL}",
          "linux-modules-nvidia-580-server-generic"], True, False),
        ("debian-12", False, 535, "debian",
         ["nvidia-kernel-dkms", "nvidia-smi", "libcuda1", "nvidia-persistenced"], False, False),
        ("debian-13", True, 550, "debian",
         ["nvidia-kernel-dkms", "nvidia-smi", "libcuda1", "nvidia-persistenced"], False, True),
        ("debian-12", False, 580, "cuda", ["cuda-drivers-580"], False, False),
        ("debian-13", True, 580, "cuda", ["cuda-drivers-580"], False, True),
    ],
)  # fmt: skip
def test_plan_per_os_and_secure_boot(
    os_name: str,
    secure_boot: bool | None,
    branch: int,
    source: str,
    packages: list[str],
    precompiled: bool,
    mok: bool,
) -> None:
    os_id, os_version, _ = OS[os_name]
    state = fresh(os_id, secure_boot=secure_boot)
    plan = driver_plan.plan_driver(os_id, os_version, state, stack(branch).nvidia)
    assert (plan.source, plan.packages, plan.precompiled, plan.mok) == (
        source,
        packages,
        precompiled,
        mok,
    )
    assert plan.headers == ([] if precompiled else [f"linux-headers-{state.kernel}", *(
        ["linux-headers-generic"] if os_id == "ubuntu" else ["linux-headers-cloud-amd64"]
    )])  # fmt: skip
    assert plan.kernel_holds == sorted(fresh(os_id).packages.keys() - {"unattended-upgrades"})


def test_open_modules_change_the_package_names() -> None:
    open_stack = stack(open_kernel_modules=True).nvidia
    ubuntu = driver_plan.plan_driver("ubuntu", "24.04", fresh("ubuntu"), open_stack)
    assert ubuntu.packages == ["nvidia-headless-580-server-open", "nvidia-utils-580-server"]
    signed = driver_plan.plan_driver(
        "ubuntu", "24.04", fresh("ubuntu", secure_boot=True), open_stack
    )
    assert f"linux-modules-nvidia-580-server-open-{UBUNTU_KERNEL}" in signed.packages
    debian = driver_plan.plan_driver(
        "debian", "12", fresh(), stack(535, open_kernel_modules=True).nvidia
    )
    assert debian.packages[0] == "nvidia-open-kernel-dkms"
    cuda = driver_plan.plan_driver("debian", "12", fresh(), open_stack)
    assert cuda.packages == ["cuda-drivers-580", "nvidia-kernel-open-dkms"]


def test_unsupported_os_is_refused() -> None:
    with pytest.raises(GpurigError, match=r"Ubuntu 22\.04/24\.04 and Debian 12/13, not rocky-9"):
        driver_plan.plan_driver("rocky", "9", fresh(), stack().nvidia)
    # The section the deploy renders is refused the same way (plan.build makes it a problem).
    rocky = HostFacts("rocky", "9", "x86_64", "3.11", "2.36", 100.0, 64.0, True, True)
    with pytest.raises(GpurigError, match=r"Ubuntu 22\.04/24\.04 and Debian 12/13, not rocky-9"):
        driver_plan.driver_section(stack(), rocky, fresh(), verdict(), DEBIAN_SOURCES, {})


# The plan, operation by operation.


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


def test_logged_commands_keep_the_full_log_on_the_host() -> None:
    command = driver_plan.logged("apt-get install -y x", "nvidia-driver")
    assert command.startswith("mkdir -p /var/log/gpurig && ( apt-get install -y x ) >")
    assert "/var/log/gpurig/nvidia-driver.log 2>&1; rc=$?;" in command
    assert command.endswith("| tail -n 60; tail -n 5 /var/log/gpurig/nvidia-driver.log; exit $rc")


def test_the_test_deploy_file_exists() -> None:
    assert (Path(__file__).parents[1] / "integration/deploys/nvidia_stage.py").exists()


@pytest.mark.skipif(shutil.which("gpg") is None, reason="needs gpg")
def test_the_keyring_check_sees_every_primary_key_in_every_key_file(tmp_path: Path) -> None:
    """The check the CUDA keyring script runs, on real keys: a subkey is its primary key's,
    a second key anywhere in the package (another file, another folder, armored) is seen."""
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    env = {**os.environ, "GNUPGHOME": str(home)}

    def gpg(*args: str) -> str:
        done = subprocess.run(
            ["gpg", "--batch", "--passphrase", "", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return done.stdout

    def fingerprint(uid: str) -> str:
        out = gpg("--with-colons", "--list-keys", uid)
        return next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr"))

    gpg("--quick-gen-key", "nvidia <n@example.com>", "ed25519", "default", "never")
    nvidia = fingerprint("n@example.com")
    gpg("--quick-add-key", nvidia, "cv25519", "encr", "never")  # a subkey of the same key
    package = tmp_path / "x"
    (package / "usr/share/keyrings").mkdir(parents=True)
    keyring = package / "usr/share/keyrings/cuda-archive-keyring.gpg"
    keyring.write_bytes(subprocess.run(
        ["gpg", "--export", nvidia], env=env, capture_output=True, check=True
    ).stdout)  # fmt: skip
    check = driver_plan.key_fingerprints(shlex.quote(str(package)))
    seen = subprocess.run(["sh", "-c", check], capture_output=True, text=True, timeout=60)
    assert seen.stdout.split() == [nvidia]  # one key: its subkey is not another signer

    gpg("--quick-gen-key", "other <o@example.com>", "ed25519", "default", "never")
    other = fingerprint("o@example.com")
    hidden = package / "etc/apt/trusted.gpg.d"
    hidden.mkdir(parents=True)
    (hidden / "extra.asc").write_text(gpg("--armor", "--export", other))
    seen = subprocess.run(["sh", "-c", check], capture_output=True, text=True, timeout=60)
    assert seen.stdout.split() == sorted([nvidia, other])  # the script then refuses
