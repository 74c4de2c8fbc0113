"""A deploy's progress as data: per host, per stage, running or done, and its seconds.

The pyinfra run (gpurig.deploys.progress) turns operations into stage events; `gpurig deploy`
reads them from a pipe (one JSON line each) and shows them (gpurig.progress_view). Both sides
keep the same `Progress`, so the seconds the fleet summary shows are the ones the view showed.

A stage's seconds on a host are the time that host spent in the stage's operations, summed
(preflight: its facts). pyinfra runs each operation on every host before the next one starts, so
a stage's wall clock on a fleet also holds the wait for the slowest host; the summed seconds
are the host's own, the figure that points at the slow stage.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

# The pipe `gpurig deploy` reads the events from, as a file descriptor the pyinfra run inherits.
ENV_PROGRESS_FD = "GPURIG_PROGRESS_FD"
# The deploy's stages in the order deploy/gpu.py runs them, by the name of their @deploy.
STAGE_OF_DEPLOY = {
    "Preflight": "preflight",
    "System": "system",
    "Python": "python",
    "NVIDIA driver": "driver",
    "LLM environment": "llm_env",
    "Cluster": "cluster",
    "Verify": "verify",
}
STAGES = tuple(STAGE_OF_DEPLOY.values())
PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"
STATES = (PENDING, RUNNING, DONE, FAILED)


def stage_of(operation_name: str) -> str:
    """The stage of an operation named "<deploy name> | <operation>" (pyinfra's naming)."""
    deploy_name = operation_name.split(" | ", 1)[0].strip()
    return STAGE_OF_DEPLOY.get(deploy_name) or deploy_name.lower().replace(" ", "_") or "other"


@dataclass(frozen=True)
class Event:
    """One host's stage changed state at `t` (seconds since the epoch)."""

    t: float
    host: str
    stage: str
    state: str
    seconds: float | None = None  # done or failed: the host's seconds in the stage
    detail: str = ""  # failed: where and why

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> Event:
        """The event on one line; ValueError when it is not one."""
        try:
            data: Any = json.loads(line)
            if not isinstance(data, dict) or data.get("state") not in STATES:
                raise ValueError("no state")
            seconds = data.get("seconds")
            return cls(
                t=float(data["t"]),
                host=str(data["host"]),
                stage=str(data["stage"]),
                state=data["state"],
                seconds=float(seconds) if seconds is not None else None,
                detail=str(data.get("detail") or ""),
            )
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"not a progress event ({error}): {line[:200]!r}") from None


@dataclass
class StageRun:
    state: str = PENDING
    started: float | None = None
    seconds: float | None = None  # once it ended
    detail: str = ""

    def elapsed(self, now: float) -> float | None:
        """The seconds to show: final once ended, counting while it runs, None before."""
        if self.seconds is not None:
            return self.seconds
        if self.started is None:
            return None
        return max(0.0, now - self.started)


@dataclass
class HostRun:
    stages: dict[str, StageRun] = field(default_factory=dict)

    def current(self) -> str | None:
        """The stage running now, or the one that failed."""
        for name, stage in self.stages.items():
            if stage.state in (RUNNING, FAILED):
                return name
        return None

    def ordered(self) -> list[tuple[str, StageRun]]:
        return sorted(self.stages.items(), key=lambda item: _rank(item[0]))


def _rank(stage: str) -> int:
    return STAGES.index(stage) if stage in STAGES else len(STAGES)


class Progress:
    """Events in, each host's stages out."""

    def __init__(self) -> None:
        self.hosts: dict[str, HostRun] = {}

    def apply(self, event: Event) -> StageRun:
        host = self.hosts.setdefault(event.host, HostRun())
        stage = host.stages.setdefault(event.stage, StageRun())
        if event.state == PENDING:
            return stage  # planned; a stage that already started stays as it is
        if event.state == RUNNING:
            stage.started = event.t
            stage.seconds = None
        elif stage.started is None:  # ended without a start we saw: no seconds to invent
            stage.seconds = event.seconds
        else:
            stage.seconds = event.seconds if event.seconds is not None else event.t - stage.started
        if stage.seconds is not None:
            stage.seconds = round(stage.seconds, 2)
        stage.state, stage.detail = event.state, event.detail
        return stage

    def stages(self) -> list[str]:
        """Every stage some host has, in the deploy's order."""
        seen = {name for host in self.hosts.values() for name in host.stages}
        return sorted(seen, key=lambda name: (_rank(name), name))

    def seconds(self, host: str) -> dict[str, float]:
        """The stages that ended on `host`, with their seconds, in the deploy's order."""
        run = self.hosts.get(host) or HostRun()
        return {
            name: stage.seconds
            for name, stage in run.ordered()
            if stage.seconds is not None and stage.state in (DONE, FAILED)
        }
