"""Preflight verdicts: can this host take this stack, and which locked target does it get?

Pure functions of facts gathered before any change. The pyinfra deploy, `gpurig preflight`
and the Ansible role (through a module) all call `evaluate`, so every front end refuses the
same hosts for the same reasons. Each problem names its fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from packaging.version import InvalidVersion, Version

from gpurig import compat, diagnose
from gpurig.diagnose import Diagnosis
from gpurig.lock import Lock, Target
from gpurig.model.host import Architecture, HostFacts, PciGpu, gpu_table, has_kernels, sm_list
from gpurig.spec import Stack

SUPPORTED_OS = {("debian", "12"), ("debian", "13"), ("ubuntu", "22.04"), ("ubuntu", "24.04")}
SUPPORTED_ARCH = {"x86_64"}
MIN_MEMORY_GB = 2.0
# Headroom beyond the venv itself: the uv cache and a second venv during an atomic swap.
DISK_HEADROOM = 2.5


@dataclass
class Verdict:
    problems: list[str] = field(default_factory=list)  # each stops the host, with its fix
    notes: list[str] = field(default_factory=list)  # said in the report, stop nothing
    target: Target | None = None
    python: str | None = None  # the Python version the venv will use
    uv_python: bool = False  # True: the distribution's python3 does not fit; uv installs one
    install_driver: bool = False  # the nvidia stage has work to do
    diagnoses: list[Diagnosis] = field(default_factory=list)  # named failures seen on the host

    @property
    def ok(self) -> bool:
        return not self.problems


def _venv_size_gb(target: Target) -> float:
    # CUDA builds pull ~4.3 GB of nvidia-* wheels; a CPU venv is ~1 GB.
    return 5.5 if target.variant != "cpu" else 1.2


def choose_python(facts: HostFacts, stack: Stack, verdict: Verdict) -> None:
    if facts.python3 in stack.python:
        verdict.python = facts.python3
        return
    verdict.python = stack.python[0]
    verdict.uv_python = True
    have = f"python3 is {facts.python3}" if facts.python3 else "there is no python3"
    verdict.notes.append(f"{have}, not in stack.yml's {stack.python}: uv installs {verdict.python}")


def _missing_kernels(gpus: list[PciGpu], stack: Stack, variant: str) -> list[PciGpu]:
    """GPUs (of known compute capability) the variant's torch ships no kernels for (none when
    the table does not know the build: compat.problems reports that)."""
    offered = compat.table().torch.get(stack.torch.version_of(variant), {}).get("variants", {})
    if variant not in offered:
        return []
    arches = list(offered[variant])
    return [
        g for g in gpus if g.compute_capability and not has_kernels(g.compute_capability, arches)
    ]


def _fitting_variants(gpus: list[PciGpu], stack: Stack, driver: str | None) -> list[str]:
    """CUDA variants torch offers with kernels for every GPU here (and, given a driver, that it
    runs), oldest first."""
    table = compat.table()
    offered = [
        v
        for v in table.cuda
        if v in table.torch.get(stack.torch.version_of(v), {}).get("variants", {})
    ]
    return [
        v
        for v in offered
        if not _missing_kernels(gpus, stack, v)
        and (driver is None or compat.driver_runs(driver, v))
    ]


def _choose(variant: str, stack: Stack) -> str:
    listed = "" if variant in stack.torch.variants else " (add it to torch.variants)"
    return f"choose the {variant} variant{listed}"


def choose_target(facts: HostFacts, stack: Stack, locked: Lock, verdict: Verdict) -> None:
    """GPU hosts: first CUDA variant the (expected) driver runs, preferring one with kernels for
    every GPU on the host; GPU-less hosts: cpu."""
    assert verdict.python is not None
    python = verdict.python
    cuda = [v for v in stack.torch.variants if v != "cpu"]
    if facts.gpus:
        driver = facts.driver_version
        too_old = driver is None or not compat.variants_for_driver(stack, driver)
        if cuda and too_old and stack.nvidia.install_driver:
            verdict.install_driver = True
            driver = str(stack.nvidia.driver_branch)
        usable = compat.variants_for_driver(stack, driver) if driver else []
        fitting = [v for v in usable if not _missing_kernels(facts.gpus, stack, v)]
        for variant in [*fitting, *(v for v in usable if v not in fitting)]:
            target = locked.target(variant, python)
            if target:
                verdict.target = target
                return
        if not cuda:
            verdict.problems.append(
                "the host has NVIDIA GPUs but torch.variants lists no CUDA variant: add one "
                "(e.g. cu130) to use them"
            )
        elif driver is None:
            verdict.problems.append(
                "NVIDIA GPU present but no driver loaded and nvidia.install_driver is false: "
                f"install driver {stack.nvidia.driver_branch} or set nvidia.install_driver: true"
            )
        elif not usable:
            verdict.problems.append(str(_too_old(facts, stack, driver, cuda[0], verdict)))
        else:
            verdict.problems.append(_no_lock(usable, python, locked))
        return
    if stack.nvidia.require_gpu:
        verdict.problems.append(
            "no NVIDIA GPU on the PCI bus, and nvidia.require_gpu is true: use a GPU host "
            "or set nvidia.require_gpu: false"
        )
        return
    verdict.notes.append("no NVIDIA GPU on the PCI bus: GPU stage skipped")
    # A CUDA build runs on a CPU too; take one only when no CPU build is locked for this Python.
    for variant in ["cpu", *cuda] if "cpu" in stack.torch.variants else cuda:
        target = locked.target(variant, python)
        if target:
            if variant != "cpu":
                verdict.notes.append(
                    f"no cpu build locked for Python {python}: installs the {variant} build, "
                    "which runs on the CPU (larger download)"
                )
            verdict.target = target
            return
    verdict.problems.append(_no_lock(stack.torch.variants, python, locked))


def _too_old(
    facts: HostFacts, stack: Stack, driver: str, variant: str, verdict: Verdict
) -> Diagnosis:
    """The loaded driver runs none of the spec's CUDA variants and gpurig may not replace it."""
    floor = compat.min_driver(variant)
    assert floor is not None
    older = _fitting_variants(facts.gpus, stack, driver)
    fixes = [_choose(older[-1], stack)] if older else []
    fixes.append(f"set driver branch {floor.major} (nvidia.driver_branch, nvidia.install_driver)")
    found = diagnose.too_old(
        driver,
        f"torch {stack.torch.version_of(variant)} {variant}",
        compat.cuda_version(variant) or "",
        compat.min_driver_text(variant),
        ", or ".join(fixes),
    )
    verdict.diagnoses.append(found)
    return found


