"""The DCGM stage's plan (stack.yml `dcgm:`): NVIDIA's Data Center GPU Manager on hosts with
datacenter GPUs, its host engine running, and `dcgmi diag` as a stage of the smoke test.

DCGM 4 comes from NVIDIA's CUDA repository in parts per CUDA major: `-core`, `-cuda<N>` (the
diagnostics for that CUDA), and the proprietary plugins `-proprietary` and `-proprietary-cuda<N>`
that NVIDIA's guide brings in as recommends (installed here by name: gpurig installs without
recommends). N is the CUDA major the driver runs: 13 from branch 580, 12 from 525. The unit
`nvidia-dcgm` runs nv-hostengine. Consumer and workstation cards get a note instead (DCGM's
diagnostics are for datacenter GPUs).
"""

from __future__ import annotations

from gpurig.model.host import HostFacts
from gpurig.plan.driver import Driver, cuda_keyring_script, logged
from gpurig.plan.steps import Script, Service, Step
from gpurig.plan.system import installed
from gpurig.spec import Stack

UNIT = "nvidia-dcgm"
# Driver branch -> the CUDA major it runs, newest first (CUDA 13: 580, CUDA 12: 525).
CUDA_MAJOR_OF_BRANCH = ((580, 13), (525, 12))
KEYRING_INSTALLED = "dpkg-query -W -f='${Status}' cuda-keyring 2>/dev/null | grep -q 'ok installed'"


def cuda_major(branch: int) -> int | None:
    return next((major for floor, major in CUDA_MAJOR_OF_BRANCH if branch >= floor), None)


def packages(major: int) -> list[str]:
    base = "datacenter-gpu-manager-4"
    return [f"{base}-core", f"{base}-cuda{major}", f"{base}-proprietary",
            f"{base}-proprietary-cuda{major}"]  # fmt: skip


def applies(stack: Stack, facts: HostFacts) -> str | None:
    """Why the stage does nothing on this host, or None when it runs."""
    if not stack.dcgm.enabled:
        return "dcgm.enabled is false"
    if not facts.gpus:
        return "no NVIDIA GPU"
    if not any(gpu.datacenter for gpu in facts.gpus):
        names = ", ".join(sorted({gpu.name for gpu in facts.gpus}))
        return f"DCGM skipped: {names} is not a datacenter GPU"
    if not facts.systemd:
        return "DCGM skipped: no systemd to run nv-hostengine"
    return None


def driver_branch(facts: HostFacts, driver: Driver) -> int:
    """The branch the host runs after the driver stage: the one it installs, else its own."""
    if driver.install or not facts.driver_version:
        return driver.plan.branch
    return int(facts.driver_version.split(".", 1)[0])


def steps(stack: Stack, facts: HostFacts, driver: Driver | None) -> tuple[list[Step], list[str]]:
    """The stage's steps, and the notes that say why there are none."""
    why = applies(stack, facts)
    if why is not None or driver is None:
        notes = [why] if why and stack.dcgm.enabled else []
        return [], notes
    branch = driver_branch(facts, driver)
    major = cuda_major(branch)
    if major is None:
        return [], [f"DCGM skipped: driver {branch} is older than DCGM 4 supports (525)"]
    wanted = packages(major)
    repository = cuda_keyring_script(driver.plan)
    return [
        Script(
            "dcgm.cuda_repository",
            "Add NVIDIA's CUDA repository for DCGM (key checked)",
            script=logged(repository, "dcgm-repository"),
            unless=KEYRING_INSTALLED,
        ),
        installed("dcgm.packages", f"Install DCGM 4 for CUDA {major}", wanted),
        Service("dcgm.hostengine", "Run the DCGM host engine (nv-hostengine)", unit=UNIT),
    ], []


def smoke_args(stack: Stack, facts: HostFacts) -> list[str]:
    """bloomkit smoke's DCGM stage, on hosts the stage runs on."""
    if applies(stack, facts) is not None:
        return []
    return ["--dcgm-diag", str(stack.dcgm.diag_level)]
