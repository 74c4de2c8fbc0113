"""Any causal LM, proven: full and LoRA fine-tuning, merging and generation on local BLOOM
(bloom-560m's layout, scaled down), OPT and Llama checkpoints, each made from a config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bloomkit.config import FinetuneArgs
from bloomkit.finetune import finetune

from .conftest import LORA_TARGETS

pytestmark = pytest.mark.slow

GREEDY = ("--temperature", "0", "--max-new-tokens", "8", "--json")
# Full fine-tuning rates that lower the loss in 8 steps; at 1e-2 the 256-wide BLOOM learns
# only the EOS that ends every example and then generates nothing but EOS.
FULL_LR = {"bloom": 3e-3, "opt": 1e-2, "llama": 1e-2}
PROMPTS = ("The GPU host", "A")  # different lengths: a batch of them is left-padded


def _args(data_dir: Path, model: Path, output: Path, **overrides) -> FinetuneArgs:
    values = dict(
        data=str(data_dir / "train.jsonl"),
        output=output,
        model=str(model),
        max_steps=8,
        batch_size=4,
        seq_len=32,
        lr=1e-2,
        logging_steps=1,
        save_steps=8,
        progress=False,
    )
    return FinetuneArgs(**(values | overrides))


def _completions(cli, model: Path, *prompts: str) -> list[str]:
    result = cli("generate", "--model", model, *GREEDY, *prompts)
    assert result.code == 0, result.err
    return [json.loads(line)["completion"] for line in result.out.splitlines()]


def test_full_finetune_then_generate(checkpoint, data_dir, tmp_path, cli) -> None:
    arch, model = checkpoint
    out = tmp_path / "full"
    summary = finetune(_args(data_dir, model, out, lr=FULL_LR[arch]))
    assert summary["global_step"] == 8
    assert summary["last_loss"] < summary["first_loss"] * 0.85
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == arch
    assert (out / "model.safetensors").is_file()
    assert (out / "tokenizer.json").is_file()

    # bloomkit's loading, left padding and decoding give what transformers' own greedy
    # generate gives on the same directory, one prompt at a time; and a batch, left-padded,
    # gives each prompt's own text.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    reference_model = AutoModelForCausalLM.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    reference = []
    for prompt in PROMPTS:
        inputs = tokenizer(prompt, return_tensors="pt")
        new = reference_model.generate(
            **inputs, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.eos_token_id
        )[0, inputs["input_ids"].shape[1] :]
        reference.append(tokenizer.decode(new, skip_special_tokens=True))
    assert reference[0]  # the fine-tuned model says something
    assert [_completions(cli, out, prompt)[0] for prompt in PROMPTS] == reference
    assert _completions(cli, out, *PROMPTS) == reference
    # A single prompt streams (test_generate proves it streams as it goes): the same text.
    streamed = cli("generate", "--model", out, *GREEDY[:-1], PROMPTS[0])
    assert streamed.code == 0, streamed.err
    assert streamed.out == reference[0] + "\n"


def test_lora_adapts_the_attention_and_merges(checkpoint, data_dir, tmp_path, cli) -> None:
    arch, model = checkpoint
    adapter = tmp_path / "adapter"
    merged = tmp_path / "merged"
    common = dict(data=str(data_dir / "sft.jsonl"), lora=True, lr=1e-2, max_steps=10)
    summary = finetune(_args(data_dir, model, adapter, **common))
    assert summary["last_loss"] < summary["first_loss"]
    adapter_config = json.loads((adapter / "adapter_config.json").read_text())
    # peft's per-architecture default, not a fallback to every linear layer.
    assert set(adapter_config["target_modules"]) == LORA_TARGETS[arch]
    assert adapter_config["base_model_name_or_path"] == str(model)
    assert not (adapter / "model.safetensors").exists()

    finetune(_args(data_dir, model, merged, merge=True, **common))
    assert (merged / "model.safetensors").is_file()
    assert not (merged / "adapter_config.json").exists()
    assert json.loads((merged / "config.json").read_text())["model_type"] == arch

    prompt = "What does bloomkit smoke check?"
    from_adapter = _completions(cli, adapter, prompt)
    assert from_adapter[0]
    assert _completions(cli, merged, prompt) == from_adapter
