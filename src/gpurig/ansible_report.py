"""The fleet summary of an Ansible run, for the fleet report action plugin: every host's report
(bloomkit's, fetched, or one gpurig writes with the reason a host has none), the run file
`gpurig report` reads, and the summary gpurig.report prints, as the pyinfra deploy ends.

Apart from gpurig.ansible_bridge so that the action, which runs once at the end of a play,
imports only gpurig.report (rich) and not pyinfra, the controller and the plan.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from gpurig import atomic, report

NO_REPORT = "no report"  # the smoke role's verdict when bloomkit wrote none


@dataclass(frozen=True)
class HostOutcome:
    """How far a host got in a playbook run."""

    verdict: str | None  # set by the smoke role: pass, fail, no report, skipped
    preflight: Mapping[str, Any] | None  # the gpurig host fact, when preflight ran
    smoke_exit: int | None = None
    failure: str | None = None  # the failed task and its message, when a stage failed


def _reason(outcome: HostOutcome) -> str:
    """Why a host has no smoke report, in the pyinfra deploy's words."""
    plan = outcome.preflight
    if outcome.verdict == NO_REPORT:
        # Only here: gpurig.plan (spec, pydantic) is the heavy part of this module's imports.
        from gpurig.plan import smoke

        step = ((plan or {}).get("steps") or {}).get("verify.smoke") or {}
        return smoke.without_report(step.get("timeout_s", 0), outcome.smoke_exit, [])
    if plan is not None and not plan.get("ok"):
        return "preflight: " + "; ".join(plan.get("problems") or [])
    if outcome.failure:
        return f"failed at {' '.join(outcome.failure.split())}"
    if plan is None:
        return "could not connect: is the host up and its key known?"
    return "failed before the smoke test (see the task that failed above)"


def fleet_summary(
    reports_dir: Path, outcomes: Mapping[str, HostOutcome], started: float
) -> tuple[bool, list[str]]:
    """Reports for every host of the run, the run file `gpurig report` reads, and the summary
    gpurig.report prints for it, as text lines; False when a host failed."""
    hosts: dict[str, dict[str, Any]] = {}
    for host, outcome in outcomes.items():
        if outcome.verdict in (report.PASS, report.FAIL):  # bloomkit's own report, fetched
            status = (
                "reported" if outcome.verdict == report.PASS and not outcome.failure else "failed"
            )
        elif outcome.verdict == report.SKIPPED and not outcome.failure:
            status = "skipped"
        else:
            facts = (outcome.preflight or {}).get("facts") or {}
            os_name = f"{facts['os_id']}-{facts['os_version']}" if facts.get("os_id") else None
            report.write(reports_dir, host, report.failure_report(host, _reason(outcome), os_name))
            status = "failed"
        hosts[host] = {"status": status, "changed": []}
    run = {"started": started, "finished": time.time(), "hosts": hosts}
    atomic.write_text(reports_dir / report.RUN_FILE, json.dumps(run, indent=2) + "\n")
    out = io.StringIO()
    console = Console(file=out, width=140, color_system=None, highlight=False)
    ok = report.print_summary(report.load_run(reports_dir), console)
    return ok, [line.rstrip() for line in out.getvalue().rstrip().splitlines()]
