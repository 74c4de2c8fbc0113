"""Datasheet peaks per GPU SKU, and the fraction of each a healthy card must reach.

Peaks are NVIDIA's published figures: dense BF16 tensor TFLOP/s (the datasheets print the
2:4-sparse figure first; it is twice the dense one) and memory bandwidth in GB/s (10^9 B/s).
Thresholds: a GEMM fraction that a card in good health reaches with cuBLAS at large shapes
(the best public bf16 measurements: H100 SXM 792 of 989, GH200 821 of 989, A100 SXM 268 of
312; ml-engineering's MAMF table), lower for power-capped cards (PCIe, 72-350 W) that cannot
hold their boost clock under a dense GEMM; a memory-copy fraction of 0.80 (a device-to-device
copy reaches 85-92% of the datasheet on HBM and GDDR parts). Host-to-device bandwidth is held
to half the PCIe link's theoretical rate: a card on an x8 link, or a Gen5 card in a Gen4 slot,
fails it. NCCL all-reduce bus bandwidth across SXM boards is held to 0.60 of the NVLink rate
per direction (datasheet: 900 GB/s H100/H200, 600 GB/s A100, both directions; measured 8-GPU
busbw is ~480 and ~200-230 GB/s); PCIe and NVL-bridge boards are measured only. A card not in
the table is measured and passes with "no peak known".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# PCIe x16 theoretical rate per direction, GB/s (after 128b/130b encoding).
PCIE_X16_GBS = {3: 15.75, 4: 31.5, 5: 63.0}
H2D_FRACTION = 0.5
MEMBW_FRACTION = 0.80
BUSBW_FRACTION = 0.60

_H100 = "https://www.nvidia.com/en-us/data-center/h100/"
_GH200 = "https://www.nvidia.com/en-us/data-center/grace-hopper-superchip/"
_H200 = "https://www.nvidia.com/en-us/data-center/h200/"
_A100 = (
    "https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/"
    "nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf"
)
_L40S = "https://www.nvidia.com/en-us/data-center/l40s/"
_L4 = "https://www.nvidia.com/en-us/data-center/l4/"
_A10 = "https://www.nvidia.com/en-us/data-center/products/a10-gpu/"
_ADA = (
    "https://images.nvidia.com/aem-dam/Solutions/geforce/ada/nvidia-ada-gpu-architecture.pdf"
    " (Table 2: RTX 4090, BF16 tensor with FP32 accumulate)"
)


@dataclass(frozen=True)
class Peak:
    """One SKU: how torch names it, its datasheet peaks and the fractions that pass."""

    sku: str
    pattern: str  # regex searched in torch.cuda.get_device_name()
    bf16_tflops: float  # dense
    mem_gbs: float
    pcie_gen: int | None  # None: not on PCIe to the host (NVLink-C2C)
    gemm_fraction: float
    source: str
    nvlink_gbs: float | None = None  # per GPU, one direction, on an NVSwitch board (SXM)
    membw_fraction: float = MEMBW_FRACTION

    @property
    def gemm_min_tflops(self) -> float:
        return self.bf16_tflops * self.gemm_fraction

    @property
    def membw_min_gbs(self) -> float:
        return self.mem_gbs * self.membw_fraction

    @property
    def busbw_min_gbs(self) -> float | None:
        return None if self.nvlink_gbs is None else self.nvlink_gbs * BUSBW_FRACTION

    @property
    def h2d_min_gbs(self) -> float | None:
        return None if self.pcie_gen is None else PCIE_X16_GBS[self.pcie_gen] * H2D_FRACTION


# Most specific first: "H100 NVL" before "H100", "L40S" before "L40" before "L4".
PEAKS: tuple[Peak, ...] = (
    # GH200's host link is NVLink-C2C, not PCIe; 4.0 TB/s is the 96 GB HBM3 part (lower one).
    Peak("GH200", r"GH200", 989.4, 4000.0, None, 0.70, _GH200),
    Peak("H200 NVL", r"H200 NVL", 835.5, 4800.0, 5, 0.65, _H200),
    Peak("H200 SXM", r"H200", 989.4, 4800.0, 5, 0.70, _H200, nvlink_gbs=450.0),
    Peak("H100 NVL", r"H100 NVL", 835.5, 3900.0, 5, 0.65, _H100),
    Peak("H100 PCIe", r"H100 PCIe", 756.5, 2000.0, 5, 0.60, _H100),
    Peak("H100 SXM", r"H100", 989.4, 3350.0, 5, 0.70, _H100, nvlink_gbs=450.0),
    Peak("A100 SXM 80GB", r"A100.*SXM.*80GB", 312.0, 2039.0, 4, 0.75, _A100, nvlink_gbs=300.0),
    Peak("A100 SXM 40GB", r"A100.*SXM", 312.0, 1555.0, 4, 0.75, _A100, nvlink_gbs=300.0),
    Peak("A100 PCIe 80GB", r"A100.*80GB.*PCIe|A100.*PCIE.*80GB", 312.0, 1935.0, 4, 0.70, _A100),
    Peak("A100 PCIe 40GB", r"A100.*PCIE", 312.0, 1555.0, 4, 0.70, _A100),
    Peak("L40S", r"L40S", 362.05, 864.0, 4, 0.60, _L40S),
    Peak("L4", r"\bL4\b", 121.0, 300.0, 4, 0.50, _L4),
    Peak("A10", r"\bA10\b", 125.0, 600.0, 4, 0.60, _A10),
    Peak("RTX 4090", r"RTX 4090(?! D)", 165.2, 1008.0, 4, 0.70, _ADA),
)


# All-reduce bus bandwidth across ranks (`bloomkit smoke --distributed`), nccl-tests' measure
# (busbw = algbw * 2(n-1)/n), expected at large messages. One board of 8 NVSwitch-connected GPUs,
# `all_reduce_perf -b 8 -e 8G -f 2 -g 8`: the low end of what healthy boards measure.
_NCCL_8GPU_H100 = (
    "8x H100/H200 SXM: 480 GB/s with NVLink SHARP (NVIDIA GTC 2024 talk S62129, quoted in "
    "github.com/NVIDIA/nccl issue 1374); 460-480 GB/s in published nccl-tests tables"
)
_NCCL_8GPU_A100 = (
    "8x A100 SXM: 200-232 GB/s (github.com/NVIDIA/nccl-tests issues 175: 232.5, 178: 208)"
)
NVSWITCH_8GPU_BUSBW_GBS: dict[str, tuple[float, str]] = {
    "H100 SXM": (475.0, _NCCL_8GPU_H100),
    "H200 SXM": (475.0, _NCCL_8GPU_H100),
    "A100 SXM 80GB": (200.0, _NCCL_8GPU_A100),
    "A100 SXM 40GB": (200.0, _NCCL_8GPU_A100),
}
# Across nodes a ring all-reduce is bound by the NICs a node uses (one per GPU): busbw <= their
# summed line rate (8x 400 Gb/s NDR = 400 GB/s; 4x 200 Gb/s HDR = 100 GB/s). Measured: 85-96 of
# 100 GB/s on 4x HDR (nccl-tests issues 119, 175); 48-49 of 50 GB/s per ConnectX-7 NDR port
# (NVIDIA/nccl issue 267). On two nodes NCCL's tree can beat the bound, never fall short of it.
FLEET_BUSBW_FRACTION = 0.80  # of the expectation, for both cases


def lookup(device_name: str) -> Peak | None:
    """The table row for a torch device name (e.g. 'NVIDIA H100 80GB HBM3'), or None."""
    for peak in PEAKS:
        if re.search(peak.pattern, device_name, flags=re.IGNORECASE):
            return peak
    return None
