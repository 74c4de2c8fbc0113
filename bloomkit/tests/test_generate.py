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


class _Timeline(io.StringIO):
    """stdout that notes, for every non-empty write, how many forward passes had run."""

    def __init__(self, passes: list[int]) -> None:
        super().__init__()
        self.passes = passes
        self.writes: list[tuple[int, str]] = []

    def write(self, text: str) -> int:
        if text:
            self.writes.append((len(self.passes), text))
        return super().write(text)


def _generate_with_a_timeline(monkeypatch, **kwargs) -> tuple[str, int, list[tuple[int, str]]]:
    """Generate 8 tokens from the tiny model, which is made to say " the is the is ..." (words,
    so the streamer has a word boundary at every token); returns the completion, the number of
    forward passes, and each write to stdout with the passes that had run before it."""
    from bloomkit import generate as generate_module

    passes: list[int] = []
    real_load = generate_module.load_model

    def load_model(*args, **load_kwargs):
        loaded = real_load(*args, **load_kwargs)
        words = loaded.tokenizer(" the is", add_special_tokens=False)["input_ids"]
        assert len(words) == 2

        def choose_next_token(_module, _inputs, output):
            output.logits[:, -1, :] = -1e4
            output.logits[:, -1, words[len(passes) % 2]] = 0.0
            passes.append(1)
            return output

        loaded.model.register_forward_hook(choose_next_token)
        return loaded

    monkeypatch.setattr(generate_module, "load_model", load_model)
    out = _Timeline(passes)
    values = dict(model="tiny", prompts=["The GPU host"], max_new_tokens=8, temperature=0)
    results = generate(GenerateArgs(**(values | kwargs)), out=out)
    return results[0]["completion"], len(passes), out.writes


def test_streaming_prints_tokens_before_generation_ends(monkeypatch) -> None:
    completion, passes, writes = _generate_with_a_timeline(monkeypatch)
    assert completion == " the is the is the is the is"
    assert passes == 8  # one forward pass per new token
    assert "".join(text for _, text in writes) == completion + "\n"
    # Text reaches stdout after every forward pass, while the model still has passes to run
    # (the streamer prints up to the last space it has); the rest of the word comes at the end.
    assert [n for n, _ in writes] == [*range(1, passes + 1), passes]
    assert writes[0] == (1, " ")
    assert writes[1] == (2, "the ")
    assert sum(n < passes for n, _ in writes) == passes - 1


def test_without_streaming_the_text_comes_only_at_the_end(monkeypatch) -> None:
    """The same timeline tells the two apart: the test above fails on this path."""
    for kwargs in (dict(stream=False), dict(json=True)):
        completion, passes, writes = _generate_with_a_timeline(monkeypatch, **kwargs)
        assert completion == " the is the is the is the is"
        assert [n for n, _ in writes] == [passes]  # one write, after the last forward pass


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
