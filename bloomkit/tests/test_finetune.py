"""A real fine-tune of the tiny model on CPU: the loss falls, the output is complete, resume
continues an interrupted run, LoRA trains an adapter and --merge writes a full model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import TrainerCallback

from bloomkit.config import FinetuneArgs
from bloomkit.errors import UsageError
from bloomkit.finetune import CONFIG_FILE, finetune

pytestmark = pytest.mark.slow


def _args(data_dir: Path, output: Path, **overrides) -> FinetuneArgs:
    values = dict(
        data=str(data_dir / "train.jsonl"),
        output=output,
        model="tiny",
        max_steps=8,
        batch_size=4,
        seq_len=32,
        lr=1e-2,
        logging_steps=1,
        save_steps=4,
        progress=False,
    )
    return FinetuneArgs(**(values | overrides))


def test_finetune_lowers_the_loss_and_writes_a_complete_output(tiny_output) -> None:
    out, summary = tiny_output
    assert summary["global_step"] == 8
    assert summary["last_loss"] < summary["first_loss"] * 0.8
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "generation_config.json",
        CONFIG_FILE,
        "checkpoint-4",
        "checkpoint-8",
    ):
        assert (out / name).exists(), name
    assert not out.with_name(out.name + ".partial").exists()
    record = json.loads((out / CONFIG_FILE).read_text())
    assert record["args"]["model"] == "tiny"
    assert record["resolved"]["precision"] == "fp32"
    assert record["resolved"]["learning_rate"] == 1e-2
    assert record["data"]["examples"] == 24
    assert record["result"]["tokens_per_s"] > 0
    assert record["versions"]["transformers"]


def test_generate_from_the_output(cli, tiny_output) -> None:
    out, _ = tiny_output
    result = cli("generate", "--model", out, "--seed", "3", "--max-new-tokens", "8", "The GPU")
    assert result.code == 0, result.err
    assert result.out.strip()


class Interrupt(Exception):
    pass


class StopAfter(TrainerCallback):
    """Kill the run once a checkpoint exists, like a preemption."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            raise Interrupt


def test_resume_continues_an_interrupted_run(tmp_path, data_dir) -> None:
    out = tmp_path / "run"
    with pytest.raises(Interrupt):
        finetune(_args(data_dir, out), callbacks=[StopAfter(4)])
    partial = tmp_path / "run.partial"
    assert not out.exists()  # nothing half-written where the output goes
    assert (partial / "checkpoint-4" / "trainer_state.json").is_file()

    with pytest.raises(UsageError, match="unfinished run"):
        finetune(_args(data_dir, out))
    summary = finetune(_args(data_dir, out, resume="latest"))
    assert summary["resumed_from"].endswith("checkpoint-4")
    assert summary["global_step"] == 8
    assert summary["steps_this_run"] == 4
    assert (out / "model.safetensors").is_file()
    assert not partial.exists()

    # A finished run continues to more steps; the old output stays until the new one is done.
    summary = finetune(_args(data_dir, out, resume="latest", max_steps=10))
    assert summary["global_step"] == 10
    assert summary["resumed_from"].endswith("checkpoint-8")


def test_out_of_memory_says_what_to_lower(tmp_path, data_dir, cli, monkeypatch) -> None:
    import torch
    from transformers import BloomForCausalLM, Trainer

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(Trainer, "train", oom)
    out = tmp_path / "out"
    result = cli(
        "finetune",
        "--model",
        "tiny",
        "--data",
        data_dir / "train.jsonl",
        "--output",
        out,
        "--batch-size",
        "4",
        "--seq-len",
        "32",
    )
    assert result.code == 1
    error = result.err.splitlines()[-1]  # after the info lines
    assert error.startswith(
        "bloomkit finetune: error: out of GPU memory in finetune: lower --batch-size (now 4) "
        "or --seq-len (now 32)"
    )
    assert "Traceback" not in result.err
    assert not out.exists()

    monkeypatch.setattr(BloomForCausalLM, "generate", oom)
    result = cli("generate", "--model", "tiny", "--max-new-tokens", "7", "hi")
    assert result.code == 1
    assert (
        "out of GPU memory in generate: lower --batch-size (now 8) or --max-new-tokens (now 7)"
        in (result.err)
    )


def test_existing_output_needs_overwrite(tmp_path, data_dir, cli) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep").write_text("x")
    result = cli(
        "finetune",
        "--model",
        "tiny",
        "--data",
        data_dir / "train.jsonl",
        "--output",
        out,
        "--max-steps",
        "2",
    )
    assert result.code == 2
    assert "--overwrite replaces it" in result.err
    assert (out / "keep").exists()
    result = cli(
        "finetune",
        "--model",
        "tiny",
        "--data",
        data_dir / "train.jsonl",
        "--output",
        out,
        "--max-steps",
        "2",
        "--seq-len",
        "16",
        "--overwrite",
        "--no-progress",
    )
    assert result.code == 0, result.err
    assert result.out.startswith(f"saved {out.resolve()}: 2 steps")
    assert not (out / "keep").exists()
    assert (out / "model.safetensors").exists()


def test_lora_adapter_and_merged_model_generate_the_same(tmp_path, data_dir, cli) -> None:
    adapter = tmp_path / "adapter"
    merged = tmp_path / "merged"
    common = dict(
        data=str(data_dir / "sft.jsonl"),
        lora=True,
        lora_target=["all-linear"],
        lr=1e-2,
        max_steps=10,
        save_steps=10,
    )
    summary = finetune(_args(data_dir, adapter, **common))
    assert summary["last_loss"] < summary["first_loss"]
    assert (adapter / "adapter_config.json").is_file()
    assert (adapter / "adapter_model.safetensors").is_file()
    assert not (adapter / "model.safetensors").exists()
    assert (
        json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
        == "tiny"
    )

    finetune(_args(data_dir, merged, merge=True, **common))
    assert (merged / "model.safetensors").is_file()
    assert not (merged / "adapter_config.json").exists()

    prompt = "What does bloomkit smoke check?"
    greedy = ("--temperature", "0", "--max-new-tokens", "10", "--json", prompt)
    from_adapter = cli("generate", "--model", adapter, *greedy)
    from_merged = cli("generate", "--model", merged, *greedy)
    assert from_adapter.code == 0, from_adapter.err
    assert from_merged.code == 0, from_merged.err
    completion = json.loads(from_merged.out)["completion"]
    assert completion
    assert json.loads(from_adapter.out)["completion"] == completion
