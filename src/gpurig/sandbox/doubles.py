"""Test doubles for hardware this machine lacks: a GPU on the PCI bus, Secure Boot.

A sandbox host started with `--pretend-gpu SKU` gets a fake `/usr/local/bin/lspci` (first on
PATH, ahead of pciutils') that prints what `lspci -Dnmm` prints on a cloud VM with that GPU,
and a marker file; `--pretend-secure-boot` adds a fake `mokutil`. Facts that detect GPUs should
parse `lspci -Dnmm`: the double prints that format whatever the flags, honouring only `-d`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gpurig.errors import UsageError

NVIDIA = "10de"
LSPCI_PATH = "/usr/local/bin/lspci"
MOKUTIL_PATH = "/usr/local/bin/mokutil"
MARKER_PATH = "/etc/gpurig-pretend-gpu"
GPU_SLOT = "0000:00:05.0"

# What a KVM cloud VM shows besides the GPU: 440FX host bridge, PIIX3 ISA bridge, virtio-net.
_VM_DEVICES = (
    '0000:00:00.0 "0600" "8086" "1237" -r02 "1af4" "1100"',
    '0000:00:01.0 "0601" "8086" "7000" "1af4" "1100"',
    '0000:00:03.0 "0200" "1af4" "1000" "1af4" "0001"',
)


@dataclass(frozen=True)
class GpuSku:
    name: str
    description: str
    device: str  # PCI device id under vendor 10de
    pci_class: str  # 0302 3D controller (datacenter), 0300 VGA (GeForce)
    subsystem: str  # board subsystem id; illustrative, match on vendor:device

    @property
    def pci_id(self) -> str:
        return f"{NVIDIA}:{self.device}"

    def lspci_line(self) -> str:
        ids = f'"{self.pci_class}" "{NVIDIA}" "{self.device}" -ra1 "{NVIDIA}" "{self.subsystem}"'
        return f"{GPU_SLOT} {ids}"


GPU_SKUS: dict[str, GpuSku] = {
    sku.name: sku
    for sku in (
        GpuSku("H100", "H100 SXM5 80GB", "2330", "0302", "16c1"),
        GpuSku("H100-PCIE", "H100 PCIe 80GB", "2331", "0302", "1626"),
        GpuSku("H200", "H200 SXM 141GB", "2335", "0302", "18be"),
        GpuSku("A100", "A100 SXM4 80GB", "20b2", "0302", "1463"),
        GpuSku("L4", "L4 24GB", "27b8", "0302", "16ca"),
        GpuSku("L40S", "L40S 48GB", "26b9", "0302", "1851"),
        GpuSku("A10", "A10 24GB", "2236", "0302", "1482"),
        GpuSku("RTX4090", "GeForce RTX 4090 24GB", "2684", "0300", "167c"),
    )
}
_ALIASES = {"H100-SXM": "H100", "H100SXM": "H100", "H100PCIE": "H100-PCIE", "RTX-4090": "RTX4090"}


def resolve_sku(name: str) -> GpuSku:
    key = name.strip().upper().replace(" ", "-").replace("_", "-")
    sku = GPU_SKUS.get(_ALIASES.get(key, key))
    if sku is None:
        known = ", ".join(GPU_SKUS)
        raise UsageError(f"unknown GPU SKU {name!r} for --pretend-gpu: use one of {known}")
    return sku


def lspci_output(sku: GpuSku) -> str:
    """What `lspci -Dnmm` prints on a cloud VM with one such GPU."""
    return "\n".join([*_VM_DEVICES, sku.lspci_line()]) + "\n"


def lspci_script(sku: GpuSku) -> str:
    return f"""#!/bin/sh
# gpurig sandbox test double: pretends a {sku.description} ({sku.pci_id}) is on the PCI bus.
# Prints `lspci -Dnmm` format whatever the flags; honours `-d VENDOR:[DEVICE]` filters.
filter=""
while [ $# -gt 0 ]; do
  case "$1" in
    -d) filter="$2"; shift ;;
    -d*) filter="${{1#-d}}" ;;
  esac
  shift
done
vendor="${{filter%%:*}}"; device="${{filter#*:}}"
[ "$filter" = "$vendor" ] && device=""
while IFS= read -r line; do
  set -- $line
  [ -n "$vendor" ] && [ "$3" != "\\"$vendor\\"" ] && continue
  [ -n "$device" ] && [ "$4" != "\\"$device\\"" ] && continue
  printf '%s\\n' "$line"
