"""The fleet summary from reports/*.json: every front end prints it the same way."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from gpurig import report
from gpurig.cli import main

H100_PASS: dict[str, Any] = {
    "verdict": "pass",
    "host": "ip-10-0-0-1",
    "duration_s": 41.26,
    "env": {
        "os": "Ubuntu 24.04.1 LTS",
        "gpus": [
            {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "memory_gb": 79.1},
            {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "memory_gb": 79.1},
        ],
        "driver_version": "580.65.06",
        "torch": {"version": "2.13.0+cu130", "cuda": "13.0"},
    },
    "stages": [
        {"name": "env", "status": "pass", "figures": {}},
        {"name": "gemm", "status": "pass", "figures": {"tflops_bf16": 712.4}},
    ],
    "failures": [],
}
CPU_FAIL: dict[str, Any] = {
    "verdict": "fail",
    "duration_s": 12.0,
    "env": {"os": "Debian GNU/Linux 13 (trixie)", "gpus": [], "torch": {"version": "2.13.0"}},
    "stages": [],
    "failures": ["finetune: loss did not fall (5.1 -> 5.3)"],
}


def write(directory: Path, name: str, data: Any) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.json").write_text(json.dumps(data))


def render(reports: list[report.HostReport]) -> tuple[bool, str]:
    console = Console(record=True, width=160, force_terminal=False)
    ok = report.print_summary(reports, console)
    return ok, console.export_text()


def test_a_report_becomes_one_row() -> None:
    row = report.parse("gpu-a", H100_PASS)
    assert row.gpu == "2x NVIDIA H100 80GB HBM3"
    assert row.tflops_bf16 == 712.4
    assert (row.driver, row.torch, row.cuda, row.seconds) == (
        "580.65.06",
        "2.13.0+cu130",
        "13.0",
        41.26,
    )
    assert row.ok


def test_summary_table_and_failure_lines(tmp_path: Path) -> None:
    write(tmp_path, "gpu-a", H100_PASS)
    write(tmp_path, "cpu-b", CPU_FAIL)
    ok, text = render(report.load_dir(tmp_path))
    assert not ok
    header = next(line for line in text.splitlines() if "host" in line)
    for column in ("OS", "GPU", "driver", "torch / CUDA", "verdict", "GEMM TFLOP/s", "seconds"):
        assert column in header
    assert "Debian 13 (trixie)" in text  # "GNU/Linux" dropped
    assert "712.4" in text
    assert "2.13.0+cu130 / 13.0" in text
    assert "cpu-b fail: finetune: loss did not fall (5.1 -> 5.3)" in text
    assert "1 of 2 host(s) passed, 1 failed" in text


@pytest.mark.parametrize(
    ("content", "verdict", "why"),
    [
        (None, report.MISSING, "no report at"),
        ("{not json", report.FAIL, "unreadable report"),
        ("[1, 2]", report.FAIL, "not a report"),
        ('{"verdict": "fail"}', report.FAIL, "the report names no failure"),
    ],
)
def test_broken_reports_fail_with_a_reason(
    tmp_path: Path, content: str | None, verdict: str, why: str
) -> None:
    if content is not None:
        (tmp_path / "h.json").write_text(content)
    row = report.load(tmp_path / "h.json")
    assert row.verdict == verdict
    assert why in row.failures[0]
    assert not row.ok


def test_the_run_file_names_the_hosts_and_marks_skipped_ones(tmp_path: Path) -> None:
    write(tmp_path, "gpu-a", H100_PASS)
    write(tmp_path, "old-host", CPU_FAIL)  # not in this run: not in its summary
    write(tmp_path, "skip-c", H100_PASS)
    run = {
        "started": time.time(),
        "hosts": {
            "gpu-a": {"status": "reported", "changed": []},
            "skip-c": {"status": "skipped", "changed": []},
            "skip-new": {"status": "skipped", "os": "debian-13", "changed": []},
            "gone-d": {"status": "failed", "changed": []},
        },
    }
    (tmp_path / report.RUN_FILE).write_text(json.dumps(run))
    rows = {r.host: r for r in report.load_run(tmp_path)}
    assert set(rows) == {"gpu-a", "skip-c", "skip-new", "gone-d"}
    assert (rows["skip-new"].verdict, rows["skip-new"].os) == (report.SKIPPED, "debian-13")
    assert rows["skip-c"].verdict == report.SKIPPED
    assert rows["skip-c"].seconds is None  # an earlier run's measurement is not shown
    assert rows["skip-c"].ok
    assert rows["gone-d"].verdict == report.MISSING
    with pytest.raises(report.RunRecordError, match="earlier run"):
        report.load_run(tmp_path, since=time.time() + 10)


def test_failure_report_round_trips_through_the_summary(tmp_path: Path) -> None:
    report.write(tmp_path, "h", report.failure_report("h", "preflight: no sudo", "debian-12"))
    row = report.load(tmp_path / "h.json")
    assert (row.verdict, row.os, row.failures) == ("fail", "debian-12", ["preflight: no sudo"])
    assert not list(tmp_path.glob(".*.tmp"))


def test_gpurig_report_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, "gpu-a", H100_PASS)
    assert main(["report", "--reports", str(tmp_path)]) == 0
    write(tmp_path, "cpu-b", CPU_FAIL)
    assert main(["report", "--reports", str(tmp_path)]) == 1
    assert main(["report", "--reports", str(tmp_path / "none")]) == 1
    assert "no reports in" in capsys.readouterr().err


def _timed(seconds: dict[str, float]) -> dict[str, Any]:
    """H100_PASS whose smoke stages carry their seconds (bloomkit's stage runner times each)."""
    stages = [
        {"name": n, "status": "pass", "seconds": s, "figures": {}} for n, s in seconds.items()
    ]
    stages.append({"name": "ddp", "status": "skip", "seconds": 0.0, "figures": {}})
    return {**H100_PASS, "stages": stages}


def test_stage_seconds_are_in_the_summary_beside_the_verdict(tmp_path: Path) -> None:
    write(tmp_path, "gpu-a", _timed({"env": 0.4, "gemm": 3.1, "finetune": 6.25}))
    write(tmp_path, "skip-b", _timed({"env": 0.4, "gemm": 2.0}))
    deployed = {"preflight": 1.2, "system": 8.5, "python": 0.4, "llm_env": 14.0, "verify": 9.6}
    run = {
        "started": time.time(),
        "hosts": {
            "gpu-a": {"status": "reported", "changed": [], "stages": deployed},
            "skip-b": {"status": "skipped", "changed": [], "stages": {"system": 0.3}},
        },
    }
    (tmp_path / report.RUN_FILE).write_text(json.dumps(run))
    rows = {r.host: r for r in report.load_run(tmp_path)}
    assert rows["gpu-a"].deploy_stages == deployed
    assert rows["gpu-a"].smoke_stages == {"env": 0.4, "gemm": 3.1, "finetune": 6.25}  # ran
    assert rows["skip-b"].deploy_stages == {"system": 0.3}  # this run's
    assert rows["skip-b"].smoke_stages == {}  # an earlier run's: not shown
    ok, text = render(list(rows.values()))
    assert ok
    assert "seconds per stage" in text
    header = next(ln for ln in text.splitlines() if "llm_env" in ln)
    order = ["preflight", "system", "python", "llm_env", "verify", "deploy"]
    assert [header.index(name) for name in order] == sorted(header.index(n) for n in order)
    row = [ln for ln in text.splitlines() if " gpu-a " in ln][-1]  # the stage table's row
    cells = [c.strip() for c in row.strip("│ ").split("│")]
    assert cells == ["gpu-a", "1.2", "8.5", "0.4", "14.0", "9.6", "33.7", "finetune 6.2"]
    row = [ln for ln in text.splitlines() if " skip-b " in ln][-1]
    assert [c.strip() for c in row.strip("│ ").split("│")] == [
        "skip-b", "-", "0.3", "-", "-", "-", "0.3", "-",
    ]  # fmt: skip


def test_the_slowest_stage_of_a_host_is_bold() -> None:
    row = report.HostReport("h", report.PASS, deploy_stages={"system": 8.5, "llm_env": 14.0})
    console = Console(record=True, width=160, force_terminal=True)
    console.print(report.stage_table([row]))
    styled = console.export_text(styles=True)
    assert "\x1b[1m14.0" in styled
    assert "\x1b[1m8.5" not in styled


def test_gpurig_report_shows_the_last_runs_stage_seconds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, "gpu-a", H100_PASS)
    write(tmp_path, "old-host", H100_PASS)  # not in the last run: no stage seconds
    run = {"started": 1.0, "hosts": {"gpu-a": {"status": "reported", "stages": {"system": 7.25}}}}
    (tmp_path / report.RUN_FILE).write_text(json.dumps(run))
    assert main(["report", "--reports", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "seconds per stage" in out
    assert "7.2" in next(ln for ln in out.splitlines() if "gpu-a" in ln and "7." in ln)


def test_the_dcgm_column_shows_where_dcgm_ran(tmp_path: Path) -> None:
    """Opt-in: no DCGM column in a fleet where no host ran it; its verdict and level where one
    did, and its failure under the table."""
    _, text = render([report.parse("gpu-a", H100_PASS)])
    assert "DCGM" not in text
    dcgm_fail = {
        "name": "dcgm",
        "status": "fail",
        "figures": {"level": 2, "tests": {"memory": "fail"}},
    }
    failing = {
        **H100_PASS,
        "verdict": "fail",
        "stages": [*H100_PASS["stages"], dcgm_fail],
        "failures": ["dcgm: dcgmi diag -r 2: memory on GPU 1: DBE errors detected"],
    }
    dcgm_pass = {"name": "dcgm", "status": "pass", "figures": {"level": 2}}
    passing = {**H100_PASS, "stages": [*H100_PASS["stages"], dcgm_pass]}
    write(tmp_path, "gpu-a", passing)
    write(tmp_path, "gpu-b", failing)
    write(tmp_path, "cpu-c", CPU_FAIL)
    reports = report.load_dir(tmp_path)
    assert [r.dcgm for r in reports] == [None, "pass r2", "fail r2"]
    _, text = render(reports)
    header = next(line for line in text.splitlines() if "host" in line)
    assert "DCGM" in header
    rows = {line.split()[1]: line for line in text.splitlines() if line.startswith("│ ")}
    assert "pass r2" in rows["gpu-a"]
    assert "fail r2" in rows["gpu-b"]
    assert "gpu-b fail: dcgm: dcgmi diag -r 2: memory on GPU 1: DBE errors detected" in text
