"""The tiny model, and loading models that are not there."""

from __future__ import annotations

import time

import pytest
import torch

from bloomkit.errors import BloomkitError
from bloomkit.models import build_tiny_model, build_tiny_tokenizer, load_model


def test_tiny_is_deterministic_and_fast() -> None:
    again = build_tiny_model(build_tiny_tokenizer())  # imports transformers' modules
    started = time.perf_counter()
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(tokenizer)
    assert time.perf_counter() - started < 1.0
    assert tokenizer.get_vocab() == build_tiny_tokenizer().get_vocab()
    assert all(
        torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters(), strict=True)
    )
    assert model.config.n_layer == 2
    assert model.config.hidden_size == 64
    assert len(tokenizer) == model.config.vocab_size
    text = "A GPU host is ready."
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text


def test_tiny_ignores_the_callers_rng() -> None:
    torch.manual_seed(99)
    first = build_tiny_model(build_tiny_tokenizer())
    after = torch.rand(1)
    torch.manual_seed(99)
    assert torch.equal(torch.rand(1), after)  # the caller's RNG stream was not consumed
    second = build_tiny_model(build_tiny_tokenizer())
    assert torch.equal(first.lm_head.weight, second.lm_head.weight)


def test_model_not_in_cache_and_offline_is_one_line() -> None:
    started = time.perf_counter()
    with pytest.raises(BloomkitError) as caught:
        load_model("bigscience/bloom-560m")
    message = str(caught.value)
    assert "model 'bigscience/bloom-560m' not found locally and the Hub is unreachable" in message
    assert "HF_HOME" in message
    assert "\n" not in message
    assert time.perf_counter() - started < 10


def test_model_not_in_cache_and_hub_unreachable(monkeypatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on discard
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    started = time.perf_counter()
    with pytest.raises(
        BloomkitError, match="not found locally and the Hub is unreachable: no conn"
    ):
        load_model("someone/missing-model")
    assert time.perf_counter() - started < 10


def test_missing_model_directory(tmp_path) -> None:
    with pytest.raises(BloomkitError, match=r"model directory '.*' does not exist"):
        load_model(str(tmp_path / "nope"))


def test_model_not_found_through_the_cli(cli, tmp_path, data_dir) -> None:
    result = cli("generate", "--model", "nobody/nothing", "hello")
    assert result.code == 1
    assert result.err.startswith("bloomkit generate: error: model 'nobody/nothing' not found")
    assert result.err.count("\n") == 1
    result = cli(
        "finetune",
        "--model",
        "nobody/nothing",
        "--data",
        data_dir / "train.jsonl",
        "--output",
        tmp_path / "o",
    )
    assert result.code == 1
    assert result.err.startswith("bloomkit finetune: error: model 'nobody/nothing' not found")
    assert result.err.count("\n") == 1
    assert not list(tmp_path.iterdir())  # nothing written
