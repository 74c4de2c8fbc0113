"""The stage runner of `bloomkit smoke`: a stage, what stages share, and one run of a list.

A stage is a function `run(ctx, result)` that fills `result.figures` and `result.reason`, and
raises `Skip` or `Fail`; `when(ctx)` can skip it before it starts. The runner times it, turns
an out-of-memory error into "out of GPU memory in stage X: lower ...", and any other exception
into a failed stage (the traceback only with --debug). The verdict is pass when every stage that
ran passed. The per-host stages (bloomkit.smoke) and the distributed ones (bloomkit.distributed)
both run here, so neither imports the other's runner.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bloomkit import __version__
from bloomkit.config import SmokeArgs, to_dict
from bloomkit.errors import BloomkitError
from bloomkit.report import (
    FAIL,
    PASS,
    SCHEMA_VERSION,
    SKIP,
    StageResult,
    process_seconds,
    utc_now,
    verdict_of,
)

log = logging.getLogger(__name__)


class Skip(Exception):
    """The stage does not apply here (the reason says why); it is not required."""


class Fail(Exception):
    """The stage ran and a check did not hold."""


@dataclass
class SmokeContext:
    """What stages share: the arguments, the environment, the GPUs that proved usable."""

    args: SmokeArgs
    debug: bool = False
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    env: dict[str, Any] = field(default_factory=dict)
    devices: list[int] = field(default_factory=list)  # GPUs that passed the cuda stage
    workdir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()))
    dist: Any = None  # --distributed: the process group's state (bloomkit.distributed)

    @classmethod
    def from_environment(cls, args: SmokeArgs, debug: bool = False) -> SmokeContext:
        return cls(
            args=args,
            debug=debug,
            rank=int(os.environ.get("RANK", "0")),
            world_size=int(os.environ.get("WORLD_SIZE", "1")),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        )

    @property
    def is_reporter(self) -> bool:
        """Does this process print and write the report?"""
        return self.rank == 0 or "{rank}" in str(self.args.json or "")


@dataclass
class Stage:
    name: str
    run: Callable[[SmokeContext, StageResult], None]
    when: Callable[[SmokeContext], str | None] = lambda ctx: None  # a skip reason, or None
    oom_advice: Callable[[SmokeContext], str] = lambda ctx: "free GPU memory (see nvidia-smi)"


def run_stage(stage: Stage, ctx: SmokeContext) -> StageResult:
    result = StageResult(stage.name)
    skip_reason = stage.when(ctx)
    if skip_reason is not None:
        result.reason = skip_reason
        return result
    if ctx.is_reporter:
        log.info("stage %s ...", stage.name)
    started = time.perf_counter()
    result.required = True
    try:
        stage.run(ctx, result)
        result.status = PASS
    except Skip as exc:
        result.status, result.required, result.reason = SKIP, False, str(exc)
    except Fail as exc:
        result.status, result.reason = FAIL, str(exc)
    except torch.OutOfMemoryError:
        result.status = FAIL
        result.reason = f"out of GPU memory in stage {stage.name}: {stage.oom_advice(ctx)}"
        torch.cuda.empty_cache()
    except BloomkitError as exc:
        result.status, result.reason = FAIL, str(exc)
    except Exception as exc:  # a stage must never take the report down with it
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        result.status, result.reason = FAIL, f"{type(exc).__name__}: {first}".rstrip(": ")
        if ctx.debug:
            log.exception("stage %s", stage.name)
    result.seconds = round(time.perf_counter() - started, 3)
    log.debug("stage %s: %s in %.2fs", stage.name, result.status, result.seconds)
    return result


def run_smoke(ctx: SmokeContext, stages: list[Stage]) -> dict[str, Any]:
    """Run the stages in order; the report as a dict (schema_version 1)."""
    started_at = utc_now()
    started = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory(prefix="bloomkit-smoke-") as workdir:
        ctx.workdir = Path(workdir)
        for stage in stages:
            results.append(run_stage(stage, ctx))
    if not ctx.env:  # a stage list without the env stage still reports the environment
        from bloomkit.env import collect_env

        ctx.env = collect_env()
    verdict, failures = verdict_of(results)
    return {
        "schema_version": SCHEMA_VERSION,
        "bloomkit_version": __version__,
        "verdict": verdict,
        "host": ctx.env.get("hostname") or platform.node(),
        "started_at": started_at,
        "duration_s": round(time.perf_counter() - started, 3),
        "process_s": process_seconds(),
        "command": ["bloomkit", *sys.argv[1:]],
        "args": to_dict(ctx.args),
        "rank": {"rank": ctx.rank, "world_size": ctx.world_size, "local_rank": ctx.local_rank},
        "env": ctx.env,
        "stages": [r.as_dict() for r in results],
        "failures": failures,
    }
