"""Stage 5, verify: `bloomkit smoke --json` on every host, reports to the controller, and the
fleet summary when the run ends.

Every host of a run ends with reports/<host>.json describing that run: the smoke report, or
one gpurig writes with the reason the host stopped (preflight, a failed operation, a lost
connection). reports/.gpurig-run.json lists the run's hosts, and what changed on each.
`gpurig deploy` and `gpurig report` print the same summary from these files.

Data: gpurig_skip_smoke (default false) skips the smoke test for a run; smoke.on_deploy: false
(gpurig_smoke_on_deploy) skips it always: the plan then has no verify step. A skipped host
shows as `skipped` in the summary.
"""

from __future__ import annotations

import atexit
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

from pyinfra.api.deploy import deploy
from pyinfra.api.state import BaseStateCallback, State
from pyinfra.context import ctx_state, host

from gpurig import atomic, report
from gpurig.deploys import ENV_SUMMARY, SPEC_DEFAULTS, host_plan, reports_dir
from gpurig.deploys.progress import tracker
from gpurig.deploys.render import apply
from gpurig.operations.control import FAILURES, record_failure
from gpurig.operations.smoke import smoke
from gpurig.plan.steps import Smoke


@dataclass
class Run:
    """What this pyinfra process did, host by host."""

    started: float = field(default_factory=time.time)
    reported: set[str] = field(default_factory=set)  # a report was written this run
    skipped: set[str] = field(default_factory=set)  # smoke skipped by data
    os_names: dict[str, str] = field(default_factory=dict)
    state: State | None = None


RUN = Run()


class _FirstFailure(BaseStateCallback):
    """Remembers where each host failed, for hosts that no gpurig check stopped."""

    @staticmethod
    def operation_host_error(
        state: State, host: Any, op_hash: Any, retry_count: int = 0, max_retries: int = 0
    ) -> None:
        names = ", ".join(sorted(state.get_op_meta(op_hash).names)) or "an operation"
        record_failure(host.name, f"failed at '{names}'")


def watch_run() -> None:
    """Once per process: record failures, and finish the reports when pyinfra exits."""
    if RUN.state is not None:
        return
    RUN.state = ctx_state.get()  # type: ignore[no-untyped-call]
    RUN.state.add_callback_handler(_FirstFailure())
    RUN.state.add_callback_handler(tracker())  # stage events and seconds (gpurig.progress)
    atexit.register(finish)


def _changed(state: State, target: Any) -> list[str]:
    names = []
    for op_hash in state.get_op_order():  # type: ignore[no-untyped-call]
        data = state.ops[target].get(op_hash)
        if data and data.operation_meta.is_complete() and data.operation_meta.did_change():
            names.append(", ".join(sorted(state.get_op_meta(op_hash).names)))
    return names


def finish() -> None:
    """After the run (never after --dry): reports for every host, the run file, the summary."""
    state = RUN.state
    if state is None or not state.is_executing:
        return
    directory = reports_dir()
    hosts: dict[str, dict[str, Any]] = {}
    for target in state.inventory:
        if not state.is_host_in_limit(target):
            continue
        name = target.name
        ops = state.ops.get(target) or {}
        finished = all(data.operation_meta.is_complete() for data in ops.values())
        if name in RUN.reported:  # the smoke report, pass or fail
            status = "reported"
        elif target in state.failed_hosts or name in FAILURES:
            status = "failed"
            why = FAILURES.get(name) or (
                "failed" if ops else "could not connect: is the host up and its key known?"
            )
        elif name in RUN.skipped and finished:
            status = "skipped"
        else:
            status = "unfinished"
            why = "the run ended before this host finished (interrupted?)"
        if status in ("failed", "unfinished"):
            os_name = RUN.os_names.get(name)
            report.write(directory, name, report.failure_report(name, why, os_name))
        hosts[name] = {
            "status": status,
            "os": RUN.os_names.get(name),
            "changed": _changed(state, target),
            "stages": tracker().seconds(name),  # seconds per stage, in the deploy's order
        }
    run = {
        "started": RUN.started,
        "finished": time.time(),
        "hosts": hosts,
    }
    directory.mkdir(parents=True, exist_ok=True)
    atomic.write_text(directory / report.RUN_FILE, json.dumps(run, indent=2) + "\n")
    if os.environ.get(ENV_SUMMARY, "1") != "0":
        print(flush=True)
        report.print_summary(report.load_run(directory))


@deploy("Verify", data_defaults=SPEC_DEFAULTS)
def verify() -> None:
    steps = [s for s in host_plan().stage("verify") if isinstance(s, Smoke)]
    if not steps:
        RUN.skipped.add(host.name)
        host.log("verify: smoke test skipped (gpurig_skip_smoke / smoke.on_deploy)")
        return
    for step in steps:
        smoke(
            name=step.name,
            step=step,
            reports_dir=str(reports_dir().absolute()),
            on_report=RUN.reported.add,
        )
    # The other checks (the CUDA image's smoke with containers on) render like any plan step.
    for other in host_plan().stage("verify"):
        if not isinstance(other, Smoke):
            apply(other)