def _groups(gpus: list[PciGpu]) -> dict[str, list[PciGpu]]:
    """'8x NVIDIA H100 SXM5 80GB' -> its GPUs: one line per kind, not per slot."""
    kinds: dict[str, list[PciGpu]] = {}
    for gpu in gpus:
        kinds.setdefault(gpu.name, []).append(gpu)
    return {(f"{len(v)}x {k}" if len(v) > 1 else k): v for k, v in kinds.items()}


def check_torch_build(facts: HostFacts, stack: Stack, verdict: Verdict) -> None:
    """The host against the torch build: Python, glibc, and each GPU's compute capability."""
    target_variant = verdict.target.variant if verdict.target else None
    variant = target_variant or next((v for v in stack.torch.variants if v != "cpu"), None)
    version = stack.torch.version_of(variant) if variant else stack.torch.version
    row = compat.table().torch.get(version)
    if row is None:
        return  # compat.problems names the unknown release; `gpurig check` refuses it
    if verdict.python and verdict.python not in row["python"]:
        verdict.problems.append(
            f"Python {verdict.python} has no torch {version} wheels (it supports "
            f"{', '.join(row['python'])}): list a supported version first in stack.yml's python"
        )
    floor = str(row["glibc"])
    try:
        too_old = facts.glibc is not None and Version(facts.glibc) < Version(floor)
    except InvalidVersion:
        too_old = False
    if facts.glibc is None:
        verdict.notes.append(f"glibc version unknown: torch {version} needs {floor} or newer")
    elif too_old:
        verdict.problems.append(
            f"glibc {facts.glibc} is older than torch {version}'s floor (manylinux_"
            f"{floor.replace('.', '_')}, glibc {floor}): upgrade the OS to Debian 12 or "
            "Ubuntu 22.04 or newer"
        )
    if not facts.gpus:
        return
    if variant in (None, "cpu") or variant not in row["variants"]:
        return
    arches = compat.arches(version, variant)
    driver = str(stack.nvidia.driver_branch) if verdict.install_driver else facts.driver_version
    for label, gpus in _groups(_missing_kernels(facts.gpus, stack, variant)).items():
        others = _fitting_variants(facts.gpus, stack, driver)
        if others:
            fix = _choose(others[-1], stack)
        elif _fitting_variants(facts.gpus, stack, None):
            newest = _fitting_variants(facts.gpus, stack, None)[-1]
            floor_driver = compat.min_driver(newest)
            branch = floor_driver.major if floor_driver else stack.nvidia.driver_branch
            fix = f"{_choose(newest, stack)}, with driver branch {branch} or newer"
        else:
            fix = f"no torch {version} build supports it: pin an older torch or use a newer GPU"
        verdict.problems.append(
            f"GPU {label} ({gpus[0].sm}) has no kernels in torch {version} {variant} "
            f"(ships {sm_list(arches)}): {fix}"
        )
    for gpu in facts.gpus:
        if gpu.compute_capability is None:
            verdict.notes.append(
                f"GPU {gpu.name} at {gpu.slot} is not in gpurig's table: its compute capability "
                "is unchecked until a driver runs (add it to src/gpurig/data/gpus.yaml)"
            )


