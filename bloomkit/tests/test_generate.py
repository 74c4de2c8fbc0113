"""Generation: prompts from arguments, files and stdin; batching; --seed; streaming."""

from __future__ import annotations

import io
import json

import pytest

from bloomkit.config import GenerateArgs
from bloomkit.errors import BloomkitError, UsageError
from bloomkit.generate import generate, read_prompts


def _run(**kwargs) -> tuple[list[dict[str, str]], str]:
    out = io.StringIO()
    values = dict(model="tiny", max_new_tokens=6) | kwargs
    stdin = values.pop("stdin", None)
    results = generate(GenerateArgs(**values), out=out, stdin=stdin)
    return results, out.getvalue()


def test_seed_makes_sampling_deterministic() -> None:
    first, _ = _run(prompts=["hello", "GPU"], seed=5, temperature=1.0)
    second, _ = _run(prompts=["hello", "GPU"], seed=5, temperature=1.0)
    assert first == second
    assert [r["prompt"] for r in first] == ["hello", "GPU"]


def test_batches_and_json_lines() -> None:
    results, text = _run(prompts=["a", "b", "c"], batch_size=2, json=True, temperature=0)
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines == results
    assert len(lines) == 3


def test_a_single_prompt_streams() -> None:
    results, text = _run(prompts=["The GPU host"], temperature=0)
    assert text == results[0]["completion"] + "\n"


def test_prompts_from_a_file_and_stdin(tmp_path) -> None:
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "one"}\n\n{"prompt": "two"}\n')
    assert read_prompts(GenerateArgs(prompts_file=path)) == ["one", "two"]
    plain = tmp_path / "prompts.txt"
    plain.write_text("first\nsecond\n")
    assert read_prompts(GenerateArgs(prompts_file=plain)) == ["first", "second"]
    assert read_prompts(GenerateArgs(prompts=["-"]), stdin=io.StringIO("x\ny\n")) == ["x", "y"]
    results, _ = _run(stdin=io.StringIO("from stdin\n"), temperature=0)
    assert results[0]["prompt"] == "from stdin"


def test_prompt_errors(tmp_path) -> None:
    with pytest.raises(BloomkitError, match=r"prompts file '.*' not found"):
        read_prompts(GenerateArgs(prompts_file=tmp_path / "none.txt"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"prompt": \n')
    with pytest.raises(BloomkitError, match=r"bad\.jsonl:2: not valid JSON"):
        read_prompts(GenerateArgs(prompts_file=bad))
    with pytest.raises(BloomkitError, match="no prompts in stdin"):
        read_prompts(GenerateArgs(), stdin=io.StringIO("\n"))

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    with pytest.raises(UsageError, match="no prompts"):
        read_prompts(GenerateArgs(), stdin=Terminal())
