"""Named diagnoses: NVIDIA failures users hit, recognised from output or facts, with their fix.

Pure functions of text (apt/dpkg, modprobe, nvidia-smi, dmesg, torch) and of preflight's
`HostFacts`, so the pyinfra deploy, `gpurig preflight` and the tests all name a failure the same
way. A wall of dpkg output becomes one line: what broke, on this host, and what to do.

`names`: the names and the Diagnosis; `signatures`: the table of output signatures, one regex
each; here: ranking them root cause first, and the diagnoses read from a host's facts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from gpurig.diagnose import containers
from gpurig.diagnose.names import (
    DKMS_FAILED,
    DPKG_LOCKED,
    ENROLL_MOK,
    FABRIC_MANAGER,
    FELL_OFF_BUS,
    MODULE_MISSING,
    NO_DEVICE,
    NO_MODULE_LOADING,
    NO_REBOOT,
    NOT_LOADED,
    NOUVEAU,
    NVML_MISMATCH,
    PACKAGE_MISSING,
    PERSISTENCED_FAILED,
    REPO_KEY,
    REPO_UNREACHABLE,
    SECURE_BOOT_REJECTED,
    SECURE_BOOT_UNSIGNED,
    TOO_OLD,
    UNRECOGNISED,
    Context,
    Diagnosis,
    headers_fix,
    nouveau_diagnosis,
)
from gpurig.diagnose.signatures import SIGNATURES as DRIVER_SIGNATURES
from gpurig.hostlayout import DKMS_MOK

if TYPE_CHECKING:
    from gpurig.model.host import GpuState, HostFacts

# The names callers match on, from here (reports, tests, docs/gpu.md).
__all__ = [
    "DKMS_FAILED",
    "DKMS_MOK",
    "DPKG_LOCKED",
    "ENROLL_MOK",
    "FABRIC_MANAGER",
    "FELL_OFF_BUS",
    "MODULE_MISSING",
    "NOT_LOADED",
    "NOUVEAU",
    "NO_DEVICE",
    "NO_MODULE_LOADING",
    "NO_REBOOT",
    "NVML_MISMATCH",
    "PACKAGE_MISSING",
    "PERSISTENCED_FAILED",
    "REPO_KEY",
    "REPO_UNREACHABLE",
    "SECURE_BOOT_REJECTED",
    "SECURE_BOOT_UNSIGNED",
    "TOO_OLD",
    "UNRECOGNISED",
    "Context",
    "Diagnosis",
    "after_failure",
    "explain",
    "from_facts",
    "from_output",
    "ranked",
    "too_old",
    "unrecognised",
]

# Root cause first, across output and facts: a missing header before the module it left unbuilt.
PRIORITY = (
    DPKG_LOCKED,
    REPO_UNREACHABLE,
    REPO_KEY,
    PACKAGE_MISSING,
    DKMS_FAILED,
    SECURE_BOOT_REJECTED,
    SECURE_BOOT_UNSIGNED,
    NOUVEAU,
    MODULE_MISSING,
    NO_MODULE_LOADING,
    NVML_MISMATCH,
    FELL_OFF_BUS,
    NO_DEVICE,
    NOT_LOADED,
    FABRIC_MANAGER,
    TOO_OLD,
    NO_REBOOT,
    PERSISTENCED_FAILED,
    *containers.NAMES,
    UNRECOGNISED,
)
SIGNATURES = (*DRIVER_SIGNATURES, *containers.SIGNATURES)


# Symptoms that only restate a cause found beside them: "driver not loaded" after "DKMS build
# failed" says nothing new.
CONSEQUENCES = {
    NOT_LOADED: {DKMS_FAILED, MODULE_MISSING, SECURE_BOOT_REJECTED, SECURE_BOOT_UNSIGNED,
                 NOUVEAU, NO_MODULE_LOADING, NVML_MISMATCH},
    MODULE_MISSING: {DKMS_FAILED},
    # The daemon needs a loaded driver that sees the GPUs.
    PERSISTENCED_FAILED: {NOT_LOADED, NO_DEVICE, FELL_OFF_BUS, NVML_MISMATCH, MODULE_MISSING},
}  # fmt: skip


def ranked(diagnoses: Iterable[Diagnosis]) -> list[Diagnosis]:
    """One diagnosis per name, root cause first, symptoms of a named cause left out."""
    found = _unique(diagnoses)
    names = {d.name for d in found}
    kept = [d for d in found if not CONSEQUENCES.get(d.name, set()) & names]
    return sorted(kept, key=lambda d: PRIORITY.index(d.name))


def from_output(text: str, context: Context | None = None) -> list[Diagnosis]:
    """Every known failure in a command's output, root cause first."""
    context = context or Context()
    return ranked(d for signature in SIGNATURES if (d := signature.diagnose(text, context)))