def check_driver_fits_gpus(facts: HostFacts, stack: Stack, verdict: Verdict) -> None:
    """The driver branch the host will run against each GPU architecture, and the module flavour."""
    if verdict.install_driver:
        branch: int | None = stack.nvidia.driver_branch
        where = "the host gets branch"
    else:
        branch = int(facts.driver_version.split(".")[0]) if facts.driver_version else None
        where = "the loaded driver is branch"
    if branch is None:
        return
    table = gpu_table()
    by_arch: dict[str, tuple[Architecture, list[PciGpu]]] = {}
    for gpu in facts.gpus:
        arch = table.architecture(gpu.compute_capability)
        if arch:
            by_arch.setdefault(arch.name, (arch, []))[1].append(gpu)
    for arch, gpus in by_arch.values():
        label = ", ".join(_groups(gpus))
        if branch < arch.min_branch:
            verdict.problems.append(
                f"GPU {label} ({arch.name}) needs driver branch {arch.min_branch} or newer and "
                f"{where} {branch}: set nvidia.driver_branch {max(arch.min_branch, branch)}+"
            )
        elif arch.max_branch is not None and branch > arch.max_branch:
            verdict.problems.append(
                f"GPU {label} ({arch.name}) is not supported after driver branch "
                f"{arch.max_branch} and {where} {branch}: set nvidia.driver_branch "
                f"{arch.max_branch} (with a CUDA variant it runs) or use a newer GPU"
            )
        if not verdict.install_driver:
            continue
        if stack.nvidia.open_kernel_modules and arch.open_modules == "no":
            verdict.problems.append(
                f"GPU {label} ({arch.name}) is not supported by NVIDIA's open kernel modules: "
                "set nvidia.open_kernel_modules: false"
            )
        elif not stack.nvidia.open_kernel_modules and arch.open_modules == "required":
            verdict.problems.append(
                f"GPU {label} ({arch.name}) runs only on NVIDIA's open kernel modules: "
                "set nvidia.open_kernel_modules: true"
            )


