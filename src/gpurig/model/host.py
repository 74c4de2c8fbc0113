"""The host as gpurig sees it: facts gathered before any change, and the GPUs it knows.

The bottom of the import graph: facts (I/O), preflight and diagnose (policy) and the plan all
import this module, and it imports none of them.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

import yaml
from packaging.version import Version

# Name prefixes (gpus.yaml's names, as pci_gpu gives them) of the cards that are not datacenter
# GPUs: DCGM runs on them with "limited functionality" and no diagnostics worth a stage.
WORKSTATION_AND_CONSUMER = ("NVIDIA GeForce", "NVIDIA Quadro", "NVIDIA RTX ")


@dataclass(frozen=True)
class PciGpu:
    slot: str  # 0000:3b:00.0
    device_id: str  # 2330 (vendor is always 10de)
    name: str  # what gpurig knows it as, "NVIDIA H100 SXM5", or "NVIDIA 10de:xxxx"
    compute_capability: str | None  # "9.0" when the id is known

    @property
    def sm(self) -> str:
        return (
            f"sm_{self.compute_capability.replace('.', '')}" if self.compute_capability else "sm_?"
        )

    @property
    def datacenter(self) -> bool:
        """A datacenter GPU (what DCGM's diagnostics are for): a known id whose name is not a
        GeForce, Quadro or RTX workstation card. An unknown id is not assumed to be one."""
        known = self.device_id in gpu_table().gpus
        return known and not self.name.startswith(WORKSTATION_AND_CONSUMER)


@dataclass(frozen=True)
class Architecture:
    name: str
    cc_min: Version
    cc_max: Version
    min_branch: int
    max_branch: int | None  # None: current drivers still support it
    open_modules: str  # "no", "yes", or "required"


@dataclass(frozen=True)
class GpuTable:
    """data/gpus.yaml: PCI device id -> (name, compute capability), and the architectures."""

    gpus: dict[str, tuple[str, str]]
    architectures: list[Architecture]

    def architecture(self, cc: str | None) -> Architecture | None:
        if cc is None:
            return None
        version = Version(cc)
        return next((a for a in self.architectures if a.cc_min <= version <= a.cc_max), None)


@cache
def gpu_table() -> GpuTable:
    raw = yaml.safe_load(resources.files("gpurig.data").joinpath("gpus.yaml").read_text())
    gpus = {str(k).lower(): (str(v["name"]), str(v["cc"])) for k, v in raw["gpus"].items()}
    arches = [
        Architecture(
            a["name"],
            Version(a["cc"][0]),
            Version(a["cc"][1]),
            int(a["driver_branches"][0]),
            a["driver_branches"][1],
            str(a["open_modules"]),
        )
        for a in raw["architectures"]
    ]
    return GpuTable(gpus, arches)


def pci_gpu(
    slot: str, device_id: str, smi_name: str | None = None, smi_cc: str | None = None
) -> PciGpu:
    """A GPU on the PCI bus, named from gpus.yaml, else from nvidia-smi, else by its id."""
    known = gpu_table().gpus.get(device_id.lower())
    if known:
        return PciGpu(slot, device_id.lower(), f"NVIDIA {known[0]}", known[1])
    name = smi_name or f"NVIDIA 10de:{device_id.lower()}"
    return PciGpu(slot, device_id.lower(), name, smi_cc)


def has_kernels(cc: str, arches: list[str]) -> bool:
    """Does a build shipping SASS for `arches` run on a GPU of compute capability `cc`?

    CUDA binaries run on the same major version at an equal or higher minor (sm_86 code runs
    on an sm_89 L4), never across majors; PTX JIT is not counted (compat.yaml's arches)."""
    major, minor = (int(x) for x in cc.split("."))
    for arch in arches:
        a_major, a_minor = (int(x) for x in arch.split("."))
        if a_major == major and a_minor <= minor:
            return True
    return False


def sm_list(arches: list[str]) -> str:
    return ", ".join(f"sm_{a.replace('.', '')}" for a in arches) or "none"


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
    driver_version: str | None = None  # loaded kernel module (/proc/driver/nvidia/version)
    secure_boot: bool | None = None
    nouveau_loaded: bool = False
    # The GPU layer's state (gpurig.facts.gpu): for diagnoses before anything changes.
    kernel: str | None = None  # uname -r
    kernel_headers: bool | None = None  # /lib/modules/<kernel>/build exists
    nvidia_module: str | None = None  # version of an nvidia module built for <kernel>
    nvidia_smi: str | None = None  # nvidia-smi's output; None: not installed
    nvidia_smi_rc: int | None = None
    kernel_log: list[str] = field(default_factory=list)  # dmesg lines about the driver
    dkms: list[str] = field(default_factory=list)  # `dkms status` lines
    dkms_mok_enrolled: bool | None = None  # None: no DKMS signing key yet
    nvswitches: int = 0  # NVSwitch devices on the PCI bus: an HGX/DGX board (fabric manager)
    hub: str | None = None  # the Hub probe's line (gpurig.facts.hub); None: not asked

    @property
    def os_name(self) -> str:
        return f"{self.os_id}-{self.os_version}"


@dataclass(frozen=True)
class SmiGpu:
    bus_id: str  # normalised to lspci's form, 0000:3b:00.0
    name: str
    driver_version: str
    compute_cap: str | None


@dataclass(frozen=True)
class GpuState:
    """The NVIDIA layer of a host, as one fact."""

    gpus: list[PciGpu] = field(default_factory=list)  # NVIDIA display controllers (class 03xx)
    pci_source: str = "lspci"  # lspci, or sysfs when pciutils is absent
    driver_version: str | None = None  # the loaded kernel module
    smi_rc: int | None = None  # None: no nvidia-smi
    smi_output: str = ""
    smi_gpus: list[SmiGpu] = field(default_factory=list)
    secure_boot: bool | None = None  # None: cannot tell
    modules: list[str] = field(default_factory=list)  # loaded nvidia*/nouveau modules
    kernel: str = ""
    kernel_headers: bool = False  # /lib/modules/$(uname -r)/build exists
    module_version: str | None = None  # an nvidia module installed for the running kernel
    packages: dict[str, str] = field(default_factory=dict)  # installed, nvidia/kernel/cuda
    held: list[str] = field(default_factory=list)  # of those, held (apt-mark hold)
    dkms: list[str] = field(default_factory=list)  # `dkms status` lines
    dkms_mok_enrolled: bool | None = None  # None: no DKMS key (or no mokutil)
    kernel_log: list[str] = field(default_factory=list)  # dmesg lines about the driver
    nouveau_blacklisted: bool = False
    files: dict[str, str] = field(default_factory=dict)  # MANAGED_FILES present -> sha256
    systemd: bool = False
    container: bool = False
    # A container the sandbox marks as a VM stand-in (hostlayout.VM_STANDIN_MARKER): its engine
    # restarts it on reboot, so a reboot there behaves as on a VM.
    vm_standin: bool = False
    persistenced: tuple[str, str] = ("", "")  # systemctl is-active, is-enabled
    # HGX/DGX baseboards: NVSwitch devices on the PCI bus (slots), and the fabric manager that
    # CUDA needs on them (systemctl is-active, is-enabled of nvidia-fabricmanager).
    nvswitches: list[str] = field(default_factory=list)
    fabricmanager: tuple[str, str] = ("", "")

    @property
    def nouveau_loaded(self) -> bool:
        return "nouveau" in self.modules

    @property
    def nvidia_loaded(self) -> bool:
        return "nvidia" in self.modules

    @property
    def can_reboot(self) -> bool:
        """A machine of its own under systemd; a container cannot reboot into a new module,
        unless it is the sandbox's VM stand-in (which comes back as the same host)."""
        return self.systemd and (not self.container or self.vm_standin)

    @property
    def installed_driver(self) -> str | None:
        """The user-space driver version the packages installed (what a reboot would load)."""
        for name, version in sorted(self.packages.items()):
            if re.match(r"^(libnvidia-compute-\d+|libcuda1|libnvidia-ml1|nvidia-utils-\d+)", name):
                match = re.match(r"^(?:\d+:)?(\d+\.\d+(?:\.\d+)?)", version)
                if match:
                    return match[1]
        return None


def apply(facts: HostFacts, state: GpuState) -> HostFacts:
    """`facts` with its GPU fields taken from the GPU layer's own fact."""
    return dataclasses.replace(
        facts,
        gpus=state.gpus,
        driver_version=state.driver_version,
        secure_boot=state.secure_boot,
        nouveau_loaded=state.nouveau_loaded,
        kernel=state.kernel or None,
        kernel_headers=state.kernel_headers,
        nvidia_module=state.module_version,
        nvidia_smi=state.smi_output if state.smi_rc is not None else None,
        nvidia_smi_rc=state.smi_rc,
        kernel_log=state.kernel_log,
        dkms=state.dkms,
        dkms_mok_enrolled=state.dkms_mok_enrolled,
        nvswitches=len(state.nvswitches),
    )