def too_old(driver: str, variant: str, cuda: str, min_driver: str, fix: str) -> Diagnosis:
    """The preflight form: a known driver against a known wheel, before anything is installed."""
    return Diagnosis(
        TOO_OLD,
        f"driver {driver} cannot run the {variant} wheel (CUDA {cuda} needs {min_driver} or "
        "newer): torch would fall back to the CPU",
        fix,
    )


def from_facts(facts: HostFacts) -> list[Diagnosis]:
    """Failures visible in a host's facts alone: what a host already suffers before gpurig."""
    if not facts.gpus:
        return []
    context = Context(facts.kernel, facts.os_id, facts.secure_boot)
    found: list[Diagnosis] = []
    if facts.nouveau_loaded:
        found.append(nouveau_diagnosis())
    dkms = _dkms_from_status(facts, context)
    if dkms:
        found.append(dkms)
    if facts.secure_boot and facts.dkms_mok_enrolled is False:
        found.append(
            Diagnosis(
                SECURE_BOOT_UNSIGNED,
                f"DKMS signs the module with {DKMS_MOK}, which Secure Boot does not trust (the "
                "key is not enrolled)",
                ENROLL_MOK,
            )
        )
    text = "\n".join([facts.nvidia_smi or "", *facts.kernel_log])
    found += from_output(text, context)
    return ranked(found)


def _dkms_from_status(facts: HostFacts, context: Context) -> Diagnosis | None:
    """`dkms status` shows an nvidia module not built for the running kernel."""
    nvidia = [line for line in facts.dkms if line.startswith("nvidia")]
    if not nvidia or not facts.kernel or facts.nvidia_module:
        return None
    built_here = any(facts.kernel in line and "installed" in line for line in nvidia)
    if built_here:
        return None
    if facts.kernel_headers is False:
        return Diagnosis(
            DKMS_FAILED,
            f"no kernel headers for {facts.kernel} (dkms: {nvidia[0]})",
            headers_fix(facts.kernel, context),
        )
    return Diagnosis(
        MODULE_MISSING,
        f"DKMS has not built the nvidia module for {facts.kernel} (dkms: {nvidia[0]})",
        f"run `dkms autoinstall -k {facts.kernel}` and read its error, or re-run gpurig",
    )


def unrecognised(text: str, log: str | None = None) -> Diagnosis:
    """The last meaningful lines, when no signature matches: still short, still pointing on."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [
        ln for ln in lines if re.match(r"^(E:|Error|dpkg: error|modprobe: (FATAL|ERROR))", ln)
    ]
    tail = " / ".join((errors or lines)[-3:])[:400] or "no output"
    where = f"the full output is in {log}" if log else "re-run with -vv for the full output"
    return Diagnosis(UNRECOGNISED, tail, where)


def explain(text: str, context: Context | None = None, log: str | None = None) -> list[Diagnosis]:
    """What went wrong in this output: the named diagnoses, or one unrecognised failure."""
    return from_output(text, context) or [unrecognised(text, log)]


def _unique(diagnoses: Iterable[Diagnosis]) -> list[Diagnosis]:
    seen: set[str] = set()
    out = []
    for diagnosis in diagnoses:
        if diagnosis.name not in seen:
            seen.add(diagnosis.name)
            out.append(diagnosis)
    return out


def after_failure(
    text: str,
    context: Context,
    facts: HostFacts | None,
    state: GpuState | None,
    log: str | None = None,
) -> list[Diagnosis]:
    """The named diagnoses of a failed driver step, from every front end: its output, then the
    host's GPU state read right after (None when that read failed too)."""
    from gpurig.model.host import HostFacts, apply

    found = from_output(text, context)
    if state is not None:
        base = facts or HostFacts(
            "unknown", "unknown", "x86_64", None, None, 0.0, 0.0, True, state.systemd
        )
        found += from_facts(apply(base, state))
    return ranked(found) or [unrecognised(text, log)]
