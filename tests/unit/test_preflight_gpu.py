"""The compatibility preflight against a table of hosts: driver x CUDA variant x compute
capability x Python x glibc, each with the verdict and the message (and fix) it must give."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gpurig import diagnose, preflight, spec
from gpurig.lock import Lock, Target, target_name
from gpurig.model import host as host_model
from gpurig.model.host import HostFacts, PciGpu, has_kernels, pci_gpu
from gpurig.preflight import Verdict
from helpers.facts import host_facts

SLOT = "0000:3b:00.0"


def gpu(device: str, slot: str = SLOT) -> PciGpu:
    return pci_gpu(slot, device)


H100, V100, K80, B200, L4, RTX5090, A100 = (
    gpu(d) for d in ("2330", "1db1", "102d", "2901", "27b8", "2b85", "20b2")
)


def make_stack(
    variants: list[str],
    branch: int = 580,
    python: list[str] | None = None,
    versions: dict[str, str] | None = None,
    **nvidia: object,
) -> spec.Stack:
    return spec.Stack.model_validate(
        {
            "python": python or ["3.11", "3.13"],
            "torch": {"version": "2.13.0", "variants": variants, "versions": versions or {}},
            "nvidia": {"driver_branch": branch, **nvidia},
        }
    )


# The default stack's shape: cu130 for driver 580, PyPI's CUDA 12 torch for 535/550 fleets.
FLEET = {"variants": ["cu130", "cu128", "cpu"], "versions": {"cu128": "2.10.0"}}


def make_lock(stack: spec.Stack) -> Lock:
    """Every (variant, Python) of the stack locked: these tests are about the host."""
    targets = {}
    for variant in stack.torch.variants:
        for python in stack.python:
            name = target_name(variant, python)
            targets[name] = Target(name, variant, python, f"{name}.txt", "", "", None, [], {})
    return Lock(Path("lock"), stack.digest(), targets, {})


def host(gpus: list[PciGpu] | None = None, **fields: object) -> HostFacts:
    return host_facts(
        **{
            "free_disk_gb": 200.0,
            "gpus": [H100] if gpus is None else gpus,
            "kernel": "6.1.0-25-cloud-amd64",
            "kernel_headers": True,
            **fields,
        }
    )


def evaluate(facts: HostFacts, stack: spec.Stack) -> Verdict:
    return preflight.evaluate(facts, stack, make_lock(stack))


@dataclass
class Case:
    id: str
    facts: HostFacts
    stack: spec.Stack
    target: str | None  # the locked target chosen, or None
    install_driver: bool = False
    problems: list[str] = field(default_factory=list)  # each must appear in one problem
    notes: list[str] = field(default_factory=list)  # each must appear in one note


CASES = [
    Case("no-driver-installs-the-spec-branch", host(), make_stack(["cu130", "cpu"]),
         "cu130-cp311", install_driver=True, notes=["installs NVIDIA driver branch 580"]),
    Case("driver-right", host(driver_version="580.95.05"), make_stack(["cu130", "cpu"]),
         "cu130-cp311"),
    Case("driver-too-old-install-on", host(driver_version="535.183.01"),
         make_stack(["cu130", "cpu"]), "cu130-cp311", install_driver=True),
    Case("driver-too-old-install-off", host(driver_version="535.183.01"),
         make_stack(["cu130", "cpu"], install_driver=False), None,
         problems=["driver too old for the wheel: driver 535.183.01 cannot run the torch 2.13.0 "
                   "cu130 wheel (CUDA 13.0 needs 580.65.06 or newer): torch would fall back to "
                   "the CPU. Fix: choose the cu128 variant (add it to torch.variants), or set "
                   "driver branch 580 (nvidia.driver_branch, nvidia.install_driver)"]),
    Case("driver-535-gets-the-cuda-12-variant", host(driver_version="535.261.03"),
         make_stack(**FLEET), "cu128-cp311"),  # type: ignore[arg-type]
    Case("driver-550-gets-the-cuda-12-variant", host(driver_version="550.163.01"),
         make_stack(**FLEET), "cu128-cp311"),  # type: ignore[arg-type]
    Case("driver-580-gets-cu130", host(driver_version="580.95.05"),
         make_stack(**FLEET), "cu130-cp311"),  # type: ignore[arg-type]
    Case("driver-470-is-replaced", host(driver_version="470.256.02"),
         make_stack(**FLEET), "cu130-cp311", install_driver=True),  # type: ignore[arg-type]
    Case("old-driver-runs-the-second-variant", host(driver_version="535.183.01"),
         make_stack(["cu130", "cu126", "cpu"], install_driver=False), "cu126-cp311"),
    Case("volta-prefers-a-variant-with-its-kernels", host([V100], driver_version="580.95.05"),
         make_stack(["cu130", "cu126", "cpu"]), "cu126-cp311"),
    Case("volta-without-kernels", host([V100], driver_version="580.95.05"),
         make_stack(["cu130", "cpu"]), "cu130-cp311",
         problems=["GPU NVIDIA Tesla V100 SXM2 16GB (sm_70) has no kernels in torch 2.13.0 cu130 "
                   "(ships sm_75, sm_80, sm_86, sm_90, sm_100, sm_110, sm_120): choose the cu126 "
                   "variant (add it to torch.variants)"]),
    Case("blackwell-needs-a-newer-variant", host([B200], driver_version="580.95.05"),
         make_stack(["cu126", "cpu"]), "cu126-cp311",
         problems=["GPU NVIDIA B200 (sm_100) has no kernels in torch 2.13.0 cu126 (ships sm_50, "
                   "sm_60, sm_70, sm_75, sm_80, sm_86, sm_90): choose the cu130 variant (add it "
                   "to torch.variants)"]),
    Case("blackwell-needs-open-modules", host([B200]), make_stack(["cu130", "cpu"]),
         "cu130-cp311", install_driver=True,
         problems=["GPU NVIDIA B200 (Blackwell) runs only on NVIDIA's open kernel modules: set "
                   "nvidia.open_kernel_modules: true"]),
    Case("blackwell-open-modules-fine", host([B200]),
         make_stack(["cu130", "cpu"], open_kernel_modules=True), "cu130-cp311",
         install_driver=True),
    Case("blackwell-needs-branch-570", host([B200]), make_stack(["cu128", "cpu"], branch=550,
         open_kernel_modules=True), "cu128-cp311", install_driver=True,
         problems=["GPU NVIDIA B200 (Blackwell) needs driver branch 570 or newer and the host "
                   "gets branch 550: set nvidia.driver_branch 570+"]),
    Case("kepler-has-no-modern-driver-or-kernels", host([K80]), make_stack(["cu130", "cpu"]),
         "cu130-cp311", install_driver=True,
         problems=["GPU NVIDIA Tesla K80 (sm_37) has no kernels in torch 2.13.0 cu130",
                   "no torch 2.13.0 build supports it",
                   "GPU NVIDIA Tesla K80 (Kepler) is not supported after driver branch 470"]),
    Case("volta-open-modules-refused", host([V100]), make_stack(["cu126", "cpu"],
         open_kernel_modules=True), "cu126-cp311", install_driver=True,
         problems=["GPU NVIDIA Tesla V100 SXM2 16GB (Volta) is not supported by NVIDIA's open "
                   "kernel modules"]),
    Case("ada-runs-ampere-kernels", host([L4], driver_version="580.95.05"),
         make_stack(["cu130", "cpu"]), "cu130-cp311"),
    Case("rtx5090-on-cu126", host([RTX5090], driver_version="580.95.05"),
         make_stack(["cu126", "cpu"]), "cu126-cp311",
         problems=["(sm_120) has no kernels in torch 2.13.0 cu126", "choose the cu130 variant"]),
    Case("eight-gpus-one-line", host([gpu("1db1", f"0000:{i:02x}:00.0") for i in range(8)],
         driver_version="580.95.05"), make_stack(["cu130", "cpu"]), "cu130-cp311",
         problems=["GPU 8x NVIDIA Tesla V100 SXM2 16GB (sm_70)"]),
    Case("python-without-wheels", host(python3="3.9"), make_stack(["cu130", "cpu"],
         python=["3.9"]), "cu130-cp39", install_driver=True,
         problems=["Python 3.9 has no torch 2.13.0 wheels (it supports 3.10, 3.11, 3.12, 3.13, "
                   "3.14)"]),
    Case("glibc-too-old", host(glibc="2.27"), make_stack(["cu130", "cpu"]), "cu130-cp311",
         install_driver=True,
         problems=["glibc 2.27 is older than torch 2.13.0's floor (manylinux_2_28, glibc 2.28)"]),
    Case("unknown-gpu-is-a-note", host([gpu("9999")]), make_stack(["cu130", "cpu"]),
         "cu130-cp311", install_driver=True,
         notes=["GPU NVIDIA 10de:9999 at 0000:3b:00.0 is not in gpurig's table"]),
    Case("no-gpu-cpu-build", host([]), make_stack(["cu130", "cpu"]), "cpu-cp311",
         notes=["no NVIDIA GPU on the PCI bus: GPU stage skipped"]),
    Case("no-gpu-but-required", host([]), make_stack(["cu130", "cpu"], require_gpu=True), None,
         problems=["no NVIDIA GPU on the PCI bus, and nvidia.require_gpu is true"]),
    Case("no-driver-install-off", host(), make_stack(["cu130", "cpu"], install_driver=False),
         None, problems=["no driver loaded and nvidia.install_driver is false"]),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_verdict_table(case: Case) -> None:
    verdict = evaluate(case.facts, case.stack)
    assert (verdict.target.name if verdict.target else None) == case.target
    assert verdict.install_driver == case.install_driver
    for wanted in case.problems:
        assert any(wanted in p for p in verdict.problems), (wanted, verdict.problems)
    if not case.problems:
        assert verdict.ok, verdict.problems
    for wanted in case.notes:
        assert any(wanted in n for n in verdict.notes), (wanted, verdict.notes)


def test_every_violation_is_reported_at_once() -> None:
    facts = host([V100], driver_version="470.256.02", glibc="2.27", python3="3.11")
    stack = make_stack(["cu130", "cpu"], python=["3.9"], install_driver=False)
    verdict = evaluate(facts, stack)
    assert not verdict.ok
    texts = "\n".join(verdict.problems)
    assert "driver too old for the wheel: driver 470.256.02" in texts
    assert "(sm_70) has no kernels in torch 2.13.0 cu130" in texts
    assert "Python 3.9 has no torch 2.13.0 wheels" in texts
    assert "glibc 2.27 is older" in texts
    assert [d.name for d in verdict.diagnoses] == [diagnose.TOO_OLD]


# Failures the host already has: a note when the driver stage repairs it, a problem when not.
NVML_TEXT = (
    "Failed to initialize NVML: Driver/library version mismatch\nNVML library version: 580.95"
)


@pytest.mark.parametrize(
    ("facts", "nvidia", "problem", "note"),
    [
        (host(driver_version="580.65.06", nvidia_smi=NVML_TEXT, nvidia_smi_rc=18), {},
         None, diagnose.NVML_MISMATCH),
        (host(driver_version="580.65.06", nvidia_smi=NVML_TEXT, nvidia_smi_rc=18),
         {"allow_reboot": False}, diagnose.NVML_MISMATCH, None),
        (host(nouveau_loaded=True), {}, None, diagnose.NOUVEAU),
        (host(nouveau_loaded=True), {"allow_reboot": False}, diagnose.NOUVEAU, None),
        (host(secure_boot=True, dkms_mok_enrolled=False), {}, diagnose.SECURE_BOOT_UNSIGNED,
         None),
        (host(driver_version="580.95.05", nvidia_smi="No devices were found", nvidia_smi_rc=6),
         {}, diagnose.NO_DEVICE, None),
        (host(kernel_headers=False, dkms=["nvidia-current/535.309.01: added"]), {}, None,
         diagnose.DKMS_FAILED),
        (host(kernel_log=["NVRM: Xid (PCI:0000:3b:00): 79, pid=0, GPU has fallen off the bus."]),
         {}, diagnose.FELL_OFF_BUS, None),
    ],
)  # fmt: skip
def test_existing_driver_failures(
    facts: HostFacts, nvidia: dict[str, object], problem: str | None, note: str | None
) -> None:
    verdict = evaluate(facts, make_stack(["cu130", "cpu"], **nvidia))
    if problem:
        assert any(p.startswith(f"{problem}: ") for p in verdict.problems), verdict.problems
    else:
        assert verdict.ok, verdict.problems
    if note:
        assert any(n.startswith(f"{note}: ") for n in verdict.notes), verdict.notes
    assert {d.name for d in verdict.diagnoses} >= {problem or note}


def test_secure_boot_notes_name_the_path() -> None:
    debian = evaluate(host(secure_boot=True), make_stack(["cu130", "cpu"]))
    assert any("mokutil --import" in n for n in debian.notes)
    ubuntu = evaluate(
        host(secure_boot=True, os_id="ubuntu", os_version="24.04", python3="3.12"),
        make_stack(["cu130", "cpu"], python=["3.12"]),
    )
    assert any("signed precompiled modules" in n for n in ubuntu.notes)


@pytest.mark.parametrize(
    ("cc", "arches", "runs"),
    [
        ("8.9", ["8.0", "8.6", "9.0"], True),  # Ada runs Ampere's sm_86 code
        ("8.6", ["8.0"], True),
        ("8.0", ["8.6"], False),  # never a newer minor
        ("10.0", ["9.0"], False),  # never across majors
        ("12.0", ["10.0", "12.0"], True),
        ("7.0", ["7.5", "8.0"], False),
    ],
)
def test_binary_compatibility(cc: str, arches: list[str], runs: bool) -> None:
    assert has_kernels(cc, arches) is runs


def test_gpu_table_names_every_sandbox_sku() -> None:
    from gpurig.sandbox.doubles import GPU_SKUS

    for sku in GPU_SKUS.values():
        known = pci_gpu(SLOT, sku.device)
        assert known.compute_capability is not None, sku
        assert not known.name.startswith("NVIDIA 10de:"), sku
    table = host_model.gpu_table()
    for device, (_name, cc) in table.gpus.items():
        assert table.architecture(cc) is not None, device


def test_unknown_gpu_takes_nvidia_smi_name_and_capability() -> None:
    found = pci_gpu(SLOT, "ABCD", "NVIDIA Future GPU", "13.0")
    assert (found.device_id, found.name, found.compute_capability) == (
        "abcd",
        "NVIDIA Future GPU",
        "13.0",
    )
