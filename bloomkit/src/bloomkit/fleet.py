"""The fleet verdict of `bloomkit smoke --distributed`, gathered through torchrun's store.

It goes through the store, not the process group, so it still names the ranks that never
reported: rank 0 gathers every rank's verdict and decides; every rank exits with the fleet's
code (torchrun's agents then agree and leave at once).
"""

from __future__ import annotations

import json
import time
from typing import Any

import torch.distributed as dist

from bloomkit.group import DistState, torchrun_env
from bloomkit.report import FAIL, PASS
from bloomkit.stages import SmokeContext

FLEET_KEY = "bloomkit/fleet/rank/"
FLEET_VERDICT_KEY = "bloomkit/fleet/verdict"


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
