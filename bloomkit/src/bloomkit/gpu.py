"""GPU measurements: correctness against the CPU, bf16 GEMM, memory and host-link bandwidth,
NCCL all-reduce. Pure measurement; smoke.py decides what passes.

Timing: CUDA events around a loop of back-to-back launches after a warmup, so launch overhead
and clock ramp-up stay out of the figure. Byte and FLOP counts: a GEMM is 2*m*n*k FLOPs; a
device copy of n bytes moves 2n (read + write); an all-reduce's bus bandwidth is
size/time * 2(g-1)/g (nccl-tests' definition, comparable across GPU counts).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

GIB = 1024**3
MIB = 1024**2

# After the square --gemm-size GEMM (8192 by default: the figure people quote), the shapes where
# cuBLAS does best on Hopper and Ampere (ml-engineering's MAMF finder: H100 6144x17920x2816,
# GH200 11264x19712x1536, A100 6912x16384x2048). The stage reports the best: the card's
# achievable matmul rate, which is what its datasheet peak should be compared with.
GEMM_SHAPES_FULL = ((6144, 17920, 2816), (11264, 19712, 1536), (6912, 16384, 2048))


def _events_time_s(device: torch.device, fn: Callable[[], Any], iters: int) -> float:
    """Seconds per call of `fn`, from CUDA events around `iters` back-to-back calls."""
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    with torch.cuda.device(device):
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        end.synchronize()
    return start.elapsed_time(end) / 1e3 / iters


def _calibrated_time_s(
    device: torch.device, fn: Callable[[], Any], budget_s: float, warmup_s: float
) -> tuple[float, int]:
    """Warm up for about `warmup_s`, then time as many calls as fit in `budget_s`."""
    fn()
    torch.cuda.synchronize(device)
    per_call = _events_time_s(device, fn, 2)
    warmup_iters = max(2, int(warmup_s / max(per_call, 1e-6)))
    per_call = _events_time_s(device, fn, warmup_iters)
    iters = max(3, min(10_000, int(budget_s / max(per_call, 1e-6))))
    return _events_time_s(device, fn, iters), iters


def arch_supported(index: int) -> tuple[bool, str]:
    """Does this torch build carry kernels (cubin for the same major, or PTX) for the GPU?"""
    major, minor = torch.cuda.get_device_capability(index)
    if torch.version.hip:
        return True, "rocm"
    arch_list = torch.cuda.get_arch_list()
    for arch in arch_list:
        kind, _, number = arch.partition("_")
        digits = number.rstrip("af")
        if not digits.isdigit():
            continue
        arch_major, arch_minor = int(digits[:-1]), int(digits[-1])
        if kind == "sm" and arch_major == major and arch_minor <= minor:
            return True, arch
        if kind == "compute" and (arch_major, arch_minor) <= (major, minor):
            return True, arch
    return False, f"torch has kernels for {' '.join(arch_list) or 'no arch'}, not sm_{major}{minor}"


def check_device(index: int, alloc_bytes: int = 512 * MIB) -> dict[str, Any]:
    """Allocate, run real kernels, compare with the CPU. Raises RuntimeError on a CUDA error."""
    device = torch.device("cuda", index)
    props = torch.cuda.get_device_properties(index)
    figures: dict[str, Any] = {
        "index": index,
        "name": props.name,
        "compute_capability": f"{props.major}.{props.minor}",
    }
    ok, arch = arch_supported(index)
    figures["kernel_arch"] = arch if ok else None
    if not ok:
        figures["problem"] = arch
        return figures

    # A large allocation written and reduced on the device: the sum has a closed form.
    n = alloc_bytes // 8
    values = torch.arange(n, dtype=torch.int64, device=device)
    total = int(values.sum().item())
    del values
    figures["alloc_gib"] = round(alloc_bytes / GIB, 3)
    if total != n * (n - 1) // 2:
        figures["problem"] = f"sum of arange({n}) is {total}, expected {n * (n - 1) // 2}"
        return figures

    generator = torch.Generator().manual_seed(1000 + index)
    a = torch.randn(1024, 1024, generator=generator)
    b = torch.randn(1024, 1024, generator=generator)
    reference = a.double() @ b.double()

    def rel_err(got: torch.Tensor) -> float:
        return float((got.double().cpu() - reference).norm() / reference.norm())

    fp32 = rel_err(a.to(device) @ b.to(device))
    bf16 = rel_err(a.to(device, torch.bfloat16) @ b.to(device, torch.bfloat16))
    softmax_err = float(
        (torch.softmax(a.to(device), dim=-1).cpu() - torch.softmax(a, dim=-1)).abs().max()
    )
    torch.cuda.synchronize(device)
    figures.update(matmul_fp32_rel_err=fp32, matmul_bf16_rel_err=bf16, softmax_max_err=softmax_err)
    # fp32 may run as TF32 (rel. error ~1e-3); bf16 inputs carry 8 mantissa bits (~1e-2).
    limits = {"matmul_fp32_rel_err": 5e-3, "matmul_bf16_rel_err": 3e-2, "softmax_max_err": 1e-5}
    bad = [
        f"{k} {figures[k]:.2e} > {limit:.0e}"
        for k, limit in limits.items()
        if not figures[k] <= limit
    ]
    figures["problem"] = "; ".join(bad) or None
    return figures


def gemm_tflops(
    index: int,
    shapes: Sequence[tuple[int, int, int]],
    budget_s: float = 0.25,
    warmup_s: float = 0.2,
) -> dict[str, Any]:
    """bf16 C = A @ B for each (m, n, k); TFLOP/s per shape and the best."""
    device = torch.device("cuda", index)
    results = []
    for i, (m, n, k) in enumerate(shapes):
        a = torch.randn(m, k, device=device, dtype=torch.bfloat16)
        b = torch.randn(k, n, device=device, dtype=torch.bfloat16)
        c = torch.empty(m, n, device=device, dtype=torch.bfloat16)
        # The first shape also brings the clocks up; later ones need less warmup.
        seconds, iters = _calibrated_time_s(
            device,
            lambda a=a, b=b, c=c: torch.matmul(a, b, out=c),
            budget_s,
            warmup_s if i == 0 else warmup_s / 4,
        )
        results.append(
            {
                "shape": f"{m}x{n}x{k}",
                "tflops": round(2 * m * n * k / seconds / 1e12, 1),
                "iters": iters,
            }
        )
        del a, b, c
    best = max(results, key=lambda r: r["tflops"])
    return {"tflops_bf16": best["tflops"], "best_shape": best["shape"], "shapes": results}


def memory_bandwidth(index: int, size_bytes: int, budget_s: float = 0.25) -> dict[str, Any]:
    """Device-to-device copy of `size_bytes`: counts read + write."""
    device = torch.device("cuda", index)
    free, _ = torch.cuda.mem_get_info(device)
    size = min(size_bytes, free // 4) // 4096 * 4096
    src = torch.empty(size, dtype=torch.uint8, device=device).fill_(7)
    dst = torch.empty_like(src)
    seconds, iters = _calibrated_time_s(device, lambda: dst.copy_(src), budget_s, 0.05)
    return {"gbs": round(2 * size / seconds / 1e9, 1), "bytes": size, "iters": iters}


def host_to_device_bandwidth(index: int, size_bytes: int, budget_s: float = 0.2) -> dict[str, Any]:
    """Pinned host memory to the device and back."""
    device = torch.device("cuda", index)
    host = torch.empty(size_bytes, dtype=torch.uint8, pin_memory=True).fill_(3)
    on_device = torch.empty(size_bytes, dtype=torch.uint8, device=device)
    h2d, _ = _calibrated_time_s(
        device, lambda: on_device.copy_(host, non_blocking=True), budget_s, 0.02
    )
    d2h, _ = _calibrated_time_s(
        device, lambda: host.copy_(on_device, non_blocking=True), budget_s, 0.02
    )
    return {
        "h2d_gbs": round(size_bytes / h2d / 1e9, 1),
        "d2h_gbs": round(size_bytes / d2h / 1e9, 1),
        "bytes": size_bytes,
    }


def nccl_all_reduce(
    indices: Sequence[int], size_bytes: int, budget_s: float = 0.5
) -> dict[str, Any]:
    """Single-process NCCL all-reduce over local GPUs (nccl-tests' default mode): exact result
    check, then bus bandwidth on fp32 buffers of `size_bytes` per GPU."""
    import torch.cuda.nccl as nccl

    count = len(indices)
    devices = [torch.device("cuda", i) for i in indices]
    small = [torch.full((1 << 20,), float(r + 1), device=d) for r, d in enumerate(devices)]
    if not nccl.is_available(small):
        raise RuntimeError("torch's NCCL cannot run on these tensors (built without NCCL?)")
    nccl.all_reduce(small)
    expected = count * (count + 1) / 2  # exact in fp32
    wrong = [i for i, t in zip(indices, small, strict=True) if not bool((t == expected).all())]
    generator = torch.Generator().manual_seed(7)
    parts = [torch.randn(4096, generator=generator) for _ in devices]
    reference = torch.stack(parts).sum(0)
    on_gpus = [p.to(d) for p, d in zip(parts, devices, strict=True)]
    nccl.all_reduce(on_gpus)
    random_err = max(float((t.cpu() - reference).abs().max()) for t in on_gpus)
    figures: dict[str, Any] = {
        "gpus": count,
        "correct": not wrong and random_err < 1e-4,
        "random_max_err": random_err,
    }
    if wrong:
        figures["wrong_on"] = wrong
    del small, on_gpus

    numel = size_bytes // 4
    buffers = [torch.zeros(numel, device=d) for d in devices]

    def sync_all() -> None:
        for d in devices:
            torch.cuda.synchronize(d)

    for _ in range(3):
        nccl.all_reduce(buffers)
    sync_all()
    started = time.perf_counter()
    nccl.all_reduce(buffers)
    sync_all()
    one = time.perf_counter() - started
    iters = max(3, min(200, int(budget_s / max(one, 1e-6))))
    started = time.perf_counter()
    for _ in range(iters):
        nccl.all_reduce(buffers)
    sync_all()
    seconds = (time.perf_counter() - started) / iters
    algbw = numel * 4 / seconds / 1e9
    figures.update(
        bytes=numel * 4,
        iters=iters,
        algbw_gbs=round(algbw, 1),
        busbw_gbs=round(algbw * 2 * (count - 1) / count, 1),
    )
    del buffers
    return figures
