"""Arguments: dataclasses -> argparse, --config files, and the checks in __post_init__."""

from __future__ import annotations

import pytest

from bloomkit.config import FinetuneArgs, GenerateArgs, SmokeArgs
from bloomkit.errors import EXIT_USAGE, UsageError


def test_post_init_rejects_impossible_values() -> None:
    with pytest.raises(UsageError, match="--batch-size"):
        FinetuneArgs(data="d.jsonl", output="out", batch_size=0)
    with pytest.raises(UsageError, match="--merge needs --lora"):
        FinetuneArgs(data="d.jsonl", output="out", merge=True)
    with pytest.raises(UsageError, match="--top-p"):
        GenerateArgs(top_p=0)
    with pytest.raises(UsageError, match="--steps"):
        SmokeArgs(steps=1)


def test_learning_rate_defaults_follow_the_mode() -> None:
    assert FinetuneArgs(data="d", output="o").learning_rate == 5e-5
    assert FinetuneArgs(data="d", output="o", lora=True).learning_rate == 2e-4
    assert FinetuneArgs(data="d", output="o", model="tiny").learning_rate == 3e-3
    assert FinetuneArgs(data="d", output="o", lr=0.1).learning_rate == 0.1


def test_bad_usage_exits_2_in_one_line(cli) -> None:
    result = cli("finetune", "--data", "x.jsonl", "--output", "o", "--batch-size", "0")
    assert result.code == EXIT_USAGE
    assert result.err.strip() == "bloomkit finetune: error: --batch-size must be at least 1"
    result = cli("finetune", "--output", "o")
    assert result.code == EXIT_USAGE
    assert "missing --data" in result.err
    assert cli("smoke", "--no-such-flag").code == EXIT_USAGE


def test_config_file_then_command_line(cli, tmp_path, data_dir) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(f"data: {data_dir / 'missing.jsonl'}\noutput: {tmp_path / 'o'}\nseq-len: 4\n")
    # The file's seq-len is invalid; the command line's wins.
    result = cli("finetune", "--config", config, "--seq-len", "16", "--model", "tiny")
    assert result.code == EXIT_USAGE  # a missing data file is bad usage too, but a later check
    assert "missing.jsonl' not found" in result.err
    assert "--seq-len" not in result.err
    result = cli("finetune", "--config", config)
    assert result.code == EXIT_USAGE
    assert "--seq-len must be at least 8" in result.err
    config.write_text("bogus: 1\n")
    result = cli("finetune", "--config", config)
    assert result.code == EXIT_USAGE
    assert "unknown option 'bogus'" in result.err


def test_help_and_version(cli) -> None:
    assert cli("--version").code == 0
    result = cli("smoke", "--help")
    assert result.code == 0
    assert "--require-gpu" in result.out
