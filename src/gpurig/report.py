"""Fleet reports: one `bloomkit smoke --json` report per host, summed up in one table.

Every front end fetches each host's report to reports/<host>.json; this module reads them and
nothing else of bloomkit (the keys bloomkit's report.py promises: verdict, host, duration_s,
env.os, env.gpus[].{name, compute_capability, memory_gb}, env.driver_version,
env.torch.{version, cuda}, the gemm stage's figures.tflops_bf16, stages[].{name, seconds}). A
host that failed before its smoke test gets a report written by gpurig in the same shape, with
`source: gpurig` and the reason in `failures`, so a summary always says why.

The run file (RUN_FILE) adds what the deploy measured: each host's seconds per deploy stage
(gpurig.progress). The stage table puts them beside the smoke test's slowest stage, so the next
slow stage is found by reading.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from gpurig.progress import STAGES

PASS, FAIL, SKIPPED, MISSING = "pass", "fail", "skipped", "no report"
RUN_FILE = ".gpurig-run.json"  # the hosts of the last deploy run, written when it ends


@dataclass(frozen=True)
class HostReport:
    host: str  # the inventory name (the file name), not the machine's hostname
    verdict: str  # pass, fail, skipped (smoke not run this time), no report
    os: str | None = None
    gpu: str | None = None
    driver: str | None = None
    torch: str | None = None
    cuda: str | None = None
    tflops_bf16: float | None = None
    seconds: float | None = None
    failures: list[str] = field(default_factory=list)
    smoke_stages: dict[str, float] = field(default_factory=dict)  # smoke stage -> seconds
    deploy_stages: dict[str, float] = field(default_factory=dict)  # from the run file
    dcgm: str | None = None  # the DCGM stage: "pass r2", "fail r2", or None where it did not run

    @property
    def ok(self) -> bool:
        return self.verdict in (PASS, SKIPPED)


def _gpus(gpus: list[dict[str, Any]]) -> str:
    if not gpus:
        return "none"
    counts = Counter(str(g.get("name") or "?") for g in gpus)
    return ", ".join(f"{n}x {name}" if n > 1 else name for name, n in counts.items())


def _gemm(stages: list[dict[str, Any]]) -> float | None:
    for stage in stages:
        figures = stage.get("figures") or {}
        if stage.get("name") == "gemm" and isinstance(figures.get("tflops_bf16"), int | float):
            return float(figures["tflops_bf16"])
    return None


def _stage_seconds(stages: list[dict[str, Any]]) -> dict[str, float]:
    """The seconds of the smoke stages that ran (a skipped one never started)."""
    return {
        str(stage.get("name")): float(stage["seconds"])
        for stage in stages
        if isinstance(stage, dict)
        and stage.get("status") != "skip"
        and isinstance(stage.get("seconds"), int | float)
    }


def _dcgm(stages: list[dict[str, Any]]) -> str | None:
    """The dcgm stage's verdict and diag level, when it ran (bloomkit.dcgm)."""
    for stage in stages:
        figures = stage.get("figures") or {}
        if stage.get("name") == "dcgm" and stage.get("status") in (PASS, FAIL):
            level = figures.get("level")
            return f"{stage['status']} r{level}" if level else str(stage["status"])
    return None


def _short_os(name: str | None) -> str | None:
    return name.replace(" GNU/Linux", "") if name else name


def parse(host: str, data: dict[str, Any]) -> HostReport:
    env = data.get("env") or {}
    torch = env.get("torch") or {}
    failures = [str(f) for f in data.get("failures") or []]
    verdict = str(data.get("verdict") or FAIL)
    duration = data.get("duration_s")
    return HostReport(
        host=host,
        verdict=verdict,
        os=_short_os(env.get("os")),
        gpu=_gpus(env.get("gpus") or []) if "gpus" in env else None,
        driver=env.get("driver_version"),
        torch=torch.get("version"),
        cuda=torch.get("cuda"),
        tflops_bf16=_gemm(data.get("stages") or []),
        seconds=float(duration) if isinstance(duration, int | float) else None,
        failures=failures if failures or verdict == PASS else ["the report names no failure"],
        smoke_stages=_stage_seconds(data.get("stages") or []),
        dcgm=_dcgm(data.get("stages") or []),
    )


def load(path: Path) -> HostReport:
    host = path.stem
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return HostReport(host, MISSING, failures=[f"no report at {path}"])
    except (OSError, ValueError) as error:
        return HostReport(host, FAIL, failures=[f"unreadable report {path}: {error}"])
    if not isinstance(data, dict):
        return HostReport(host, FAIL, failures=[f"{path} is not a report (not a JSON object)"])
    return parse(host, data)


def report_path(directory: Path, host: str) -> Path:
    return directory / f"{host}.json"


def load_dir(directory: Path, hosts: Iterable[str] | None = None) -> list[HostReport]:
    """Reports of these hosts (a missing one says so), or of every host in the folder."""
    if hosts is None:
        names = sorted(p.stem for p in directory.glob("*.json") if not p.name.startswith("."))
    else:
        names = list(hosts)
    return [load(report_path(directory, name)) for name in names]


