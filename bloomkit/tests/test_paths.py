"""Refusals before any work: an output that is a regular file or sits under one, a report path
under a regular file, a data file that is not there. Each is exit 2 and one line."""

from __future__ import annotations

import time

import pytest


def _finetune(cli, data, output, *extra):
    return cli(
        "finetune",
        "--model",
        "tiny",
        "--data",
        data,
        "--output",
        output,
        "--max-steps",
        "2",
        *extra,
    )


def _one_line(result, command: str) -> str:
    assert result.code == 2, result.err
    assert result.out == ""  # no stage ran, no training started
    assert "Traceback" not in result.err
    (line,) = result.err.splitlines()
    assert line.startswith(f"bloomkit {command}: error: ")
    return line


def test_overwrite_onto_a_regular_file_is_refused(cli, tmp_path, data_dir) -> None:
    target = tmp_path / "out"
    target.write_text("not a model")
    for extra in ((), ("--overwrite",), ("--resume",)):
        line = _one_line(_finetune(cli, data_dir / "train.jsonl", target, *extra), "finetune")
        assert line.endswith(
            f"--output '{target}' is a file, not a directory: remove it or choose another path"
        )
    assert target.read_text() == "not a model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no out.partial either


def test_output_under_a_regular_file_is_refused(cli, tmp_path, data_dir) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    target = blocker / "runs" / "out"
    line = _one_line(_finetune(cli, data_dir / "train.jsonl", target), "finetune")
    assert line.endswith(f"--output '{target}': '{blocker}' is a file, not a directory")


def test_a_file_where_the_work_directory_goes_is_refused(cli, tmp_path, data_dir) -> None:
    (tmp_path / "out.partial").write_text("x")
    line = _one_line(
        _finetune(cli, data_dir / "train.jsonl", tmp_path / "out", "--overwrite"), "finetune"
    )
    assert "out.partial' is a file, not a directory" in line


def test_missing_data_is_a_usage_error(cli, tmp_path) -> None:
    line = _one_line(_finetune(cli, tmp_path / "none.jsonl", tmp_path / "o"), "finetune")
    assert line.endswith(f"data file '{tmp_path / 'none.jsonl'}' not found")
    assert not list(tmp_path.iterdir())
    line = _one_line(
        cli("generate", "--model", "tiny", "--prompts-file", tmp_path / "p.txt"), "generate"
    )
    assert line.endswith(f"prompts file '{tmp_path / 'p.txt'}' not found")


@pytest.mark.parametrize("distributed", [False, True])
def test_smoke_json_under_a_regular_file_is_refused_at_once(cli, tmp_path, distributed) -> None:
    blocker = tmp_path / "reports"
    blocker.write_text("x")
    extra = ("--distributed",) if distributed else ()
    path = blocker / ("{rank}.json" if distributed else "r.json")
    started = time.perf_counter()
    line = _one_line(cli("smoke", "--quick", *extra, "--json", path), "smoke")
    assert time.perf_counter() - started < 2  # before the env, GPU and LLM stages
    shown = str(path).replace("{rank}", "0")
    assert line.endswith(f"--json '{shown}': '{blocker}' is a file, not a directory")


def test_smoke_json_that_is_a_directory_is_refused(cli, tmp_path) -> None:
    line = _one_line(cli("smoke", "--quick", "--json", tmp_path), "smoke")
    assert line.endswith(f"--json '{tmp_path}' is a directory: name a file in it")