done <<'EOF'
{lspci_output(sku)}EOF
"""


def marker_text(sku: GpuSku) -> str:
    return f"sku={sku.name}\npci_id={sku.pci_id}\ndescription={sku.description}\n"


MOKUTIL_SCRIPT = """#!/bin/sh
# gpurig sandbox test double: Secure Boot is on, so unsigned kernel modules would not load.
echo "SecureBoot enabled"
"""


def host_files(pretend_gpu: str | None, pretend_secure_boot: bool) -> dict[str, tuple[int, str]]:
    """Files to drop into a sandbox host: path -> (mode, content)."""
    files: dict[str, tuple[int, str]] = {}
    if pretend_gpu:
        sku = resolve_sku(pretend_gpu)
        files[LSPCI_PATH] = (0o755, lspci_script(sku))
        files[MARKER_PATH] = (0o644, marker_text(sku))
    if pretend_secure_boot:
        files[MOKUTIL_PATH] = (0o755, MOKUTIL_SCRIPT)
    return files


# --pretend-driver VERSION (systemd hosts with --pretend-gpu): the driver's user-space view of
# a loaded module. The container's /sys/module is its own tmpfs (emptied by every restart, as a
# reboot unloads every module); at boot a unit "loads" the installed module by writing
# /sys/module/nvidia/version from the installed version in PRETEND_DRIVER_PATH, which a test
# changes to stand for a driver upgraded under the loaded module. modinfo and nvidia-smi
# stand-ins answer from those two files. Facts read the loaded module from sysfs, which on a
# real host says what /proc/modules and /proc/driver/nvidia/version say.
PRETEND_DRIVER_PATH = "/etc/gpurig-pretend-driver"
NVIDIA_SMI_PATH = "/usr/local/bin/nvidia-smi"
MODINFO_PATH = "/usr/local/bin/modinfo"
PRETEND_DRIVER_UNIT = "/etc/systemd/system/gpurig-pretend-driver.service"
PRETEND_DRIVER_UNIT_TEXT = f"""\
[Unit]
Description=gpurig sandbox test double: the kernel loads the installed NVIDIA module at boot
DefaultDependencies=no
Before=sysinit.target

[Service]
Type=oneshot
ExecStart=/bin/mkdir -p /sys/module/nvidia
ExecStart=/bin/cp {PRETEND_DRIVER_PATH} /sys/module/nvidia/version

[Install]
WantedBy=sysinit.target
"""
PRETEND_DRIVER_LINK = "/etc/systemd/system/sysinit.target.wants/gpurig-pretend-driver.service"
MODINFO_SCRIPT = f"""#!/bin/sh
# gpurig sandbox test double: the nvidia module installed for the running kernel is the
# version in {PRETEND_DRIVER_PATH}; any other module is the real modinfo's.
last=""; for a in "$@"; do last="$a"; done
case " $* " in *" -F version "*)
  if [ "$last" = nvidia ]; then cat {PRETEND_DRIVER_PATH}; exit 0; fi ;;
esac
exec /sbin/modinfo "$@"
"""


def nvidia_smi_script(sku: GpuSku) -> str:
    """nvidia-smi for the pretend GPU while /sys/module/nvidia says a module is loaded."""
    return f"""#!/bin/sh
# gpurig sandbox test double: nvidia-smi sees the pretend {sku.description} while the
# pretend module is loaded (/sys/module/nvidia/version); --query-gpu=... --format=csv only.
loaded=$(cat /sys/module/nvidia/version 2>/dev/null)
if [ -z "$loaded" ]; then
  echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running."
  exit 9
fi
fields=""
for a in "$@"; do case "$a" in --query-gpu=*) fields="${{a#--query-gpu=}}" ;; esac; done
out=""
for f in $(echo "$fields" | tr , ' '); do
  case "$f" in
    pci.bus_id) v="0000{GPU_SLOT}" ;;
    name) v="NVIDIA {sku.description}" ;;
    driver_version) v="$loaded" ;;
    *) v="[N/A]" ;;
  esac
  out="${{out:+$out, }}$v"
done
echo "$out"
"""  # noqa: E501


def pretend_driver_files(
    pretend_gpu: str | None, pretend_driver: str | None
) -> dict[str, tuple[int, str]]:
    """The pretend driver's files (path -> (mode, content)); its boot unit is linked by
    PRETEND_DRIVER_LINK."""
    if not pretend_driver:
        return {}
    if not pretend_gpu:
        raise UsageError("--pretend-driver needs --pretend-gpu: a driver needs a GPU to drive")
    if not re.fullmatch(r"\d+\.\d+(?:\.\d+)?", pretend_driver):
        raise UsageError(f"--pretend-driver {pretend_driver!r}: give a version such as 535.261.03")
    return {
        PRETEND_DRIVER_PATH: (0o644, pretend_driver + "\n"),
        NVIDIA_SMI_PATH: (0o755, nvidia_smi_script(resolve_sku(pretend_gpu))),
        MODINFO_PATH: (0o755, MODINFO_SCRIPT),
        PRETEND_DRIVER_UNIT: (0o644, PRETEND_DRIVER_UNIT_TEXT),
    }
