"""The end of a run: every host of it gets a report and a status, and the summary says why."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from gpurig import report
from gpurig.deploys import verify
from gpurig.deploys.progress import StageTracker
from gpurig.operations import control
from gpurig.progress import DONE, RUNNING, Event


@dataclass(frozen=True)
class Host:
    name: str


@dataclass
class Meta:
    complete: bool = True
    changed: bool = False

    def is_complete(self) -> bool:
        return self.complete

    def did_change(self) -> bool:
        return self.changed


@dataclass
class State:
    hosts: list[Host]
    ops: dict[Host, dict[str, Any]]
    failed_hosts: set[Host] = field(default_factory=set)
    is_executing: bool = True

    @property
    def inventory(self) -> list[Host]:
        return self.hosts

    def is_host_in_limit(self, host: Host) -> bool:
        return True

    def get_op_order(self) -> list[str]:
        return ["apt", "venv", "smoke"]

    def get_op_meta(self, op_hash: str) -> Any:
        return SimpleNamespace(names={f"Stage | {op_hash}"})


def op(complete: bool = True, changed: bool = False) -> Any:
    return SimpleNamespace(operation_meta=Meta(complete, changed))


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> verify.Run:
    monkeypatch.setattr(verify, "reports_dir", lambda: tmp_path)
    monkeypatch.setenv(verify.ENV_SUMMARY, "0")
    fresh = verify.Run()
    monkeypatch.setattr(verify, "RUN", fresh)
    control.FAILURES.clear()
    monkeypatch.setattr(verify, "tracker", StageTracker)  # a fresh one each call: no seconds
    return fresh


def test_each_host_ends_with_a_status_and_a_report(run: verify.Run, tmp_path: Path) -> None:
    passed, stopped, lost, skipped, cut = (
        Host(n) for n in ("passed", "stopped", "lost", "skipped", "cut")
    )
    report.write(tmp_path, "passed", {"verdict": "pass", "env": {}, "stages": []})
    report.write(tmp_path, "cut", {"verdict": "pass", "env": {}, "stages": []})  # old, stale
    run.reported.add("passed")
    run.skipped.update({"skipped", "cut"})
    run.os_names["stopped"] = "ubuntu-20.04"
    control.record_failure("stopped", "preflight: ubuntu 20.04 is not supported")
    run.state = State(  # type: ignore[assignment]
        [passed, stopped, lost, skipped, cut],
        {
            passed: {"apt": op(changed=True), "venv": op(), "smoke": op(changed=True)},
            stopped: {"apt": op()},
            lost: {},
            skipped: {"apt": op(), "venv": op()},
            cut: {"apt": op(changed=True), "venv": op(complete=False)},
        },
        failed_hosts={stopped, lost},
    )
    verify.finish()
    record = json.loads((tmp_path / report.RUN_FILE).read_text())
    statuses = {name: info["status"] for name, info in record["hosts"].items()}
    assert statuses == {
        "passed": "reported",
        "stopped": "failed",
        "lost": "failed",
        "skipped": "skipped",
        "cut": "unfinished",
    }
    assert record["hosts"]["passed"]["changed"] == ["Stage | apt", "Stage | smoke"]
    rows = {r.host: r for r in report.load_run(tmp_path)}
    assert rows["passed"].verdict == "pass"
    assert rows["stopped"].failures == ["preflight: ubuntu 20.04 is not supported"]
    assert rows["stopped"].os == "ubuntu-20.04"
    assert rows["lost"].failures[0].startswith("could not connect")
    assert rows["skipped"].verdict == report.SKIPPED
    assert rows["cut"].verdict == "fail"  # not the stale pass from an earlier run
    assert rows["cut"].failures[0].startswith("the run ended before this host finished")


def test_nothing_is_written_after_a_dry_run(run: verify.Run, tmp_path: Path) -> None:
    run.state = State([Host("a")], {}, is_executing=False)  # type: ignore[assignment]
    verify.finish()
    assert list(tmp_path.iterdir()) == []


def test_the_run_file_holds_each_hosts_stage_seconds(
    run: verify.Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracker = StageTracker()
    for event in (
        Event(10.0, "a", "preflight", RUNNING),
        Event(11.5, "a", "preflight", DONE),
        Event(12.0, "a", "system", RUNNING),
        Event(30.0, "a", "system", DONE, 8.25),  # its own operations' seconds
        Event(30.0, "a", "llm_env", RUNNING),  # still running when the run ended
    ):
        tracker.progress.apply(event)
    monkeypatch.setattr(verify, "tracker", lambda: tracker)
    run.reported.add("a")
    run.state = State([Host("a")], {Host("a"): {"apt": op()}})  # type: ignore[assignment]
    verify.finish()
    record = json.loads((tmp_path / report.RUN_FILE).read_text())
    assert record["hosts"]["a"]["stages"] == {"preflight": 1.5, "system": 8.25}
    (row,) = report.load_run(tmp_path)
    assert row.deploy_stages == {"preflight": 1.5, "system": 8.25}
