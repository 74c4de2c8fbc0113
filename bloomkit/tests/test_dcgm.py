"""The DCGM stage with a stand-in `dcgmi` on PATH: a passing and a failing diagnostic in DCGM 4's
JSON, DCGM 3's, and the reasons it is skipped."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bloomkit.config import SmokeArgs
from bloomkit.dcgm import datacenter, parse
from bloomkit.report import FAIL, PASS, SKIP
from bloomkit.smoke import STAGES
from bloomkit.stages import SmokeContext, run_stage

H100 = {"name": "NVIDIA H100 80GB HBM3"}
STAGE = next(s for s in STAGES if s.name == "dcgm")


def dcgm4(memory: str = "Pass", warning: str | None = None) -> dict:
    """What `dcgmi diag -r 2 -j` prints with DCGM 4 (trimmed to two tests, two GPUs)."""
    result = {"entity_group": "GPU", "entity_id": 1, "status": memory}
    if warning:
        result["warnings"] = [{"error_id": 83, "message": warning}]
    return {
        "DCGM Diagnostic": {
            "test_categories": [
                {"category": "Deployment", "tests": [
                    {"name": "software", "status": "Pass",
                     "results": [{"entity_group": "GPU", "entity_id": 0, "status": "Pass"}]},
                ]},
                {"category": "Hardware", "tests": [
                    {"name": "memory",
                     "results": [{"entity_group": "GPU", "entity_id": 0, "status": "Pass"},
                                 result]},
                ]},
            ]
        },
        "version": "4.2.3",
    }  # fmt: skip


def fake_dcgmi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> Path:
    folder = tmp_path / "bin"
    folder.mkdir()
    script = folder / "dcgmi"
    script.write_text(f'#!/bin/sh\necho "$*" >{folder}/args\n{body}')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}:{os.environ['PATH']}")
    return folder


def printing(tmp_path: Path, data: dict, rc: int = 0) -> str:
    out = tmp_path / "out.json"
    out.write_text(json.dumps(data, indent=2))
    return f"cat {out}\nexit {rc}\n"


def context(level: int | None = 2, gpus: list[dict] | None = None) -> SmokeContext:
    ctx = SmokeContext(args=SmokeArgs(dcgm_diag=level))
    ctx.env = {"gpus": [H100] if gpus is None else gpus}
    return ctx


def test_a_passing_diagnostic_passes_with_its_tests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = fake_dcgmi(tmp_path, monkeypatch, printing(tmp_path, dcgm4()))
    result = run_stage(STAGE, context(2))
    assert (result.status, result.required) == (PASS, True), result.reason
    assert (folder / "args").read_text().split() == ["diag", "-r", "2", "-j"]
    assert result.figures["tests"] == {"software": "pass", "memory": "pass"}
    assert result.reason == "dcgmi diag -r 2: 2 tests, none failed"


def test_a_failing_test_fails_the_stage_naming_the_gpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    said = "DBE errors detected on GPU 1:  2 uncorrectable"
    fake_dcgmi(tmp_path, monkeypatch, printing(tmp_path, dcgm4("Fail", said), rc=226))
    result = run_stage(STAGE, context(2))
    assert result.status == FAIL
    assert result.reason == (
        "dcgmi diag -r 2: memory on GPU 1: DBE errors detected on GPU 1: 2 uncorrectable"
    )
    assert result.figures["tests"]["memory"] == "fail"


def test_dcgm3_output_and_its_warnings_are_read() -> None:
    data = {"DCGM GPU Diagnostic": {"test_categories": [{"category": "Integration", "tests": [
        {"name": "PCIe", "results": [{"gpu_ids": "0", "status": "Warn",
                                       "warnings": [{"warning": "PCIe replay rate high"}]}]},
    ]}]}}  # fmt: skip
    tests, failures, warnings = parse(data)
    assert (tests, failures) == ({"PCIe": "warn"}, [])
    assert warnings == ["PCIe on GPU 0: PCIe replay rate high"]


def test_no_json_is_a_failure_that_says_what_dcgmi_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = "echo 'Error: unable to establish a connection to the specified host: localhost' >&2\n"
    fake_dcgmi(tmp_path, monkeypatch, body + "exit 255\n")
    result = run_stage(STAGE, context(1))
    assert result.status == FAIL
    assert "exited 255 without JSON: Error: unable to establish a connection" in result.reason
    assert "systemctl status nvidia-dcgm" in result.reason


@pytest.mark.parametrize(
    ("level", "gpus", "reason"),
    [
        (None, None, "no --dcgm-diag given"),
        (1, [], "no GPU"),
        (1, [{"name": "NVIDIA GeForce RTX 4090"}], "not a datacenter GPU (NVIDIA GeForce RTX"),
        (1, [{"name": "NVIDIA RTX A6000"}], "not a datacenter GPU (NVIDIA RTX A6000)"),
        (1, None, "dcgmi not found: install DCGM (stack.yml dcgm.enabled)"),
    ],
)
def test_skipped_with_the_reason(
    level: int | None,
    gpus: list[dict] | None,
    reason: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no dcgmi anywhere
    result = run_stage(STAGE, context(level, gpus))
    assert (result.status, result.required) == (SKIP, False)
    assert result.reason.startswith(reason), result.reason


def test_datacenter_names() -> None:
    assert datacenter("NVIDIA H100 80GB HBM3")
    assert datacenter("Tesla T4")
    assert datacenter("NVIDIA L40S")
    assert not datacenter("NVIDIA GeForce RTX 3090")
    assert not datacenter("Quadro RTX 8000")
    assert not datacenter("NVIDIA RTX 6000 Ada Generation")
