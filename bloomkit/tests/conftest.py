"""Shared fixtures: the data files, the CLI run in-process, one tiny fine-tune per session."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest


def _restore_the_real_bloomkit() -> None:
    """Under --import-mode=importlib pytest names this file `bloomkit.tests.conftest` and, before
    running it, registers the repository folder bloomkit/ (no __init__.py) as a namespace
    package called `bloomkit`, hiding the installed one. Put the installed package back; the
    test modules keep their `bloomkit.tests.*` names."""
    module = sys.modules.get("bloomkit")
    if module is not None and getattr(module, "__file__", None) is None:
        del sys.modules["bloomkit"]
        importlib.import_module("bloomkit")


_restore_the_real_bloomkit()

DATA = Path(__file__).parent / "data"


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No test may reach the Hub, and none may use the user's HF cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.getbasetemp() / "hf_home"))
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def data_dir() -> Path:
    return DATA


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """`bloomkit ARGS...` in this process (imports are paid once): exit code, stdout, stderr."""

    from bloomkit.cli import main

    def run(*argv: str | os.PathLike[str]) -> Result:
        capsys.readouterr()
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


TINY_STEPS = 8


@pytest.fixture(scope="session")
def tiny_output(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A fine-tune of the tiny model on train.jsonl, shared by the tests that only read it."""
    from bloomkit.config import FinetuneArgs
    from bloomkit.finetune import finetune

    out = tmp_path_factory.mktemp("finetune") / "tiny-out"
    summary = finetune(
        FinetuneArgs(
            data=str(DATA / "train.jsonl"),
            output=out,
            model="tiny",
            max_steps=TINY_STEPS,
            batch_size=4,
            seq_len=32,
            lr=1e-2,
            logging_steps=1,
            save_steps=4,
            progress=False,
        )
    )
    return out, summary


# --- local checkpoints of several architectures ------------------------------------------------
#
# "Any causal LM" is proven on checkpoints that load the way a downloaded one does: a directory
# with config.json, weights and tokenizer files, each made from a config (no download). They
# share the tiny BPE tokenizer; OPT's and Llama's prepend a BOS as their real tokenizers do, and
# Llama's has no pad token, as Llama's has not.

ARCHITECTURES = ("bloom", "opt", "llama")
# Which modules peft adapts by default: the attention projections, named per architecture.
LORA_TARGETS = {
    "bloom": {"query_key_value"},
    "opt": {"q_proj", "v_proj"},
    "llama": {"q_proj", "v_proj"},
}
# A ChatML template for the Llama checkpoint: a model that ships its own template.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _tokenizer_for(arch: str):
    from tokenizers import processors

    from bloomkit.models import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    if arch in ("opt", "llama"):
        bos = tokenizer.bos_token
        tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A",
            pair=f"{bos} $A {bos} $B",
            special_tokens=[(bos, tokenizer.bos_token_id)],
        )
    if arch == "llama":
        tokenizer.pad_token = None
        tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def _config_for(arch: str, tokenizer):
    from transformers import BloomConfig, LlamaConfig, OPTConfig

    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    if arch == "bloom":
        # bigscience/bloom-560m's config.json with its shape scaled down (24 layers -> 2,
        # hidden 1024 -> 256, 16 heads -> 4: the same 64-wide heads), every other field as
        # there: ALiBi (no position embeddings), tied embeddings, and an embedding matrix
        # larger than the tokenizer (560m: 250,880 rows for 250,680 tokens; here 640 for 512).
        return BloomConfig(
            vocab_size=len(tokenizer) + 128,
            hidden_size=256,
            n_layer=2,
            n_head=4,
            apply_residual_connection_post_layernorm=False,
            attention_dropout=0.0,
            hidden_dropout=0.0,
            attention_softmax_in_fp32=True,
            bias_dropout_fusion=True,
            masked_softmax_fusion=True,
            layer_norm_epsilon=1e-5,
            initializer_range=0.02,
            offset_alibi=100,
            pretraining_tp=1,
            slow_but_exact=False,
            skip_bias_add=True,
            skip_bias_add_qkv=False,
            seq_length=2048,
            unk_token_id=tokenizer.unk_token_id,
            pad_token_id=tokenizer.pad_token_id,
            tie_word_embeddings=True,
            **ids,
        )
    if arch == "opt":
        # facebook/opt-125m's layout, smaller: learned positions, pre-LayerNorm, ReLU MLP.
        return OPTConfig(
            vocab_size=len(tokenizer),
            hidden_size=64,
            word_embed_proj_dim=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            ffn_dim=256,
            max_position_embeddings=256,
            do_layer_norm_before=True,
            dropout=0.0,
            attention_dropout=0.0,
            pad_token_id=tokenizer.pad_token_id,
            **ids,
        )
    # Llama's layout, smaller: RoPE, RMSNorm, SwiGLU, grouped-query attention, untied head.
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=176,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        **ids,
    )


def make_checkpoint(arch: str, directory: Path) -> Path:
    """A saved `arch` model and tokenizer in `directory`, with fixed initial weights."""
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = _tokenizer_for(arch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(_config_for(arch, tokenizer))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session", params=ARCHITECTURES)
def checkpoint(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path]:
    """(architecture, directory) of a local checkpoint, once per architecture."""
    arch = request.param
    return arch, make_checkpoint(arch, tmp_path_factory.mktemp(f"ckpt-{arch}"))
