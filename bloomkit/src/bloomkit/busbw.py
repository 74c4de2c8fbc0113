"""The busbw stage: all-reduce bus bandwidth, nccl-tests' measure (busbw = algbw * 2(n-1)/n),
held to the SKU and interconnect's expectation on GPUs (peaks.py); measured only on CPUs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from bloomkit import peaks
from bloomkit.group import collective, group_state
from bloomkit.report import StageResult
from bloomkit.stages import Fail, Skip, SmokeContext

MIB = 1024**2


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _max_over_ranks(value: float, device: torch.device) -> float:
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return float(tensor.item())


def measure_busbw(
    device: torch.device, size_bytes: int, world: int, budget_s: float
) -> dict[str, Any]:
    """All-reduce of fp32 `size_bytes` per rank; the slowest rank's time counts."""
    numel = size_bytes // 4
    buffer = torch.zeros(numel, device=device)  # zeros stay zeros: no overflow over iterations
    for _ in range(2):
        dist.all_reduce(buffer)
    _sync(device)
    started = time.perf_counter()
    dist.all_reduce(buffer)
    _sync(device)
    one = _max_over_ranks(time.perf_counter() - started, device)
    iters = max(3, min(50, int(budget_s / max(one, 1e-6))))  # the same on every rank
    _max_over_ranks(0.0, device)  # line the ranks up before timing
    started = time.perf_counter()
    for _ in range(iters):
        dist.all_reduce(buffer)
    _sync(device)
    seconds = _max_over_ranks(time.perf_counter() - started, device) / iters
    algbw = numel * 4 / seconds / 1e9
    del buffer
    return {
        "bytes": numel * 4,
        "iters": iters,
        "seconds_per_iter": round(seconds, 6),
        "algbw_gbs": round(algbw, 3),
        "busbw_gbs": round(algbw * 2 * (world - 1) / world, 3),
    }


def rdma_ports(root: Path = Path("/sys/class/infiniband")) -> list[dict[str, Any]]:
    """Active InfiniBand / RoCE ports and their line rate (what NCCL's IB transport uses)."""
    ports = []
    for port in sorted(root.glob("*/ports/*")):
        try:
            state = (port / "state").read_text().strip()  # "4: ACTIVE"
            rate = (port / "rate").read_text().strip()  # "400 Gb/sec (4X NDR)"
            link = port / "link_layer"  # InfiniBand or Ethernet (RoCE)
            layer = link.read_text().strip() if link.exists() else ""
        except OSError:
            continue
        if "ACTIVE" not in state:
            continue
        try:
            gbits = float(rate.split()[0])
        except (ValueError, IndexError):
            continue
        ports.append(
            {"device": port.parent.parent.name, "port": port.name, "gbits": gbits, "link": layer}
        )
    return ports


def busbw_expectation(
    sku: str | None,
    nodes: int,
    local_ranks: int,
    nic_gbs: float | None,
) -> tuple[float | None, str]:
    """(minimum busbw in GB/s, basis) for NCCL on GPUs; None when nothing is known to hold
    the figure to (an unknown SKU on one node, TCP sockets between nodes)."""
    peak = next((p for p in peaks.PEAKS if p.sku == sku), None)
    board = peaks.NVSWITCH_8GPU_BUSBW_GBS.get(sku or "")
    fraction = peaks.FLEET_BUSBW_FRACTION
    if nodes <= 1:
        if board is not None and local_ranks == 8:
            return board[0] * fraction, f"{fraction:.0%} of {board[1]}"
        if peak is not None and peak.busbw_min_gbs is not None:
            # Fewer GPUs of the board: the single-host NCCL stage's rule, never above 8 GPUs'.
            minimum = peak.busbw_min_gbs
            if board is not None and board[0] * fraction < minimum:
                return board[0] * fraction, f"{fraction:.0%} of {board[1]} (as for 8 GPUs)"
            return minimum, (
                f"{peaks.BUSBW_FRACTION:.0%} of {peak.sku}'s NVLink {peak.nvlink_gbs:g} GB/s "
                f"per direction ({local_ranks} GPUs on one board)"
            )
        return None, f"no threshold for {sku or 'this GPU'} on one node (not an NVSwitch board)"
    if not nic_gbs:
        return None, "no threshold: no active InfiniBand/RoCE port, NCCL runs over TCP sockets"
    expected, basis = nic_gbs, f"the node's RDMA ports, {nic_gbs:g} GB/s"
    if board is not None and local_ranks == 8 and board[0] < nic_gbs:
        expected, basis = board[0], board[1]
    return expected * fraction, f"{fraction:.0%} of {basis}"


def _busbw(ctx: SmokeContext, result: StageResult) -> None:
    state = group_state(ctx)
    n = ctx.world_size
    if n < 2:
        raise Skip("one rank: no all-reduce traffic to measure")
    gpu = state.device.type == "cuda"
    default_mib = (256 if ctx.args.quick else 1024) if gpu else (16 if ctx.args.quick else 64)
    size = (ctx.args.busbw_mib or default_mib) * MIB
    figures: dict[str, Any] = measure_busbw(
        state.device, size, n, budget_s=(0.3 if ctx.args.quick else 1.0) if gpu else 0.5
    )
    roster = state.roster
    nodes = len({r["node_rank"] for r in roster})
    per_node = [r["node_rank"] for r in roster]
    local_ranks = max(per_node.count(node) for node in set(per_node))
    figures.update(backend=state.backend, world_size=n, nodes=nodes, ranks_per_node=local_ranks)
    summary = (
        f"all-reduce of {figures['bytes'] // MIB} MiB over {n} rank(s) on {nodes} node(s): "
        f"bus bandwidth {figures['busbw_gbs']} GB/s ({state.backend})"
    )
    if not gpu:
        result.figures = figures
        result.reason = summary + ", measured only (no threshold on CPUs)"
        return
    # The slowest node's RDMA links bound a multi-node ring: take the fleet's minimum.
    used = sorted((p["gbits"] for p in rdma_ports()), reverse=True)[:local_ranks]
    nic_gbs = _min_over_ranks(sum(used) / 8, state.device) if nodes > 1 else None
    names = {r["gpu"] for r in roster}
    sku = None
    if len(names) == 1:
        found = peaks.lookup(next(iter(names)) or "")
        sku = found.sku if found else None
    minimum, basis = busbw_expectation(sku, nodes, local_ranks, nic_gbs)
    figures.update(sku=sku, rdma_gbs=nic_gbs, min_busbw_gbs=minimum and round(minimum, 1))
    figures["basis"] = basis
    result.figures = figures
    if minimum is not None and figures["busbw_gbs"] < minimum:
        raise Fail(
            f"{summary} < {minimum:.0f} GB/s ({basis}); check NCCL_DEBUG=INFO for the transport "
            "(IB or sockets?), nvidia-smi topo -m, and the NICs' link rate"
        )
    result.reason = summary + (f" >= {minimum:.0f} ({basis})" if minimum else f"; {basis}")


def _min_over_ranks(value: float, device: torch.device) -> float:
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return float(tensor.item())


stage_busbw = collective(_busbw)
