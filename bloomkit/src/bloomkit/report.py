"""The smoke report: its JSON form (report.schema.json, shipped in the package), writing it
atomically, and the human summary.

The gpurig controller reads these keys and nothing else of bloomkit; they are part of the
schema and must not move: verdict, host, duration_s, env.os, env.gpus[].{name,
compute_capability, memory_gb}, env.driver_version, env.torch.{version, cuda}, and the gemm
stage's figures.tflops_bf16.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
SCHEMA_FILE = "report.schema.json"
PASS, FAIL, SKIP = "pass", "fail", "skip"


@dataclass
class StageResult:
    """One stage as the report shows it."""

    name: str
    status: str = SKIP
    required: bool = False
    reason: str = ""
    seconds: float = 0.0
    figures: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_schema() -> dict[str, Any]:
    return json.loads(resources.files("bloomkit").joinpath(SCHEMA_FILE).read_text())


def process_seconds() -> float | None:
    """Seconds since this process started (imports included), from /proc; None elsewhere."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started_ticks = int(fields[19])  # field 22 (starttime), after pid and comm
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return round(uptime - started_ticks / os.sysconf("SC_CLK_TCK"), 2)


def verdict_of(stages: list[StageResult]) -> tuple[str, list[str]]:
    """pass when every required stage passed; the failures as one line each."""
    failures = [f"{s.name}: {s.reason}" for s in stages if s.required and s.status != PASS]
    return (FAIL if failures else PASS), failures


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write beside the target, then rename: a reader never sees half a report."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(data, out, indent=2, default=str)
            out.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def format_summary(report: dict[str, Any]) -> str:
    """The human summary printed on stdout."""
    env = report["env"]
    gpus = env.get("gpus") or []
    hardware = ", ".join(sorted({g["name"] for g in gpus})) if gpus else "no GPU"
    lines = [
        f"bloomkit smoke on {report['host']} ({env.get('os')}): torch {env['torch']['version']}, "
        f"{len(gpus)} GPU(s) {hardware}"
    ]
    for stage in report["stages"]:
        seconds = f"{stage['seconds']:6.2f}s" if stage["status"] != SKIP else "      -"
        optional = "" if stage["required"] or stage["status"] == SKIP else " (not required)"
        lines.append(
            f"  {stage['status'].upper():<4}  {stage['name']:<10} {seconds}  "
            f"{stage['reason']}{optional}"
        )
    lines.append(f"verdict: {report['verdict'].upper()} in {report['duration_s']:.1f}s")
    for failure in report["failures"]:
        lines.append(f"  - {failure}")
    return "\n".join(lines)
