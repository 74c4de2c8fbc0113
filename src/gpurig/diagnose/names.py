"""The named diagnoses: their stable names, what one says, and the fixes several of them share."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from gpurig.hostlayout import DKMS_MOK

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
FABRIC_MANAGER = "fabric manager not running"  # HGX boards: CUDA waits for it
# Services and reboots (systemd hosts).
PERSISTENCED_FAILED = "nvidia-persistenced failed"
NO_REBOOT = "host did not come back from reboot"

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


def headers_fix(kernel: str, context: Context) -> str:
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


def secure_boot_fix(context: Context) -> str:
    if context.os_id == "ubuntu":
        return (
            "install Canonical's signed precompiled modules "
            "(linux-modules-nvidia-<branch>-server-$(uname -r)): gpurig does when it sees "
            "Secure Boot, so re-run its deploy"
        )
    if context.os_id == "debian":
        return ENROLL_MOK
    return f"on Ubuntu use the signed linux-modules-nvidia-* packages; on Debian {ENROLL_MOK}"


NOUVEAU_MESSAGE = (
    "the open-source nouveau driver holds the GPU, so the nvidia module cannot bind it"
)
NOUVEAU_FIX = (
    "blacklist nouveau (blacklist nouveau / options nouveau modeset=0 in /etc/modprobe.d), "
    "update-initramfs -u and reboot: gpurig's driver stage does all three"
)


def nouveau_diagnosis() -> Diagnosis:
    return Diagnosis(NOUVEAU, NOUVEAU_MESSAGE, NOUVEAU_FIX)
