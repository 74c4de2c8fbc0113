"""Test doubles for hardware this machine lacks: a GPU on the PCI bus, Secure Boot.

A sandbox host started with `--pretend-gpu SKU` gets a fake `/usr/local/bin/lspci` (first on
PATH, ahead of pciutils') that prints what `lspci -Dnmm` prints on a cloud VM with that GPU,
and a marker file; `--pretend-secure-boot` adds a fake `mokutil`. Facts that detect GPUs should
parse `lspci -Dnmm`: the double prints that format whatever the flags, honouring only `-d`.

Besides single GPUs, shapes of fleet machines: an HGX H100 board (eight GPUs and four NVSwitches
on the bus), and hosts whose 535 driver is loaded. A container cannot load a kernel module, so
the loaded driver is a stand-in `/usr/local/bin/nvidia-smi` that answers `--query-gpu` as the
real one does there (gpurig's GPU fact and bloomkit's env take the driver version from
nvidia-smi where /proc/driver/nvidia does not show it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gpurig.errors import UsageError
from gpurig.model.host import pci_gpu

NVIDIA = "10de"
LSPCI_PATH = "/usr/local/bin/lspci"
NVIDIA_SMI_PATH = "/usr/local/bin/nvidia-smi"
MOKUTIL_PATH = "/usr/local/bin/mokutil"
MARKER_PATH = "/etc/gpurig-pretend-gpu"
GPU_SLOT = "0000:00:05.0"
# HGX H100's NVSwitch (LS10) as the host sees it: 10de:22a3, class 0680 (see gpurig.facts.gpu).
NVSWITCH = '"0680" "10de" "22a3" -ra1 "10de" "1796"'
DRIVER_535 = "535.261.03"  # Debian 12's nvidia-driver 535 (bookworm)

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
    gpus: int = 1
    nvswitches: int = 0  # HGX/DGX baseboards
    driver: str | None = None  # a loaded driver, as the nvidia-smi stand-in reports it

    @property
    def pci_id(self) -> str:
        return f"{NVIDIA}:{self.device}"

    def slots(self) -> list[str]:
        """The GPUs' PCI slots: 0000:00:05.0, then one device number up for each."""
        return [f"0000:00:{5 + i:02x}.0" for i in range(self.gpus)]

    def lspci_line(self) -> str:
        return self.lspci_lines()[0]

    def lspci_lines(self) -> list[str]:
        ids = f'"{self.pci_class}" "{NVIDIA}" "{self.device}" -ra1 "{NVIDIA}" "{self.subsystem}"'
        switches = [f"0000:00:{0x10 + i:02x}.0 {NVSWITCH}" for i in range(self.nvswitches)]
        return [f"{slot} {ids}" for slot in self.slots()] + switches


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
        # Shapes of fleet machines.
        GpuSku("HGX-H100", "HGX H100 board: 8x H100 SXM5 80GB, 4 NVSwitch", "2330", "0302",
               "16c1", gpus=8, nvswitches=4),
        GpuSku("H100-535", "H100 SXM5 80GB, driver 535 loaded", "2330", "0302", "16c1",
               driver=DRIVER_535),
        GpuSku("HGX-H100-535", "HGX H100 board, driver 535 loaded", "2330", "0302", "16c1",
               gpus=8, nvswitches=4, driver=DRIVER_535),
    )
}  # fmt: skip
_ALIASES = {"H100-SXM": "H100", "H100SXM": "H100", "H100PCIE": "H100-PCIE", "RTX-4090": "RTX4090"}


def resolve_sku(name: str) -> GpuSku:
    key = name.strip().upper().replace(" ", "-").replace("_", "-")
    sku = GPU_SKUS.get(_ALIASES.get(key, key))
    if sku is None:
        known = ", ".join(GPU_SKUS)
        raise UsageError(f"unknown GPU SKU {name!r} for --pretend-gpu: use one of {known}")
    return sku


def lspci_output(sku: GpuSku) -> str:
    """What `lspci -Dnmm` prints on a cloud VM (or board) with this SKU's GPUs and switches."""
    return "\n".join([*_VM_DEVICES, *sku.lspci_lines()]) + "\n"


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
    shape = f"gpus={sku.gpus}\nnvswitches={sku.nvswitches}\n" if sku.gpus > 1 else ""
    driver = f"driver={sku.driver}\n" if sku.driver else ""
    return f"sku={sku.name}\npci_id={sku.pci_id}\ndescription={sku.description}\n{shape}{driver}"


def _smi_rows(sku: GpuSku) -> list[tuple[str, ...]]:
    """Per GPU: bus id as nvidia-smi writes it, index, name, driver, compute capability,
    memory (MiB), uuid."""
    known = pci_gpu(GPU_SLOT, sku.device)
    return [
        (f"{int(slot[:4], 16):08X}:{slot[5:].upper()}", str(i), known.name, str(sku.driver),
         str(known.compute_capability), "81559", f"GPU-{i:08x}-0000-0000-0000-000000000000")
        for i, slot in enumerate(sku.slots())
    ]  # fmt: skip


def fact_lines(sku: GpuSku) -> list[str]:
    """The GPU fact's PCI and nvidia-smi sections (gpurig.facts.gpu) on a host of this shape,
    for plan tests that need no container; a unit test holds them to the running doubles."""
    lines = ["@@pci", "lspci", *lspci_output(sku).splitlines()]
    if sku.driver:
        smi = [
            ", ".join((bus, name, driver, cc)) for bus, _, name, driver, cc, *_ in _smi_rows(sku)
        ]
        lines += ["@@smi", "rc=0", *smi]
    return lines


def nvidia_smi_script(sku: GpuSku) -> str:
    """nvidia-smi on a host with these GPUs and a loaded driver: the SKU's own (the 535 shapes)
    or, without one, the pretend module's while /sys/module/nvidia says it is loaded
    (--pretend-driver). `--query-gpu=F,...` rows (the fields gpurig and bloomkit ask for; [N/A]
    for others), else a one-line summary; with no module, nvidia-smi's own failure."""
    rows = "\n".join("|".join(row) for row in _smi_rows(sku))
    loaded = sku.driver or "$(cat /sys/module/nvidia/version 2>/dev/null)"
    return f"""#!/bin/sh
# gpurig sandbox test double: {sku.description}; nvidia-smi as the loaded driver answers.
loaded={loaded}
if [ -z "$loaded" ]; then
  echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running."
  exit 9
fi
query=""
for arg in "$@"; do case "$arg" in --query-gpu=*) query="${{arg#--query-gpu=}}" ;; esac; done
if [ -z "$query" ]; then
  echo "NVIDIA-SMI $loaded  Driver Version: $loaded  ({sku.gpus} GPU)"; exit 0
fi
while IFS='|' read -r bus index name driver cc memory uuid; do
  out=""
  for field in $(echo "$query" | tr , ' '); do
    case "$field" in
      pci.bus_id) v=$bus ;; index) v=$index ;; name) v=$name ;; driver_version) v=$loaded ;;
      compute_cap) v=$cc ;; memory.total) v=$memory ;; uuid) v=$uuid ;; *) v="[N/A]" ;;
    esac
    out="${{out:+$out, }}$v"
  done
  echo "$out"
done <<'EOF'
{rows}
EOF
"""  # noqa: E501


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
        if sku.driver:
            files[NVIDIA_SMI_PATH] = (0o755, nvidia_smi_script(sku))
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
