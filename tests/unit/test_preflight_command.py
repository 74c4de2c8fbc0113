"""`gpurig preflight` without hosts: its verdict files, its report and its exit status.

The command against real sandbox hosts is in tests/integration/test_nvidia_preflight.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gpurig import cli
from gpurig.commands import preflight as command
from gpurig.diagnose import Diagnosis
from gpurig.model.host import HostFacts, pci_gpu
from gpurig.preflight import Verdict

FACTS = HostFacts(
    "debian", "12", "x86_64", "3.11", "2.36", 100.0, 64.0, True, True,
    gpus=[pci_gpu("0000:3b:00.0", "2330"), pci_gpu("0000:3c:00.0", "2330")],
)  # fmt: skip
PROBLEM = "driver too old for the wheel: ... Fix: choose the cu128 variant"


def results() -> list[dict[str, Any]]:
    good = command.host_result("gpu-1", FACTS, Verdict(notes=["installs NVIDIA driver 580"]))
    bad = command.host_result(
        "gpu-2",
        FACTS,
        Verdict(
            problems=[PROBLEM],
            diagnoses=[Diagnosis("driver too old for the wheel", "...", "choose ...")],
        ),
    )
    return [json.loads(json.dumps(good)), json.loads(json.dumps(bad))]  # as the files hold them


@pytest.fixture
def fleet(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    inventory = tmp_path / "inventory.py"
    inventory.write_text("hosts = ['gpu-1', 'gpu-2', 'gpu-3']\n")
    monkeypatch.setattr(command, "_hosts", lambda inv, limit: ["gpu-1", "gpu-2", "gpu-3"])
    output = "    [gpu-3] Could not connect ([Errno None] Unable to connect to port 22)\n"
    monkeypatch.setattr(command, "gather", lambda *args: (results(), output))
    return inventory


def test_report_lists_every_problem_and_fails(
    fleet: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["preflight", str(fleet)]) == 1
    out = capsys.readouterr().out
    assert "ok   gpu-1: debian-12, 2x NVIDIA H100 SXM5 80GB (sm_90), no driver loaded" in out
    assert "note: installs NVIDIA driver 580" in out
    assert "FAIL gpu-2:" in out
    assert f"problem: {PROBLEM}" in out
    assert "FAIL gpu-3: no facts" in out
    assert "cannot reach the host (Could not connect ([Errno None] Unable to connect" in out
    assert "1 of 3 host(s) pass preflight" in out


def test_json(fleet: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["preflight", str(fleet), "--json"]) == 1
    parsed = json.loads(capsys.readouterr().out)
    assert [r["host"] for r in parsed] == ["gpu-1", "gpu-2", "gpu-3"]
    assert [r["ok"] for r in parsed] == [True, False, False]
    assert parsed[1]["diagnoses"][0]["name"] == "driver too old for the wheel"
    assert parsed[0]["facts"]["gpus"][0]["compute_capability"] == "9.0"


def test_all_pass_exits_zero(monkeypatch: pytest.MonkeyPatch, fleet: Path) -> None:
    monkeypatch.setattr(command, "_hosts", lambda inv, limit: ["gpu-1"])
    assert cli.main(["preflight", str(fleet)]) == 0


def test_missing_inventory_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["preflight", "no-such-inventory.py"]) == 2
    assert "inventory no-such-inventory.py not found" in capsys.readouterr().err


def test_result_files_are_named_safely(tmp_path: Path) -> None:
    assert command.result_file(tmp_path, "[fe80::1]:2222").name == "_fe80__1__2222.json"


def test_the_facts_only_deploy_runs_the_deploys_own_preflight() -> None:
    text = command.DEPLOY_FILE.read_text()
    assert "from gpurig.deploys.preflight import preflight" in text
    assert "preflight()" in text


def test_an_inline_inventory_is_held_to_known_hosts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # pyinfra trusts a new host key on first use unless told otherwise: every run is told.
    ran: list[list[str]] = []

    class Done:
        stdout = stderr = ""

    def fake_run(argv: list[str], **_: Any) -> Done:
        ran.append(argv)
        return Done()

    monkeypatch.setattr(command.subprocess, "run", fake_run)
    command.gather("ubuntu@gpu-1,ubuntu@gpu-2", tmp_path / "stack.yml", tmp_path, None)
    argv = ran[0]
    assert "ubuntu@gpu-1,ubuntu@gpu-2" in argv
    at = argv.index("ssh_strict_host_key_checking=yes")
    assert argv[at - 1] == "--data"
