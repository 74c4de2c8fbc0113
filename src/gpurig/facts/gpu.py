"""The NVIDIA layer's facts, read in one round trip: GPUs on the PCI bus, the driver, its state.

`GpuHost` runs one POSIX sh script, as the SSH user, that prints `@@section` headers, and parses
it into a `GpuState`. `apply(facts, state)` fills the GPU fields of `model.host.HostFacts`; the
driver stage (`gpurig.deploys.nvidia`) reads `GpuState` itself, before and after it changes
anything (pyinfra 3 reads facts afresh on every call).
"""

from __future__ import annotations

import re
import shlex

from pyinfra.api.facts import FactBase

from gpurig.hostlayout import (
    DKMS_MOK,
    NONFREE_LIST,
    NOUVEAU_CONF,
    PERSISTENCED_DROPIN,
    UNATTENDED_CONF,
    VM_STANDIN_MARKER,
)
from gpurig.model.host import GpuState, SmiGpu, apply, pci_gpu

__all__ = [
    "NONFREE_LIST",
    "NOUVEAU_CONF",
    "PERSISTENCED_DROPIN",
    "UNATTENDED_CONF",
    "VM_STANDIN_MARKER",
    "GpuHost",
    "GpuState",
    "apply",
    "parse",
]

NVIDIA_VENDOR = "10de"
# NVSwitch: an NVIDIA function of PCI class 0680 ("Bridge: other"). The ids, from NVIDIA's
# open-gpu-kernel-modules (src/common/nvswitch/kernel/nvswitch.c, nvswitch_lr10_device_ids and
# nvswitch_ls10_device_ids): 1ae8 and 1af0-1aff on A100 HGX boards (LR10), 22a0-22a7 on H100/H200
# boards (LS10; HGX H100 shows four 10de:22a3, and the driver logs "nvidia-nvswitch: Probing
# device ..., Device Id = 0x22a3, Class = 0x68000"). The class is the test, so ids not listed
# there yet still count.
NVSWITCH_CLASS = "0680"
# /proc/driver/nvidia/version: "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.65.06  ..."
# or, for the open modules, "NVIDIA UNIX Open Kernel Module for x86_64  580.65.06  ...".
# Without procfs's file (the sandbox's pretend driver has only sysfs), the script prints
# /sys/module/nvidia/version, the same version, as "Kernel Module VERSION".
DRIVER_VERSION = re.compile(r"Kernel Module(?: for \S+)?\s+(\d+\.\d+(?:\.\d+)?)")
PACKAGE_PATTERN = (
    r"^(nvidia|libnvidia|libcuda|linux-(image|headers|modules|signatures)|cuda|firmware-nvidia"
    r"|dkms$|unattended-upgrades$)"
)
SMI_FIELDS = "pci.bus_id,name,driver_version,compute_cap"
# Files the driver stage writes: their sha256 tells it what to rewrite.
MANAGED_FILES = (NOUVEAU_CONF, UNATTENDED_CONF, PERSISTENCED_DROPIN, NONFREE_LIST)