def load_run(directory: Path, since: float | None = None) -> list[HostReport]:
    """Reports of the last run's hosts; `since`: a run that started earlier is not this one."""
    path = directory / RUN_FILE
    try:
        run = json.loads(path.read_text())
        hosts = dict(run["hosts"])
        started = float(run["started"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise RunRecordError(f"no record of the run in {path} ({error})") from None
    if since is not None and started < since:
        raise RunRecordError(f"{path} is from an earlier run: this run ended before writing it")
    out = []
    for name, info in hosts.items():
        found = replace(load(report_path(directory, name)), deploy_stages=_deploy_stages(info))
        if isinstance(info, dict) and info.get("status") == "skipped":
            # What the host is still holds; the measurements were of an earlier run.
            found = replace(
                found,
                verdict=SKIPPED,
                failures=[],
                tflops_bf16=None,
                seconds=None,
                smoke_stages={},
                os=found.os or info.get("os"),
            )
        out.append(found)
    return out


def _deploy_stages(info: Any) -> dict[str, float]:
    stages = info.get("stages") if isinstance(info, dict) else None
    if not isinstance(stages, dict):
        return {}  # a run file from before stage seconds, or a hand-made one
    return {str(k): float(v) for k, v in stages.items() if isinstance(v, int | float)}


def with_deploy_stages(reports: list[HostReport], directory: Path) -> list[HostReport]:
    """The last run's stage seconds on the hosts it deployed (`gpurig report` of a folder)."""
    try:
        hosts = json.loads((directory / RUN_FILE).read_text())["hosts"]
    except (OSError, ValueError, KeyError, TypeError):
        return reports
    if not isinstance(hosts, dict):
        return reports
    return [replace(r, deploy_stages=_deploy_stages(hosts.get(r.host))) for r in reports]


class RunRecordError(Exception):
    """The run file is missing or stale: the deploy stopped before it finished."""


def failure_report(host: str, reason: str, os_name: str | None = None) -> dict[str, Any]:
    """What gpurig writes for a host that failed before its smoke test produced a report."""
    return {
        "verdict": FAIL,
        "host": host,
        "source": "gpurig",
        "duration_s": None,
        "env": {"os": os_name} if os_name else {},
        "stages": [],
        "failures": [reason],
    }


def write(directory: Path, host: str, data: dict[str, Any]) -> Path:
    """Write atomically: a reader never sees half a report."""
    directory.mkdir(parents=True, exist_ok=True)
    path = report_path(directory, host)
    fd, tmp = tempfile.mkstemp(prefix=f".{host}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(data, out, indent=2)
            out.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


_STYLE = {PASS: "bold green", FAIL: "bold red", SKIPPED: "yellow", MISSING: "bold red"}


def table(reports: list[HostReport]) -> Table:
    out = Table(title="gpurig fleet summary", title_justify="left", header_style="bold")
    out.add_column("host", no_wrap=True)
    out.add_column("OS")
    out.add_column("GPU")
    out.add_column("driver")
    out.add_column("torch / CUDA", no_wrap=True)
    out.add_column("verdict", no_wrap=True)
    out.add_column("GEMM TFLOP/s", justify="right")
    out.add_column("seconds", justify="right")
    with_dcgm = any(r.dcgm for r in reports)  # the column only where DCGM ran (opt-in)
    if with_dcgm:
        out.add_column("DCGM", no_wrap=True)
    for r in reports:
        stack = f"{r.torch} / {r.cuda or 'cpu'}" if r.torch else "-"
        out.add_row(
            r.host,
            r.os or "-",
            r.gpu or "-",
            r.driver or "-",
            stack,
            f"[{_STYLE.get(r.verdict, 'bold red')}]{r.verdict.upper()}[/]",
            f"{r.tflops_bf16:.1f}" if r.tflops_bf16 is not None else "-",
            f"{r.seconds:.1f}" if r.seconds is not None else "-",
            *([r.dcgm or "-"] if with_dcgm else []),
        )
    return out


def stage_table(reports: list[HostReport]) -> Table:
    """Seconds per deploy stage, host by host, the slowest in bold; then the smoke's slowest."""
    stages = sorted(
        {name for r in reports for name in r.deploy_stages},
        key=lambda name: (STAGES.index(name) if name in STAGES else len(STAGES), name),
    )
    out = Table(title="seconds per stage", title_justify="left", header_style="bold")
    out.add_column("host", no_wrap=True)
    for name in stages:
        out.add_column(name, justify="right")
    out.add_column("deploy", justify="right")
    out.add_column("slowest smoke stage", no_wrap=True)
    for r in reports:
        slowest = max(r.deploy_stages, key=r.deploy_stages.__getitem__, default=None)
        cells = []
        for name in stages:
            value = r.deploy_stages.get(name)
            text = f"{value:.1f}" if value is not None else "-"
            cells.append(f"[bold]{text}[/]" if name == slowest else text)
        total = sum(r.deploy_stages.values())
        smoke = max(r.smoke_stages.items(), key=lambda item: item[1], default=None)
        out.add_row(
            r.host,
            *cells,
            f"{total:.1f}" if r.deploy_stages else "-",
            f"{smoke[0]} {smoke[1]:.1f}" if smoke else "-",
        )
    return out


def failed(reports: list[HostReport]) -> list[HostReport]:
    return [r for r in reports if not r.ok]


def console() -> Console:
    """Wide enough for the table when the output is a pipe or a log file (rich says 80)."""
    plain = Console(highlight=False)
    return plain if plain.is_terminal else Console(highlight=False, width=120)


def print_summary(reports: list[HostReport], out: Console | None = None) -> bool:
    """Print the table, then one line per failed host; True when every host is ok."""
    out = out or console()
    if not reports:
        out.print("no reports")
        return False
    out.print(table(reports))
    if any(r.deploy_stages or r.smoke_stages for r in reports):
        out.print(stage_table(reports))
    bad = failed(reports)
    for r in bad:
        reason = "; ".join(r.failures) or r.verdict
        out.print(f"[bold red]{r.host}[/] {r.verdict}: {reason}", soft_wrap=True)
    passed = sum(r.verdict == PASS for r in reports)
    skipped = sum(r.verdict == SKIPPED for r in reports)
    tail = f", {skipped} skipped" if skipped else ""
    out.print(f"{passed} of {len(reports)} host(s) passed{tail}, {len(bad)} failed")
    return not bad
