"""`bloomkit smoke --distributed`: the fleet as one machine, under torchrun.

Every rank runs the per-GPU stages on its own GPU (LOCAL_RANK), then the stages that need all of
them, and the fleet verdict:

    dist       join the process group (nccl on GPUs, gloo on CPUs) within --dist-timeout; the
               roster of every rank's host, node and device
    allreduce  known values per rank, exact sums on every rank; all_gather and broadcast
    busbw      all-reduce bus bandwidth, nccl-tests' measure (busbw = algbw * 2(n-1)/n), held to
               the SKU and interconnect's expectation on GPUs (peaks.py); measured only on CPUs
    ddp        a DDP fine-tune step of the tiny model, a different batch per rank: afterwards
               every rank holds bitwise-identical weights, equal to a one-process reference on
               the global batch (the gradients really were averaged)

Nothing waits forever: joining and every collective are bounded by --dist-timeout. A stage
whose collective fails (a peer died, timed out) marks the group broken; the stages after it
skip. The fleet verdict goes through torchrun's store, not the process group, so it still names
the ranks that never reported: rank 0 gathers every rank's verdict, writes the fleet report,
and every rank exits with the fleet's code (torchrun's agents then agree and leave at once).

Reports: `--json DIR/{rank}.json` gives one report per rank and DIR/fleet.json from rank 0;
without `{rank}` rank 0 writes its own report, which carries the fleet section.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from bloomkit import peaks
from bloomkit.errors import UsageError
from bloomkit.report import FAIL, PASS, StageResult, format_summary, write_json
from bloomkit.smoke import (
    STAGES,
    Fail,
    Skip,
    SmokeContext,
    Stage,
    run_smoke,
)

log = logging.getLogger(__name__)
MIB = 1024**2
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
INTERFACE_VARS = ("NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME")
FLEET_KEY = "bloomkit/fleet/rank/"
FLEET_VERDICT_KEY = "bloomkit/fleet/verdict"
DDP_STEPS = 3
DDP_LR = 0.5
DDP_REFERENCE_MAX_WORLD = 64  # the one-process reference runs every rank's batch
DDP_WEIGHTS_ATOL = 1e-4  # DDP vs the reference: only the summation order differs
SINGLE_HOST_ONLY = ("nccl", "llm", "llm_model")  # per-host stages the deploy's smoke covers


@dataclass
class DistState:
    """What the distributed stages share (ctx.dist)."""

    backend: str
    device: torch.device
    timeout: datetime.timedelta
    ready: bool = False
    broken: str | None = None  # the stage whose collective failed, and why
    roster: list[dict[str, Any]] = field(default_factory=list)  # per rank, by rank


def torchrun_env() -> dict[str, Any] | None:
    """RANK, WORLD_SIZE ... as torchrun sets them; None outside torchrun."""
    if any(var not in os.environ for var in TORCHRUN_VARS):
        return None
    world = int(os.environ["WORLD_SIZE"])
    return {
        "rank": int(os.environ["RANK"]),
        "world_size": world,
        "local_rank": int(os.environ["LOCAL_RANK"]),
        "local_world_size": int(os.environ.get("LOCAL_WORLD_SIZE", world)),
        "node_rank": int(os.environ.get("GROUP_RANK", "0")),
        "master": f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}",
        "run_id": os.environ.get("TORCHELASTIC_RUN_ID"),
    }


def choose_backend(requested: str) -> str:
    if requested != "auto":
        return requested
    return "nccl" if torch.cuda.is_available() else "gloo"


# --- the stages ------------------------------------------------------------------------------


def _state(ctx: SmokeContext) -> DistState:
    state = ctx.dist
    assert isinstance(state, DistState)
    return state


def _need_group(ctx: SmokeContext) -> str | None:
    state = ctx.dist
    if not isinstance(state, DistState) or not state.ready:
        return "needs the process group (the dist stage failed)"
    if state.broken:
        return f"the process group broke in {state.broken}"
    return None


def _collective(run: Callable[[SmokeContext, StageResult], None]) -> Callable[..., None]:
    """A stage whose collectives may fail: mark the group broken, fail with one line."""

    def stage(ctx: SmokeContext, result: StageResult) -> None:
        try:
            run(ctx, result)
        except (Fail, Skip, torch.OutOfMemoryError):
            raise
        except (RuntimeError, ValueError) as exc:  # DistError, DistBackendError, timeouts
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            _state(ctx).broken = f"{result.name} ({first})"
            hosts = ", ".join(
                sorted({f"{r['host']} (node {r['node_rank']})" for r in _state(ctx).roster})
            )
            raise Fail(
                f"a collective failed (peer gone or too slow?): {first}; ranks on {hosts}"
            ) from exc

    return stage


def stage_dist(ctx: SmokeContext, result: StageResult) -> None:
    env = torchrun_env()
    assert env is not None
    backend = choose_backend(ctx.args.dist_backend)
    if backend == "nccl":
        if not torch.cuda.is_available() or torch.cuda.device_count() <= ctx.local_rank:
            raise Fail(
                f"nccl needs a GPU per rank: LOCAL_RANK {ctx.local_rank}, "
                f"{torch.cuda.device_count()} visible GPU(s)"
            )
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    timeout = datetime.timedelta(seconds=ctx.args.dist_timeout)
    state = DistState(backend, device, timeout)
    ctx.dist = state
    started = time.perf_counter()
    try:
        dist.init_process_group(
            backend=backend,
            timeout=timeout,
            device_id=device if backend == "nccl" else None,
        )
    except (RuntimeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise Fail(
            f"no process group of {env['world_size']} rank(s) within {ctx.args.dist_timeout} s "
            f"(rendezvous {env['master']}): {first}"
        ) from exc
    state.ready = True
    join_s = time.perf_counter() - started
    mine = {
        "rank": ctx.rank,
        "host": socket.gethostname(),
        "node_rank": env["node_rank"],
        "local_rank": ctx.local_rank,
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "interface": {k: os.environ[k] for k in INTERFACE_VARS if k in os.environ},
    }
    try:
        gathered: list[Any] = [None] * ctx.world_size
        dist.all_gather_object(gathered, mine)
    except (RuntimeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        state.broken = f"dist ({first})"
        raise Fail(f"joined, then a peer was lost exchanging the roster: {first}") from exc
    state.roster = gathered
    nodes = len({r["node_rank"] for r in state.roster})
    result.figures = {
        "backend": backend,
        "world_size": ctx.world_size,
        "nodes": nodes,
        "local_world_size": env["local_world_size"],
        "rendezvous": env["master"],
        "join_s": round(join_s, 3),
        "timeout_s": ctx.args.dist_timeout,
        "ranks": state.roster,
    }
    result.reason = (
        f"{backend}: {ctx.world_size} rank(s) on {nodes} node(s) joined in {join_s:.1f} s "
        f"(rendezvous {env['master']})"
    )


def _allreduce(ctx: SmokeContext, result: StageResult) -> None:
    state = _state(ctx)
    device, n, r = state.device, ctx.world_size, ctx.rank
    # Small integers in fp32: the sum over any world below ~1600 ranks is exact.
    pattern = (torch.arange(1 << 16, device=device) % 13 + 1).float()
    summed = pattern * (r + 1)
    dist.all_reduce(summed)
    exact = bool(torch.equal(summed, pattern * (n * (n + 1) // 2)))
    # Random values: every rank can regenerate every rank's part, so the reference is local.
    parts = [torch.randn(4096, generator=torch.Generator().manual_seed(1000 + i)) for i in range(n)]
    noisy = parts[r].clone().to(device)
    dist.all_reduce(noisy)
    random_err = float((noisy.cpu() - torch.stack(parts).sum(0)).abs().max())
    ranks = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(n)]
    dist.all_gather(ranks, torch.tensor([r], dtype=torch.int64, device=device))
    gathered_ok = [int(t.item()) for t in ranks] == list(range(n))
    shared = torch.randn(1024, generator=torch.Generator().manual_seed(7 + r)).to(device)
    dist.broadcast(shared, src=0)
    broadcast_ok = bool(
        torch.equal(shared.cpu(), torch.randn(1024, generator=torch.Generator().manual_seed(7)))
    )
    result.figures = {
        "exact_sum": exact,
        "random_max_err": random_err,
        "all_gather": gathered_ok,
        "broadcast": broadcast_ok,
    }
    problems = []
    if not exact:
        problems.append("all-reduce of known values gave a wrong sum")
    if not random_err <= 1e-5 * n:
        problems.append(f"all-reduce of random values off by {random_err:.2e}")
    if not gathered_ok:
        problems.append("all_gather returned the ranks out of order")
    if not broadcast_ok:
        problems.append("broadcast from rank 0 differs")
    if problems:
        raise Fail("; ".join(problems) + f" (rank {r} on {socket.gethostname()})")
    result.reason = f"sum, all_gather and broadcast across {n} rank(s) exact"


stage_allreduce = _collective(_allreduce)


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
    state = _state(ctx)
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


stage_busbw = _collective(_busbw)


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 of every parameter's bytes, in order: equal digests, bitwise-equal weights."""
    digest = hashlib.sha256()
    for name, param in model.named_parameters():
        digest.update(name.encode())
        digest.update(param.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def rank_batch(ids: list[int], rank: int, batch_size: int, seq_len: int) -> torch.Tensor:
    """A different window of the corpus per rank, the same on every host."""
    need = batch_size * seq_len
    start = (rank * 17) % len(ids)
    repeated = ids * (need // len(ids) + 2)
    return torch.tensor(repeated[start : start + need], dtype=torch.long).view(batch_size, seq_len)


def _ddp(ctx: SmokeContext, result: StageResult) -> None:
    from torch.nn.parallel import DistributedDataParallel

    from bloomkit.models import (
        TINY_CORPUS,
        build_tiny_model,
        build_tiny_tokenizer,
        tiny_cpu_threads,
    )

    state = _state(ctx)
    device, n = state.device, ctx.world_size
    tokenizer = build_tiny_tokenizer()
    ids = tokenizer(TINY_CORPUS, add_special_tokens=False)["input_ids"]
    batches = [rank_batch(ids, r, ctx.args.batch_size, ctx.args.seq_len) for r in range(n)]
    with tiny_cpu_threads(device, "tiny"):
        model = build_tiny_model(tokenizer)
        initial = weights_digest(model)
        model.to(device).train()
        ddp = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
        optimizer = torch.optim.SGD(ddp.parameters(), lr=DDP_LR)
        mine = batches[ctx.rank].to(device)
        losses = []
        for _ in range(DDP_STEPS):
            loss = ddp(input_ids=mine, labels=mine).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(round(float(loss.detach()), 4))
        final = weights_digest(model)
        reference_diff = None
        if n <= DDP_REFERENCE_MAX_WORLD:
            # One process, the global batch: the mean of the ranks' losses, as DDP averages.
            reference = build_tiny_model(tokenizer).to(device).train()
            ref_optimizer = torch.optim.SGD(reference.parameters(), lr=DDP_LR)
            for _ in range(DDP_STEPS):
                total = sum(
                    reference(input_ids=b.to(device), labels=b.to(device)).loss for b in batches
                )
                (total / n).backward()
                ref_optimizer.step()
                ref_optimizer.zero_grad(set_to_none=True)
            reference_diff = max(
                float((a.detach() - b.detach()).abs().max())
                for a, b in zip(model.parameters(), reference.parameters(), strict=True)
            )
    gathered: list[Any] = [None] * n
    dist.all_gather_object(gathered, {"initial": initial, "final": final})
    differing = [r for r, g in enumerate(gathered) if g["final"] != gathered[0]["final"]]
    result.figures = {
        "steps": DDP_STEPS,
        "losses": losses,
        "weights_sha256": final,
        "identical_across_ranks": not differing,
        "same_initial_weights": len({g["initial"] for g in gathered}) == 1,
        "max_diff_vs_reference": reference_diff,
    }
    if differing:
        hosts = ", ".join(f"rank {r} ({state.roster[r]['host']})" for r in differing)
        raise Fail(f"after {DDP_STEPS} DDP steps the weights differ from rank 0's on {hosts}")
    if final == initial:
        raise Fail(f"the weights did not change in {DDP_STEPS} DDP steps")
    if reference_diff is not None and not reference_diff <= DDP_WEIGHTS_ATOL:
        raise Fail(
            f"DDP weights differ from the one-process reference by {reference_diff:.2e}: "
            "the gradients were not averaged across ranks"
        )
    check = (
        f", within {reference_diff:.1e} of a one-process run on the global batch"
        if reference_diff is not None
        else ""
    )
    result.reason = (
        f"{DDP_STEPS} DDP steps of the tiny model, a different batch per rank: identical "
        f"weights on all {n} rank(s){check}"
    )


stage_ddp = _collective(_ddp)


def distributed_stages() -> list[Stage]:
    """smoke's stages, the distributed ones added: join right after `cuda` (a missing peer
    fails fast), the collectives after the per-GPU measurements."""
    single = [s for s in STAGES if s.name not in SINGLE_HOST_ONLY]
    at = [s.name for s in single].index("cuda") + 1
    mem = lambda ctx: "use --quick or a smaller --busbw-mib"  # noqa: E731
    return [
        *single[:at],
        Stage("dist", stage_dist),
        *single[at:],
        Stage("allreduce", stage_allreduce, when=_need_group, oom_advice=mem),
        Stage("busbw", stage_busbw, when=_need_group, oom_advice=mem),
        Stage("ddp", stage_ddp, when=_need_group, oom_advice=mem),
    ]


# --- the fleet verdict -----------------------------------------------------------------------


def rank_summary(ctx: SmokeContext, report: dict[str, Any]) -> dict[str, Any]:
    stages = {s["name"]: s for s in report["stages"]}
    busbw = stages.get("busbw", {}).get("figures", {}).get("busbw_gbs")
    env = torchrun_env() or {}
    return {
        "rank": ctx.rank,
        "host": report["host"],
        "node_rank": env.get("node_rank", 0),
        "local_rank": ctx.local_rank,
        "verdict": report["verdict"],
        "failures": report["failures"],
        "busbw_gbs": busbw,
        "seconds": report["duration_s"],
    }


def _store() -> Any:
    """torchrun's store (the agent's TCPStore): up while the process group may not be."""
    return dist.distributed_c10d._get_default_store()


def fleet_verdict(
    summaries: dict[int, dict[str, Any]], world: int, roster: list[dict[str, Any]]
) -> dict[str, Any]:
    """Every rank's verdict in one: pass when all `world` ranks reported a pass."""
    failures = []
    where = {r["rank"]: r for r in roster}
    for rank in range(world):
        got = summaries.get(rank)
        if got is None:
            known = where.get(rank)
            on = f" on {known['host']} (node {known['node_rank']})" if known else ""
            failures.append(f"rank {rank}{on}: no verdict (died, hung or never joined)")
        elif got["verdict"] != PASS:
            for failure in got["failures"] or ["failed"]:
                where_ = f"rank {rank} on {got['host']} (node {got['node_rank']})"
                failures.append(f"{where_}: {failure}")
    return {
        "verdict": FAIL if failures else PASS,
        "world_size": world,
        "nodes": len({s["node_rank"] for s in summaries.values()}),
        "reported": len(summaries),
        "ranks": [summaries[r] for r in sorted(summaries)],
        "failures": failures,
    }


def gather_fleet(ctx: SmokeContext, mine: dict[str, Any], wait_s: float) -> dict[str, Any]:
    """Every rank posts its summary to the store; rank 0 waits up to `wait_s` for the others,
    decides and posts the verdict; the others wait for it."""
    state = ctx.dist if isinstance(ctx.dist, DistState) else None
    roster = state.roster if state else []
    try:
        store = _store()
    except (RuntimeError, ValueError) as exc:
        fleet = fleet_verdict({ctx.rank: mine}, ctx.world_size, roster)
        fleet["failures"].insert(0, f"no store to gather the fleet's verdicts: {exc}")
        fleet["verdict"] = FAIL
        return fleet
    deadline = time.monotonic() + wait_s
    try:
        store.set(f"{FLEET_KEY}{ctx.rank}", json.dumps(mine))
        if ctx.rank != 0:
            while not store.check([FLEET_VERDICT_KEY]):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"rank 0 gave no fleet verdict within {wait_s:.0f} s")
                time.sleep(0.1)
            decided: dict[str, Any] = json.loads(store.get(FLEET_VERDICT_KEY))
            return decided
        summaries: dict[int, dict[str, Any]] = {}
        while True:
            for rank in range(ctx.world_size):
                key = f"{FLEET_KEY}{rank}"
                if rank not in summaries and store.check([key]):
                    summaries[rank] = json.loads(store.get(key))
            if len(summaries) == ctx.world_size or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        fleet = fleet_verdict(summaries, ctx.world_size, roster)
        store.set(FLEET_VERDICT_KEY, json.dumps(fleet))
        return fleet
    except (RuntimeError, ValueError, TimeoutError) as exc:  # the store's host went away
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        fleet = fleet_verdict({ctx.rank: mine}, ctx.world_size, roster)
        fleet["failures"].insert(0, f"the fleet's verdicts could not be gathered: {first}")
        fleet["verdict"] = FAIL
        return fleet


def format_fleet(fleet: dict[str, Any]) -> str:
    lines = [
        f"fleet: {fleet['verdict'].upper()}, {fleet['reported']} of {fleet['world_size']} "
        f"rank(s) reported from {fleet['nodes']} node(s)"
    ]
    for rank in fleet["ranks"]:
        busbw = f"  busbw {rank['busbw_gbs']} GB/s" if rank.get("busbw_gbs") is not None else ""
        lines.append(
            f"  rank {rank['rank']:<3} node {rank['node_rank']:<3} {rank['host']:<20} "
            f"{rank['verdict'].upper()}{busbw}"
        )
    lines += [f"  - {failure}" for failure in fleet["failures"]]
    return "\n".join(lines)


def smoke(ctx: SmokeContext) -> int:
    """`bloomkit smoke --distributed`: this rank's report, the fleet's verdict as exit code."""
    env = torchrun_env()
    if env is None:
        raise UsageError(
            "--distributed runs under torchrun (RANK, WORLD_SIZE, LOCAL_RANK unset): e.g. "
            "`torchrun --nproc-per-node 2 -m bloomkit smoke --distributed`, or gpurig-launch "
            "on a gpurig cluster"
        )
    report = run_smoke(ctx, distributed_stages())
    try:
        fleet = gather_fleet(ctx, rank_summary(ctx, report), wait_s=float(ctx.args.dist_timeout))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    report["fleet"] = fleet
    path = ctx.args.json
    per_rank = path is not None and "{rank}" in str(path)
    if per_rank:
        assert path is not None
        write_json(Path(str(path).replace("{rank}", str(ctx.rank))), report)
    if ctx.rank == 0:
        print(format_summary(report), flush=True)
        print(format_fleet(fleet), flush=True)
        if path is not None:
            target = Path(str(path).replace("{rank}", "fleet")) if per_rank else Path(path)
            write_json(target, fleet if per_rank else report)
            print(f"report: {target}", flush=True)
    elif report["verdict"] != PASS:
        for failure in report["failures"]:
            log.warning("rank %d: %s", ctx.rank, failure)
    return 0 if fleet["verdict"] == PASS else 1