# The kernel log's lines that tell a driver's story, as a filter of `dmesg`.
KLOG_FILTER = "grep -aiE 'nvrm|nvidia|nouveau|key was rejected|unsigned module' | tail -n 40"
# Everything is read without sudo except the kernel log (dmesg_restrict): `sudo -n` or nothing.
SCRIPT = r"""
PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"  # dkms, modinfo, lspci: not on a user's PATH
echo @@pci
if command -v lspci >/dev/null 2>&1; then
  echo lspci; lspci -Dnmm -d __VENDOR__: 2>/dev/null
else
  echo sysfs
  for d in /sys/bus/pci/devices/*; do
    v=; read -r v 2>/dev/null < "$d/vendor"  # a builtin: a server has a hundred devices
    [ "$v" = 0x__VENDOR__ ] || continue
    echo "${d##*/} \"$(cut -c3-6 "$d/class")\" \"__VENDOR__\" \"$(cut -c3- "$d/device")\""
  done
fi
echo @@driver
if [ -r /proc/driver/nvidia/version ]; then cat /proc/driver/nvidia/version
elif [ -r /sys/module/nvidia/version ]; then sed 's/^/Kernel Module /' /sys/module/nvidia/version; fi
echo @@smi
if command -v nvidia-smi >/dev/null 2>&1; then
  out=$(timeout 30 nvidia-smi --query-gpu=__SMI__ --format=csv,noheader 2>&1); rc=$?
  case "$out" in *"not a valid field"*)
    out=$(timeout 30 nvidia-smi --query-gpu=__SMI_OLD__ --format=csv,noheader 2>&1); rc=$? ;;
  esac
  echo "rc=$rc"; printf '%s\n' "$out"
fi
echo @@secureboot
if command -v mokutil >/dev/null 2>&1; then
  mokutil --sb-state 2>&1 | head -n 1
elif [ -d /sys/firmware/efi ]; then
  v=$(od -An -t u1 /sys/firmware/efi/efivars/SecureBoot-* 2>/dev/null | awk '{print $NF}')
  echo "efivar=$v"
else
  echo "no-efi"
fi
# /sys/module/NAME exists while module NAME is loaded (the same list as /proc/modules).
echo @@modules
for m in /sys/module/nvidia* /sys/module/nouveau*; do [ -e "$m" ] && echo "${m##*/}"; done
echo @@kernel
r=$(uname -r); echo "$r"
[ -e "/lib/modules/$r/build" ] && echo headers
set -- $(modinfo -F version nvidia 2>/dev/null); echo "module=${1:-}"
echo @@packages
dpkg-query -W -f='${db:Status-Abbrev}|${Package}|${Version}\n' 2>/dev/null | awk -F'|' '$2 ~ /__PACKAGES__/'
echo @@dkms
command -v dkms >/dev/null 2>&1 && dkms status 2>/dev/null
echo @@mok
if [ -f __MOK__ ] && command -v mokutil >/dev/null 2>&1; then
  mokutil --test-key __MOK__ 2>&1 | head -n 1
fi
echo @@log
# Read already, as root, where preflight's probe made its one sudo (gpurig.facts.preflight_probe)
if [ -n "${_gpurig_klog+x}" ]; then [ -z "$_gpurig_klog" ] || printf '%s\n' "$_gpurig_klog"
else { dmesg 2>/dev/null || sudo -n dmesg 2>/dev/null; } | __KLOG__; fi
echo @@blacklist
grep -lsE '^[[:space:]]*blacklist[[:space:]]+nouveau' /etc/modprobe.d/*.conf /lib/modprobe.d/*.conf /usr/lib/modprobe.d/*.conf
echo @@files
for f in __FILES__; do [ -f "$f" ] && sha256sum "$f"; done
echo @@init
if [ -d /run/systemd/system ]; then
  echo systemd
  # One systemctl for both units (is-active and is-enabled were four): NAME=active,enabled
  systemctl show -p Id -p ActiveState -p UnitFileState nvidia-persistenced nvidia-fabricmanager 2>/dev/null | {
    u= a= e=
    while IFS='=' read -r k v; do
      case $k in
        Id) u=${v%.service} ;; ActiveState) a=$v ;; UnitFileState) e=$v ;;
        '') [ -z "$u" ] || echo "${u#nvidia-}=$a,$e"; u= a= e= ;;
      esac
    done
    [ -z "$u" ] || echo "${u#nvidia-}=$a,$e"
  }
fi
if [ -f /.dockerenv ] || [ -f /run/.containerenv ]; then echo container
elif command -v systemd-detect-virt >/dev/null 2>&1 && systemd-detect-virt -cq; then echo container
fi
[ -f __VM_STANDIN__ ] && echo vm-standin
true
"""  # noqa: E501


def _sections(lines: list[str]) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in lines:
        if line.startswith("@@"):
            current = sections.setdefault(line[2:].strip(), [])
        elif current is not None:
            current.append(line.rstrip())
    return sections


def _nvidia_functions(lines: list[str]) -> list[tuple[str, str, str]]:
    """(slot, class, device id) of every NVIDIA function in `lspci -Dnmm` lines."""
    found = []
    for line in lines:
        try:
            fields = [f for f in shlex.split(line) if not f.startswith("-")]
        except ValueError:
            continue
        if len(fields) >= 4 and fields[2].lower() == NVIDIA_VENDOR:
            found.append((fields[0].lower(), fields[1], fields[3].lower()))
    return found


def parse_pci(lines: list[str]) -> list[tuple[str, str]]:
    """(slot, device id) of NVIDIA display controllers (class 03xx) in `lspci -Dnmm` lines.

    Other NVIDIA functions (the HDMI audio and USB-C controllers of GeForce boards, NVSwitch
    bridges on HGX baseboards) are not GPUs."""
    return [
        (slot, device) for slot, cls, device in _nvidia_functions(lines) if cls.startswith("03")
    ]


def parse_nvswitches(lines: list[str]) -> list[str]:
    """Slots of the NVSwitch devices (NVIDIA, class 0680) in `lspci -Dnmm` lines."""
    return [slot for slot, cls, _ in _nvidia_functions(lines) if cls == NVSWITCH_CLASS]


def parse_driver(lines: list[str]) -> str | None:
    for line in lines:
        match = DRIVER_VERSION.search(line)
        if match:
            return match[1]
    return None


def normalise_bus_id(bus_id: str) -> str:
    """nvidia-smi's 00000000:3B:00.0 -> lspci's 0000:3b:00.0."""
    domain, _, rest = bus_id.strip().lower().rpartition(":")
    domain, _, bus = domain.rpartition(":")
    return f"{int(domain or '0', 16):04x}:{bus}:{rest}"


def parse_smi(lines: list[str]) -> tuple[int | None, str, list[SmiGpu]]:
    if not lines or not lines[0].startswith("rc="):
        return None, "", []
    rc = int(lines[0][3:] or 0)
    body = [line for line in lines[1:] if line.strip()]
    gpus = []
    if rc == 0:
        for line in body:
            fields = [f.strip() for f in line.split(",")]
            if len(fields) >= 3 and re.match(r"^[0-9A-Fa-f]+:[0-9A-Fa-f]+:", fields[0]):
                cc = fields[3] if len(fields) > 3 and re.match(r"^\d+\.\d+$", fields[3]) else None
                gpus.append(SmiGpu(normalise_bus_id(fields[0]), fields[1], fields[2], cc))
    return rc, "\n".join(body), gpus


