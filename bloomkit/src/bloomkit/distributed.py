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

Modules: the process group and its checks (group), busbw, ddp, the fleet verdict (fleet); the
runner (stages) is the per-host smoke's.

Reports: `--json DIR/{rank}.json` gives one report per rank and DIR/fleet.json from rank 0;
without `{rank}` rank 0 writes its own report, which carries the fleet section.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch.distributed as dist

from bloomkit import smoke as per_host
from bloomkit.busbw import stage_busbw
from bloomkit.config import SmokeArgs
from bloomkit.ddp import stage_ddp
from bloomkit.errors import UsageError
from bloomkit.fleet import format_fleet, gather_fleet, rank_summary
from bloomkit.group import need_group, stage_allreduce, stage_dist, torchrun_env
from bloomkit.report import PASS, format_summary, write_json
from bloomkit.stages import Stage, run_smoke

log = logging.getLogger(__name__)
SINGLE_HOST_ONLY = ("dcgm", "nccl", "llm", "llm_model")  # per-host stages the deploy's smoke covers


def distributed_stages() -> list[Stage]:
    """smoke's stages, the distributed ones added: join right after `cuda` (a missing peer
    fails fast), the collectives after the per-GPU measurements."""
    single = [s for s in per_host.STAGES if s.name not in SINGLE_HOST_ONLY]
    at = [s.name for s in single].index("cuda") + 1
    mem = lambda ctx: "use --quick or a smaller --busbw-mib"  # noqa: E731
    return [
        *single[:at],
        Stage("dist", stage_dist),
        *single[at:],
        Stage("allreduce", stage_allreduce, when=need_group, oom_advice=mem),
        Stage("busbw", stage_busbw, when=need_group, oom_advice=mem),
        Stage("ddp", stage_ddp, when=need_group, oom_advice=mem),
    ]


def smoke(args: SmokeArgs, debug: bool = False) -> int:
    """`bloomkit smoke --distributed`: this rank's report, the fleet's verdict as exit code."""
    ctx = per_host.prepare(args, debug)
    if torchrun_env() is None:
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
    path = args.json
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
