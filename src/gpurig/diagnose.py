"""Named diagnoses: NVIDIA failures users hit, recognised from output or facts, with their fix.

Pure functions of text (apt/dpkg, modprobe, nvidia-smi, dmesg, torch) and of preflight's
`HostFacts`, so the pyinfra deploy, `gpurig preflight` and the tests all name a failure the same
way. A wall of dpkg output becomes one line: what broke, on this host, and what to do.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gpurig.model.host import GpuState, HostFacts

# Names are stable: reports, tests and docs/gpu.md match on them.
DPKG_LOCKED = "dpkg lock held"
PACKAGE_MISSING = "driver package not found"
REPO_KEY = "CUDA repository key mismatch"
REPO_UNREACHABLE = "CUDA repository unreachable"
DKMS_FAILED = "DKMS build failed"
MODULE_MISSING = "no driver module for the running kernel"
SECURE_BOOT_REJECTED = "Secure Boot rejected the module"
SECURE_BOOT_UNSIGNED = "Secure Boot is on and the module is unsigned"
NOUVEAU = "nouveau loaded"
NO_MODULE_LOADING = "kernel modules cannot be loaded"
NVML_MISMATCH = "NVML driver/library version mismatch"
FELL_OFF_BUS = "GPU fell off the bus"
NO_DEVICE = "nvidia-smi present but no device visible"
NOT_LOADED = "driver not loaded"
TOO_OLD = "driver too old for the wheel"
UNRECOGNISED = "unrecognised failure"

DKMS_MOK = "/var/lib/dkms/mok.pub"
ENROLL_MOK = (
    f"enroll the DKMS MOK (mokutil --import {DKMS_MOK}) and reboot; confirm the key in the "
    "MOK manager on the console at boot"
)


@dataclass(frozen=True)
class Diagnosis:
    name: str  # one of the names above
    message: str  # what was seen on this host
    fix: str  # what to do about it

    def __str__(self) -> str:
        return f"{self.name}: {self.message}. Fix: {self.fix}"

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class Context:
    """What the host is, to make a fix concrete."""

    kernel: str | None = None  # uname -r
    os_id: str | None = None  # debian, ubuntu
    secure_boot: bool | None = None
    branch: int | None = None  # the driver branch being installed


def _headers_fix(kernel: str, context: Context) -> str:
    if context.os_id == "ubuntu":
        return (
            f"apt install linux-headers-{kernel} and re-run, or use Canonical's precompiled "
            f"modules (linux-modules-nvidia-<branch>-server-{kernel}), which need no headers"
        )
    return (
        f"apt install linux-headers-{kernel} and re-run; if no archive has them any more, boot "
        "the current kernel first (apt install linux-image-amd64 linux-headers-amd64, reboot) "
        "and re-run"
    )


def _secure_boot_fix(context: Context) -> str:
    if context.os_id == "ubuntu":
        return (
            "install Canonical's signed precompiled modules "
            "(linux-modules-nvidia-<branch>-server-$(uname -r)): gpurig does when it sees "
            "Secure Boot, so re-run its deploy"
        )
    if context.os_id == "debian":
        return ENROLL_MOK
    return f"on Ubuntu use the signed linux-modules-nvidia-* packages; on Debian {ENROLL_MOK}"


# Each recogniser: text -> Diagnosis | None. Order is root cause first: a missing header makes
# DKMS fail, which makes modprobe fail, which makes nvidia-smi fail; name the first.


def _dpkg_locked(text: str, context: Context) -> Diagnosis | None:
    # At once: "E: Could not get lock L. It is held by process N (NAME)". After a bounded wait
    # (DPkg::Lock::Timeout): "Waiting for cache lock: Could not get lock L. It is held by process
    # N (NAME)..." lines, then "E: Unable to acquire the dpkg frontend lock (L), is another...".
    match = re.search(r"Could not get lock (\S+?)\.?(?: It is held by process (\d+) \(([^)]*)\))?"
                      r"(?:\.\.\.)?$", text, re.M)  # fmt: skip
    match = match or re.search(r"Unable to acquire the dpkg frontend lock \((\S+)\)()()", text)
    if not match:
        return None
    holder = f" (held by {match[3]}, pid {match[2]})" if match[2] else ""
    return Diagnosis(
        DPKG_LOCKED,
        f"another package manager holds {match[1]}{holder}",
        "wait for it to finish (on a fresh VM it is unattended-upgrades' first run), or stop "
        "it with `systemctl stop unattended-upgrades`, then re-run",
    )


def _package_missing(text: str, context: Context) -> Diagnosis | None:
    match = re.search(
        r"E: (?:Unable to locate package (\S+)|Package '([^']+)' has no installation candidate)",
        text,
    )
    if not match:
        return None
    package = match[1] or match[2]
    if package.startswith("linux-headers-"):
        kernel = package.removeprefix("linux-headers-")
        return Diagnosis(
            DKMS_FAILED,
            f"no kernel headers for {kernel} in the archives",
            _headers_fix(kernel, context),
        )
    if context.os_id == "ubuntu":
        where = (
            "enable the restricted component and run apt update; `apt-cache search "
            "nvidia-headless` lists the branches this release carries"
        )
    elif "cuda" in package:
        where = "check that NVIDIA's CUDA repository for this release is configured and reachable"
    else:
        where = "enable contrib, non-free and non-free-firmware and run apt update"
    return Diagnosis(PACKAGE_MISSING, f"apt has no {package}", where)


def _repo_key(text: str, context: Context) -> Diagnosis | None:
    match = re.search(r"gpurig: cuda-keyring key (\S*), expected (\S+)", text)
    if not match:
        return None
    return Diagnosis(
        REPO_KEY,
        f"the cuda-keyring package carries key {match[1] or '(none)'}, not NVIDIA's {match[2]}",
        "check the download (a proxy or mirror may have replaced it); nothing was installed",
    )


def _repo_unreachable(text: str, context: Context) -> Diagnosis | None:
    curl = re.search(r"^curl: \((\d+)\) (.+)$", text, re.M)
    fetch = re.search(r"^[EW]: Failed to fetch (\S*nvidia\.com\S*)\s+(.*)$", text, re.M)
    if curl:
        detail = f"curl error {curl[1]}: {curl[2].strip()}"
    elif fetch:
        detail = f"{fetch[1]}: {fetch[2].strip()}"
    else:
        return None
    return Diagnosis(
        REPO_UNREACHABLE,
        f"the host cannot download from NVIDIA's CUDA repository ({detail})",
        "let it reach developer.download.nvidia.com (network.proxy and network.ca_bundle for a "
        "proxy), or install the branch the Debian archive carries (nvidia.driver_branch 535 on "
        "Debian 12, 550 on Debian 13, with a CUDA variant it runs)",
    )


def _dkms_failed(text: str, context: Context) -> Diagnosis | None:
    no_headers = re.search(
        r"(?:Your kernel headers for kernel (\S+) cannot be found"
        r"|Module build for kernel (\S+) was skipped since the\s+kernel headers)",
        text,
    )
    if no_headers:
        kernel = no_headers[1] or no_headers[2]
        return Diagnosis(
            DKMS_FAILED, f"no kernel headers for {kernel}", _headers_fix(kernel, context)
        )
    build = re.search(r"Bad return status for module build on kernel: (\S+)", text)
    if build:
        log = re.search(r"Consult (\S+make\.log)", text)
        where = f" (see {log[1]})" if log else ""
        return Diagnosis(
            DKMS_FAILED,
            f"the nvidia module did not compile for kernel {build[1]}{where}",
            "a kernel newer than the driver branch supports needs a newer branch "
            "(nvidia.driver_branch); a compiler mismatch needs the gcc the kernel was built "
            "with; on Ubuntu, Canonical's precompiled modules avoid the build",
        )
    return None


def _secure_boot_rejected(text: str, context: Context) -> Diagnosis | None:
    if not re.search(
        r"Key was rejected by service|Loading of unsigned module is rejected"
        r"|unsigned module loading is restricted|module verification failed.*required key missing",
        text,
    ):
        return None
    return Diagnosis(
        SECURE_BOOT_REJECTED,
        "the kernel refused the nvidia module: it is not signed by a key Secure Boot trusts",
        _secure_boot_fix(context),
    )


def _nouveau(text: str, context: Context) -> Diagnosis | None:
    if not re.search(
        r"NVRM: The NVIDIA probe routine was not called"
        r"|nouveau, rivafb, nvidiafb or rivatv\s+(?:NVRM:\s+)?was loaded",
        text,
    ):
        return None
    return _nouveau_diagnosis()


def _nouveau_diagnosis() -> Diagnosis:
    return Diagnosis(
        NOUVEAU,
        "the open-source nouveau driver holds the GPU, so the nvidia module cannot bind it",
        "blacklist nouveau (blacklist nouveau / options nouveau modeset=0 in /etc/modprobe.d), "
        "update-initramfs -u and reboot: gpurig's driver stage does all three",
    )


def _module_missing(text: str, context: Context) -> Diagnosis | None:
    match = re.search(r"Module (nvidia\S*) not found in directory /lib/modules/(\S+)", text)
    if not match:
        return None
    return Diagnosis(
        MODULE_MISSING,
        f"no {match[1]} module is installed for kernel {match[2]} (DKMS did not build it, or "
        "the kernel was upgraded after the driver)",
        _headers_fix(match[2], context) + "; then `dkms autoinstall` builds it",
    )


def _no_module_loading(text: str, context: Context) -> Diagnosis | None:
    if not re.search(r"could not insert 'nvidia\S*': Operation not permitted", text):
        return None
    return Diagnosis(
        NO_MODULE_LOADING,
        "modprobe is not permitted here (a container, or kernel lockdown)",
        "load the driver on the machine that owns the kernel (the container host or VM)",
    )


def _nvml_mismatch(text: str, context: Context) -> Diagnosis | None:
    if not re.search(r"Driver/library version mismatch|NVRM: API mismatch", text):
        return None
    library = re.search(r"NVML library version: (\S+)", text)
    api = re.search(r"client has the version (\S+), but\s+(?:NVRM: )?this kernel module has the "
                    r"version (\S+?)\.?\s", text)  # fmt: skip
    if api:
        detail = f"the libraries are {api[1]}, the loaded kernel module {api[2]}"
    elif library:
        detail = f"the libraries are {library[1]}, the loaded kernel module is older"
    else:
        detail = "the driver libraries were upgraded under a loaded kernel module"
    return Diagnosis(
        NVML_MISMATCH,
        detail,
        "reboot the host so the new module loads (gpurig reboots when nvidia.allow_reboot is "
        "true); hold the driver packages (nvidia.hold_packages) so it does not recur",
    )


def _fell_off_bus(text: str, context: Context) -> Diagnosis | None:
    match = re.search(r"Xid \(PCI:(\S+?)\): 79\b|GPU has fallen off the bus", text)
    if not match:
        return None
    where = f" at {match[1]}" if match[1] else ""
    return Diagnosis(
        FELL_OFF_BUS,
        f"the GPU{where} stopped answering on the PCI bus (Xid 79)",
        "power-cycle the host (a warm reboot is often not enough); if it recurs, check PCIe "
        "seating, power and cooling with the provider",
    )


def _no_device(text: str, context: Context) -> Diagnosis | None:
    if not re.search(r"^No devices were found", text, re.M):
        return None
    return Diagnosis(
        NO_DEVICE,
        "the driver is loaded but exposes no GPU",
        "check dmesg for NVRM errors: a GPU newer than the driver branch (raise "
        "nvidia.driver_branch), a GPU that fell off the bus (power-cycle), or a VM whose GPU "
        "is not passed through",
    )


def _not_loaded(text: str, context: Context) -> Diagnosis | None:
    if "couldn't communicate with the NVIDIA driver" not in text:
        return None
    kernel = context.kernel or "the running kernel"
    return Diagnosis(
        NOT_LOADED,
        f"nvidia-smi cannot reach the driver: no nvidia module is loaded on {kernel}",
        "`sudo modprobe nvidia` shows why; usually the kernel was upgraded and the module not "
        "rebuilt (install its headers, `dkms autoinstall`) or the host needs a reboot",
    )


# The CUDA version torch reports in "found version 12020" is major*1000 + minor*10.
def _too_old(text: str, context: Context) -> Diagnosis | None:
    match = re.search(r"The NVIDIA driver on your system is too old \(found version (\d+)\)", text)
    insufficient = re.search(r"CUDA driver version is insufficient for CUDA runtime version", text)
    if not match and not insufficient:
        return None
    found = ""
    if match:
        number = int(match[1])
        found = f" (it supports CUDA {number // 1000}.{number % 1000 // 10})"
    return Diagnosis(
        TOO_OLD,
        f"torch's CUDA runtime is newer than the driver{found}, so torch runs on the CPU",
        "choose an older CUDA variant in torch.variants, or raise nvidia.driver_branch "
        "(`gpurig preflight` names both)",
    )


RECOGNISERS = (
    _dpkg_locked,
    _repo_unreachable,
    _repo_key,
    _package_missing,
    _dkms_failed,
    _secure_boot_rejected,
    _nouveau,
    _module_missing,
    _no_module_loading,
    _nvml_mismatch,
    _fell_off_bus,
    _no_device,
    _not_loaded,
    _too_old,
)


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
    TOO_OLD,
    UNRECOGNISED,
)


# Symptoms that only restate a cause found beside them: "driver not loaded" after "DKMS build
# failed" says nothing new.
CONSEQUENCES = {
    NOT_LOADED: {DKMS_FAILED, MODULE_MISSING, SECURE_BOOT_REJECTED, SECURE_BOOT_UNSIGNED,
                 NOUVEAU, NO_MODULE_LOADING, NVML_MISMATCH},
    MODULE_MISSING: {DKMS_FAILED},
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
    return ranked(d for recognise in RECOGNISERS if (d := recognise(text, context)))


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
        found.append(_nouveau_diagnosis())
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
            _headers_fix(facts.kernel, context),
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
