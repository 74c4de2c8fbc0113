"""`gpurig deploy`: the pyinfra command it runs, and its exit code from the run's reports."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import pytest

from gpurig import report
from gpurig.commands import deploy
from gpurig.errors import UsageError

REPO_ROOT = Path(__file__).resolve().parents[2]


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    deploy.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_pyinfra_command() -> None:
    command = deploy.pyinfra_command(
        parse("--limit", "gpu", "--skip-smoke", "--", "--serial", "-v")
    )
    assert command[1:] == [
        "-y", "--data", "gpurig_early_push=true", "inventory.py", "deploy/gpu.py", "--limit", "gpu",
        "--data", "gpurig_skip_smoke=true",
        "--data", "ssh_strict_host_key_checking=yes", "--serial", "-v",
    ]  # fmt: skip
    assert command[0].endswith("pyinfra")


def test_only_a_run_that_executes_pushes_wheels_before_their_step() -> None:
    dry = deploy.pyinfra_command(parse("--dry"))
    assert "--dry" in dry
    assert not any("gpurig_early_push" in arg for arg in dry)


def test_host_keys_stay_strict_whatever_the_inventory() -> None:
    command = deploy.pyinfra_command(parse("--inventory", "other.py"))
    at = command.index("ssh_strict_host_key_checking=yes")
    assert command[at - 1] == "--data"
    with pytest.raises(UsageError, match="strictly"):
        deploy.pyinfra_command(parse("--", "--data", "ssh_strict_host_key_checking=accept-new"))


def test_environment_points_the_run_at_files_and_silences_its_summary(tmp_path: Path) -> None:
    env = deploy.environment(parse("--stack", "other.yml", "--reports", str(tmp_path)))
    assert env["GPURIG_SUMMARY"] == "0"
    assert env["GPURIG_STACK"] == str(Path("other.yml").absolute())
    assert env["GPURIG_REPORTS_DIR"] == str(tmp_path)


@pytest.fixture
def in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO_ROOT)


def fake_pyinfra(
    monkeypatch: pytest.MonkeyPatch, code: int, hosts: dict[str, Any] | None, reports: Path
) -> list[list[str]]:
    calls: list[list[str]] = []

    def call(command: list[str], env: dict[str, str], *console: Any) -> int:
        calls.append(command)
        if hosts is not None:
            run = {"started": time.time(), "hosts": hosts}
            (reports / report.RUN_FILE).write_text(json.dumps(run))
        return code

    monkeypatch.setattr(deploy.subprocess, "call", call)  # --dry
    monkeypatch.setattr(deploy, "run_pyinfra", call)  # a run, its progress shown
    return calls


def test_all_hosts_passing_exits_zero(
    in_repo: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report.write(tmp_path, "a", {"verdict": "pass", "env": {}, "stages": []})
    fake_pyinfra(monkeypatch, 0, {"a": {"status": "reported"}}, tmp_path)
    assert deploy.deploy(parse("--reports", str(tmp_path))) == 0


def test_a_failed_host_exits_nonzero_and_is_named(
    in_repo: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    report.write(tmp_path, "a", {"verdict": "pass", "env": {}, "stages": []})
    report.write(tmp_path, "b", report.failure_report("b", "failed at 'System | Install apt'"))
    hosts = {"a": {"status": "reported"}, "b": {"status": "failed"}}
    fake_pyinfra(monkeypatch, 1, hosts, tmp_path)
    assert deploy.deploy(parse("--reports", str(tmp_path))) == 1
    assert "b fail: failed at 'System | Install apt'" in capsys.readouterr().out


def test_a_run_that_left_no_record_fails(
    in_repo: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake_pyinfra(monkeypatch, 1, None, tmp_path)
    assert deploy.deploy(parse("--reports", str(tmp_path))) == 1
    assert "no fleet summary" in capsys.readouterr().out


def test_dry_run_returns_pyinfra_status_without_a_summary(
    in_repo: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = fake_pyinfra(monkeypatch, 0, None, tmp_path)
    assert deploy.deploy(parse("--dry", "--reports", str(tmp_path))) == 0
    assert "--dry" in calls[0]
    assert "-y" not in calls[0]  # pyinfra detects changes only without -y