def _smi_driver(gpus: list[SmiGpu]) -> str | None:
    """The driver nvidia-smi reports, where /proc does not show the module: nvidia-smi answers
    only through a loaded module, so this is the loaded version too (bloomkit's env reads it
    the same way; the sandbox's loaded-driver shapes are such hosts)."""
    return gpus[0].driver_version if gpus else None


def parse_secure_boot(lines: list[str]) -> bool | None:
    text = " ".join(lines).lower()
    if "secureboot enabled" in text or re.search(r"efivar=1\b", text):
        return True
    if (
        "secureboot disabled" in text
        or re.search(r"efivar=0\b", text)
        or "no-efi" in text
        or "doesn't support secure boot" in text
        or "efi variables are not supported" in text
    ):
        return False  # legacy BIOS boot has no Secure Boot
    return None


def parse_packages(lines: list[str]) -> tuple[dict[str, str], list[str]]:
    installed: dict[str, str] = {}
    held = []
    for line in lines:
        status, _, rest = line.partition("|")
        name, _, version = rest.partition("|")
        if len(status) < 2 or status[1] not in "iHUFW" or not name:
            continue
        name = name.split(":", 1)[0]  # libcuda1:amd64
        if status[1] == "i":
            installed[name] = version
        if status[0] == "h":
            held.append(name)
    return installed, sorted(held)


def parse(output: list[str]) -> GpuState:
    sections = _sections(output)
    pci = sections.get("pci", [])
    source = pci[0] if pci and pci[0] in ("lspci", "sysfs") else "lspci"
    smi_rc, smi_output, smi_gpus = parse_smi(sections.get("smi", []))
    by_bus = {gpu.bus_id: gpu for gpu in smi_gpus}
    gpus = []
    for slot, device in parse_pci(pci):
        smi = by_bus.get(slot)
        gpus.append(
            pci_gpu(slot, device, smi.name if smi else None, smi.compute_cap if smi else None)
        )
    kernel_lines = sections.get("kernel", [])
    module = next((ln[7:] for ln in kernel_lines if ln.startswith("module=")), "")
    packages, held = parse_packages(sections.get("packages", []))
    mok = " ".join(sections.get("mok", [])).lower()
    init = sections.get("init", [])
    files = {}
    for line in sections.get("files", []):
        digest, _, path = line.partition("  ")
        if path:
            files[path.strip()] = digest.strip()
    persistenced = next((ln[13:] for ln in init if ln.startswith("persistenced=")), ",")
    active, _, enabled = persistenced.partition(",")
    fabric = next((ln[14:] for ln in init if ln.startswith("fabricmanager=")), ",")
    fabric_active, _, fabric_enabled = fabric.partition(",")
    return GpuState(
        gpus=gpus,
        pci_source=source,
        driver_version=parse_driver(sections.get("driver", [])) or _smi_driver(smi_gpus),
        smi_rc=smi_rc,
        smi_output=smi_output,
        smi_gpus=smi_gpus,
        secure_boot=parse_secure_boot(sections.get("secureboot", [])),
        modules=sorted(ln.strip() for ln in sections.get("modules", []) if ln.strip()),
        kernel=kernel_lines[0].strip() if kernel_lines else "",
        kernel_headers="headers" in kernel_lines,
        module_version=module.strip() or None,
        packages=packages,
        held=held,
        dkms=[ln.strip() for ln in sections.get("dkms", []) if ln.strip()],
        dkms_mok_enrolled=("already enrolled" in mok) if mok else None,
        kernel_log=[ln for ln in sections.get("log", []) if ln.strip()],
        nouveau_blacklisted=any(ln.strip() for ln in sections.get("blacklist", [])),
        files=files,
        systemd="systemd" in init,
        container="container" in init,
        vm_standin="vm-standin" in init,
        persistenced=(active, enabled),
        nvswitches=parse_nvswitches(pci),
        fabricmanager=(fabric_active, fabric_enabled),
    )


class GpuHost(FactBase[GpuState]):
    """The NVIDIA layer of a host (GPUs, driver, Secure Boot, kernel, packages) in one read."""

    def command(self) -> str:
        return (
            SCRIPT.replace("__VENDOR__", NVIDIA_VENDOR)
            .replace("__SMI_OLD__", SMI_FIELDS.rsplit(",", 1)[0])
            .replace("__SMI__", SMI_FIELDS)
            .replace("__PACKAGES__", PACKAGE_PATTERN)
            .replace("__FILES__", " ".join(MANAGED_FILES))
            .replace("__MOK__", DKMS_MOK)
            .replace("__VM_STANDIN__", VM_STANDIN_MARKER)
            .replace("__KLOG__", KLOG_FILTER)
        )

    @staticmethod
    def default() -> GpuState:
        return GpuState()

    def process(self, output: list[str]) -> GpuState:
        return parse(output)
