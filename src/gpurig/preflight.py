"""Preflight verdicts: can this host take this stack, and which locked target does it get?

Pure functions of facts gathered before any change. The pyinfra deploy, `gpurig preflight`
and the Ansible role (through a module) all call `evaluate`, so every front end refuses the
same hosts for the same reasons. Each problem names its fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gpurig import compat
from gpurig.lock import Lock, Target
from gpurig.spec import Stack

SUPPORTED_OS = {("debian", "12"), ("debian", "13"), ("ubuntu", "22.04"), ("ubuntu", "24.04")}
SUPPORTED_ARCH = {"x86_64"}
MIN_MEMORY_GB = 2.0
# Headroom beyond the venv itself: the uv cache and a second venv during an atomic swap.
DISK_HEADROOM = 2.5


@dataclass(frozen=True)
class PciGpu:
    slot: str  # 0000:3b:00.0
    device_id: str  # 2330 (vendor is always 10de)
    name: str  # what gpurig knows it as, "NVIDIA H100 SXM5", or "NVIDIA 10de:xxxx"
    compute_capability: str | None  # "9.0" when the id is known


@dataclass(frozen=True)
class HostFacts:
    """What preflight knows about a host; every field comes from a pyinfra fact."""

    os_id: str  # debian, ubuntu, ...
    os_version: str  # 12, 24.04
    arch: str
    python3: str | None  # major.minor of /usr/bin/python3
    glibc: str | None  # 2.36
    free_disk_gb: float  # on the filesystem that will hold the venv
    memory_gb: float
    sudo: bool
    systemd: bool
    gpus: list[PciGpu] = field(default_factory=list)
    driver_version: str | None = None  # loaded kernel module, from /proc/driver/nvidia/version
    secure_boot: bool | None = None
    nouveau_loaded: bool = False

    @property
    def os_name(self) -> str:
        return f"{self.os_id}-{self.os_version}"


@dataclass
class Verdict:
    problems: list[str] = field(default_factory=list)  # each stops the host, with its fix
    notes: list[str] = field(default_factory=list)  # said in the report, stop nothing
    target: Target | None = None
    python: str | None = None  # the Python version the venv will use
    uv_python: bool = False  # True: the distribution's python3 does not fit; uv installs one
    install_driver: bool = False  # the nvidia stage has work to do

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


def choose_target(facts: HostFacts, stack: Stack, locked: Lock, verdict: Verdict) -> None:
    """GPU hosts: first CUDA variant the (expected) driver runs; GPU-less hosts: cpu."""
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
        for variant in usable:
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
            wanted = cuda[0]
            verdict.problems.append(
                f"driver {driver} is too old for torch {stack.torch.version} {wanted} "
                f"(needs {compat.min_driver_text(wanted)}): set nvidia.driver_branch "
                f"{compat.min_driver(wanted).major} or add an older CUDA variant"  # type: ignore[union-attr]
            )
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


def _no_lock(variants: list[str], python: str, locked: Lock) -> str:
    names = [f"{v}-cp{python.replace('.', '')}" for v in variants]
    why = "; ".join(f"{n}: {locked.unavailable[n]}" for n in names if n in locked.unavailable)
    return (
        f"no locked target for {', '.join(names)} ({why or 'not in lock/'}): "
        "fix the sources and run `gpurig resolve`"
    )


def evaluate(facts: HostFacts, stack: Stack, locked: Lock) -> Verdict:
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
    if verdict.target:
        need = _venv_size_gb(verdict.target) * DISK_HEADROOM
        if facts.free_disk_gb < need:
            verdict.problems.append(
                f"{facts.free_disk_gb:.1f} GB free for {stack.host.venv}; "
                f"the {verdict.target.name} venv needs about {need:.0f} GB with headroom: "
                "free disk or grow the volume"
            )
    return verdict
