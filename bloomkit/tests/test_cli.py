"""The command line: env, --debug tracebacks, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def test_env_json_has_what_a_bug_report_needs(cli) -> None:
    result = cli("env", "--json")
    assert result.code == 0
    env = json.loads(result.out)
    for key in (
        "hostname",
        "os",
        "python",
        "torch",
        "driver_version",
        "cuda_driver",
        "gpus",
        "packages",
        "cpu",
        "memory_gb",
    ):
        assert key in env
    assert {"version", "cuda", "cudnn", "nccl"} <= env["torch"].keys()
    assert {"transformers", "peft", "accelerate"} <= env["packages"].keys()
    assert all(env["packages"][p] for p in ("transformers", "peft", "accelerate"))


def test_env_table(cli) -> None:
    result = cli("env")
    assert result.code == 0
    assert result.out.startswith("host ")
    assert "torch " in result.out


def test_debug_shows_the_traceback_and_plain_does_not(cli, tmp_path) -> None:
    args = (
        "finetune",
        "--model",
        "tiny",
        "--data",
        tmp_path / "none.jsonl",
        "--output",
        tmp_path / "o",
    )
    plain = cli(*args)
    assert plain.code == 2  # a missing data file is a usage error
    assert "Traceback" not in plain.err
    debug = cli("--debug", *args)
    assert debug.code == 2
    assert "Traceback" in debug.err
    assert debug.err.rstrip().endswith("none.jsonl' not found")


@pytest.mark.slow
def test_a_fresh_process_prints_one_line_and_exits_1(tmp_path) -> None:
    """Nothing but the error line on stderr: no warnings, no progress bars, no traceback."""
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bloomkit",
            "finetune",
            "--model",
            "tiny",
            "--data",
            str(empty),
            "--output",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"bloomkit finetune: error: dataset '{empty}' is empty: no example has any text to learn"
    ]
    assert not (tmp_path / "o").exists()
