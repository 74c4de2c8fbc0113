"""The process group of `bloomkit smoke --distributed`: joining it, and the checks on it.

    dist       join the process group (nccl on GPUs, gloo on CPUs) within --dist-timeout; the
               roster of every rank's host, node and device
    allreduce  known values per rank, exact sums on every rank; all_gather and broadcast

A stage whose collective fails (a peer died, timed out) marks the group broken (`collective`);
the stages after it skip (`need_group`).
"""

from __future__ import annotations

import datetime
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from bloomkit.report import StageResult
from bloomkit.stages import Fail, Skip, SmokeContext

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
INTERFACE_VARS = ("NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME")


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


def group_state(ctx: SmokeContext) -> DistState:
    state = ctx.dist
    assert isinstance(state, DistState)
    return state


def need_group(ctx: SmokeContext) -> str | None:
    state = ctx.dist
    if not isinstance(state, DistState) or not state.ready:
        return "needs the process group (the dist stage failed)"
    if state.broken:
        return f"the process group broke in {state.broken}"
    return None


def collective(run: Callable[[SmokeContext, StageResult], None]) -> Callable[..., None]:
    """A stage whose collectives may fail: mark the group broken, fail with one line."""

    def stage(ctx: SmokeContext, result: StageResult) -> None:
        try:
            run(ctx, result)
        except (Fail, Skip, torch.OutOfMemoryError):
            raise
        except (RuntimeError, ValueError) as exc:  # DistError, DistBackendError, timeouts
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            group_state(ctx).broken = f"{result.name} ({first})"
            hosts = ", ".join(
                sorted({f"{r['host']} (node {r['node_rank']})" for r in group_state(ctx).roster})
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
    state = group_state(ctx)
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


stage_allreduce = collective(_allreduce)