# Failures the driver stage repairs when it installs a driver; the others stop the host.
_FIXED_BY_INSTALL = {
    diagnose.DKMS_FAILED,
    diagnose.MODULE_MISSING,
    diagnose.NOT_LOADED,
    diagnose.NO_DEVICE,
}
_FIXED_BY_REBOOT = {diagnose.NOUVEAU, diagnose.NVML_MISMATCH}


def check_driver_state(facts: HostFacts, stack: Stack, verdict: Verdict) -> None:
    """What the host's driver already suffers (diagnose.from_facts), and what the stage does."""
    for found in diagnose.from_facts(facts):
        verdict.diagnoses.append(found)
        handled = (
            (found.name in _FIXED_BY_INSTALL and verdict.install_driver)
            or (
                found.name in _FIXED_BY_REBOOT
                and stack.nvidia.allow_reboot
                and (verdict.install_driver or found.name == diagnose.NVML_MISMATCH)
            )
            or (
                found.name == diagnose.SECURE_BOOT_REJECTED
                and verdict.install_driver
                and facts.os_id == "ubuntu"
            )
        )
        if handled:
            verdict.notes.append(f"{found} (the driver stage acts on this)")
        else:
            verdict.problems.append(str(found))
    if not verdict.install_driver:
        return
    verdict.notes.append(f"installs NVIDIA driver branch {stack.nvidia.driver_branch}")
    if facts.secure_boot and facts.os_id == "debian" and facts.dkms_mok_enrolled is None:
        verdict.notes.append(
            f"Secure Boot is on: DKMS signs the module with {diagnose.DKMS_MOK}, which must be "
            "enrolled before the driver loads (mokutil --import, reboot, confirm at the console)"
        )
    elif facts.secure_boot and facts.os_id == "ubuntu":
        verdict.notes.append("Secure Boot is on: installs Canonical's signed precompiled modules")


def _no_lock(variants: list[str], python: str, locked: Lock) -> str:
    names = [f"{v}-cp{python.replace('.', '')}" for v in variants]
    why = "; ".join(f"{n}: {locked.unavailable[n]}" for n in names if n in locked.unavailable)
    return (
        f"no locked target for {', '.join(names)} ({why or 'not in lock/'}): "
        "fix the sources and run `gpurig resolve`"
    )


def evaluate(facts: HostFacts, stack: Stack, locked: Lock) -> Verdict:
    """Every problem at once, each with its fix; `verdict.ok` only when there are none."""
    verdict = Verdict()
    if (facts.os_id, facts.os_version) not in SUPPORTED_OS:
        supported = ", ".join(f"{o} {v}" for o, v in sorted(SUPPORTED_OS))
        verdict.problems.append(
            f"{facts.os_id} {facts.os_version} is not supported: use {supported}"
        )
    if facts.arch not in SUPPORTED_ARCH:
        verdict.problems.append(f"architecture {facts.arch} is not supported: gpurig locks x86_64")
    if not facts.sudo:
        verdict.problems.append("the SSH user cannot sudo without a password: grant NOPASSWD sudo")
    if facts.memory_gb < MIN_MEMORY_GB:
        verdict.problems.append(
            f"{facts.memory_gb:.1f} GB of memory; the smoke test needs {MIN_MEMORY_GB} GB"
        )
    if not facts.systemd:
        verdict.notes.append("no systemd: persistence mode and service steps are skipped")
    choose_python(facts, stack, verdict)
    choose_target(facts, stack, locked, verdict)
    check_torch_build(facts, stack, verdict)
    if facts.gpus:
        check_driver_fits_gpus(facts, stack, verdict)
        check_driver_state(facts, stack, verdict)
    if verdict.target:
        need = _venv_size_gb(verdict.target) * DISK_HEADROOM
        if facts.free_disk_gb < need:
            verdict.problems.append(
                f"{facts.free_disk_gb:.1f} GB free for {stack.host.venv}; "
                f"the {verdict.target.name} venv needs about {need:.0f} GB with headroom: "
                "free disk or grow the volume"
            )
    return verdict
