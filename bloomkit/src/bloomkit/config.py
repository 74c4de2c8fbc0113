"""The arguments of every subcommand, as dataclasses, and how argparse is built from them.

Each field carries its help text; `__post_init__` rejects impossible values with a `UsageError`.
Values come from the dataclass defaults, then a `--config` file (YAML or JSON), then the
command line (litgpt's order). The resolved dataclass is what a run writes beside its output.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bloomkit.errors import UsageError

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
DIST_BACKENDS = ("auto", "nccl", "gloo")
DEFAULT_MODEL = "bigscience/bloom-560m"
TINY = "tiny"


def arg(default: Any = dataclasses.MISSING, help: str = "", **argparse_kwargs: Any) -> Any:
    """A dataclass field with its command-line help (and extra argparse settings)."""
    metadata = {"help": help, "argparse": argparse_kwargs}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise UsageError(message)


@dataclass
class FinetuneArgs:
    """Causal-LM fine-tuning (full or LoRA) of a Hugging Face model on a local dataset."""

    data: str = arg(
        help="JSONL ({'text'}, {'prompt','response'} or chat {'messages'}), text file, "
        "or dataset name"
    )
    output: Path = arg(help="output directory (written beside it, renamed into place at the end)")
    model: str = arg(DEFAULT_MODEL, help="model id, local directory, or 'tiny' (built in)")
    max_steps: int = arg(-1, help="optimizer steps; -1 runs --epochs over the data")
    epochs: float = arg(1.0, help="passes over the data when --max-steps is -1")
    batch_size: int = arg(8, help="sequences per device per step")
    grad_accum: int = arg(1, help="gradient accumulation steps")
    seq_len: int = arg(512, help="tokens per training sequence (texts are packed)")
    lr: float | None = arg(
        None, help="peak learning rate (default: 5e-5 full, 2e-4 LoRA, 3e-3 tiny)"
    )
    warmup_steps: int = arg(0, help="linear warmup steps")
    weight_decay: float = arg(0.0, help="AdamW weight decay")
    lr_scheduler: str = arg("cosine", help="learning-rate schedule (transformers' names)")
    precision: str = arg(
        "auto", help="auto: bf16 where supported, else fp16 on GPU, fp32 on CPU", choices=PRECISIONS
    )
    lora: bool = arg(False, help="train a LoRA adapter (peft) instead of every weight")
    lora_r: int = arg(16, help="LoRA rank")
    lora_alpha: int = arg(32, help="LoRA alpha")
    lora_dropout: float = arg(0.05, help="LoRA dropout")
    lora_target: list[str] = arg(
        [], help="modules to adapt, or all-linear (default: peft's choice for the model)", nargs="+"
    )
    merge: bool = arg(False, help="with --lora: merge the adapter and save a full model")
    chat_template: str | None = arg(
        None,
        help="for chat data: 'default' (bloomkit's Zephyr-style template) or a Jinja file; "
        "saved with the output's tokenizer (default: the tokenizer's own)",
    )
    gradient_checkpointing: bool = arg(False, help="trade compute for activation memory")
    save_steps: int = arg(500, help="checkpoint every N steps (for --resume)")
    save_total_limit: int = arg(2, help="checkpoints kept")
    logging_steps: int = arg(10, help="log the loss every N steps")
    resume: str | None = arg(
        None,
        help="resume from the latest checkpoint, or from CHECKPOINT",
        nargs="?",
        const="latest",
        metavar="CHECKPOINT",
    )
    overwrite: bool = arg(False, help="replace an existing output directory")
    seed: int = arg(42, help="random seed")
    split: str = arg("train", help="split, when --data is a dataset name")
    progress: bool = arg(True, help="show a progress bar")
    trust_remote_code: bool = arg(False, help="allow model code from the Hub")

    def __post_init__(self) -> None:
        _check(bool(self.data), "--data is required")
        _check(self.output is not None and str(self.output) != "", "--output is required")
        self.output = Path(self.output)
        _check(self.max_steps == -1 or self.max_steps > 0, "--max-steps must be positive or -1")
        _check(self.epochs > 0, "--epochs must be positive")
        _check(self.batch_size >= 1, "--batch-size must be at least 1")
        _check(self.grad_accum >= 1, "--grad-accum must be at least 1")
        _check(self.seq_len >= 8, "--seq-len must be at least 8")
        _check(self.lr is None or self.lr > 0, "--lr must be positive")
        _check(self.warmup_steps >= 0, "--warmup-steps must not be negative")
        _check(self.precision in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)}")
        _check(self.lora_r >= 1, "--lora-r must be at least 1")
        _check(0 <= self.lora_dropout < 1, "--lora-dropout must be in [0, 1)")
        _check(not self.merge or self.lora, "--merge needs --lora")
        _check(self.save_steps >= 1, "--save-steps must be at least 1")
        _check(self.save_total_limit >= 1, "--save-total-limit must be at least 1")
        _check(self.logging_steps >= 1, "--logging-steps must be at least 1")

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        if self.model == TINY:
            return 3e-3
        return 2e-4 if self.lora else 5e-5


@dataclass
class GenerateArgs:
    """Text generation from a base model, a fine-tuned output, or a base model + LoRA adapter."""

    prompts: list[str] = arg(
        [], help="prompts ('-' or none: read them from stdin)", nargs="*", positional=True
    )
    model: str = arg(DEFAULT_MODEL, help="model id, 'tiny', or a directory (full model or adapter)")
    base: str | None = arg(None, help="base model for an adapter directory (default: its own)")
    prompts_file: Path | None = arg(None, help="file of prompts: one a line, or JSONL {'prompt'}")
    max_new_tokens: int = arg(64, help="tokens to generate per prompt")
    temperature: float = arg(0.7, help="sampling temperature; 0 means greedy")
    top_p: float = arg(0.9, help="nucleus sampling threshold")
    top_k: int = arg(50, help="sample from the k most likely tokens (0: no limit)")
    repetition_penalty: float = arg(1.0, help="penalty for repeated tokens (1.0: none)")
    batch_size: int = arg(8, help="prompts generated together")
    seed: int | None = arg(None, help="random seed: the same seed gives the same text")
    precision: str = arg("auto", help="auto: bf16 where supported, fp32 on CPU", choices=PRECISIONS)
    json: bool = arg(False, help="print one JSON object a line: {prompt, completion}")
    chat: bool = arg(False, help="each prompt is a user message, through the chat template")
    system: str | None = arg(None, help="with --chat: a system message before each prompt")
    chat_template: str | None = arg(
        None,
        help="with --chat: 'default' (bloomkit's Zephyr-style template) or a Jinja file "
        "(default: the tokenizer's own)",
    )
    stream: bool = arg(True, help="stream tokens as they come (batches of one prompt)")
    trust_remote_code: bool = arg(False, help="allow model code from the Hub")

    def __post_init__(self) -> None:
        _check(bool(self.model), "--model is required")
        _check(self.max_new_tokens >= 1, "--max-new-tokens must be at least 1")
        _check(self.temperature >= 0, "--temperature must not be negative")
        _check(0 < self.top_p <= 1, "--top-p must be in (0, 1]")
        _check(self.top_k >= 0, "--top-k must not be negative")
        _check(self.repetition_penalty > 0, "--repetition-penalty must be positive")
        _check(self.batch_size >= 1, "--batch-size must be at least 1")
        _check(self.precision in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)}")
        _check(self.chat or self.system is None, "--system needs --chat")
        _check(self.chat or self.chat_template is None, "--chat-template needs --chat")
        if self.prompts_file is not None:
            self.prompts_file = Path(self.prompts_file)


@dataclass
class EnvArgs:
    """What a bug report needs: Python, torch, CUDA, driver, GPUs, library versions."""

    json: bool = arg(False, help="print JSON instead of a table")


@dataclass
class SmokeArgs:
    """The acceptance test of a host: env, CUDA, performance, NCCL, the LLM path."""

    json: Path | None = arg(None, help="write the JSON report here ('{rank}' for one per rank)")
    require_gpu: bool = arg(False, help="fail when no usable CUDA device is found")
    model: str = arg(TINY, help="also run the LLM stage on this model (id or directory)")
    quick: bool = arg(False, help="fewer steps and shorter measurements")
    steps: int | None = arg(None, help="training steps in the LLM stages (default 30, quick 12)")
    batch_size: int = arg(4, help="sequences per step in the LLM stages")
    seq_len: int = arg(64, help="tokens per sequence in the LLM stages")
    lora: bool = arg(False, help="train a LoRA adapter in the --model stage (large models)")
    lr: float | None = arg(None, help="learning rate of the --model stage (1e-4 full, 1e-3 LoRA)")
    gemm_size: int = arg(8192, help="edge of the square bf16 GEMM in the performance stage")
    trust_remote_code: bool = arg(False, help="allow model code from the Hub")
    distributed: bool = arg(
        False,
        help="under torchrun: all-reduce, bus bandwidth and a DDP step across every rank, "
        "and a fleet verdict",
    )
    dist_timeout: int = arg(
        120, help="with --distributed: seconds a rank waits for its peers (joining, collectives)"
    )
    dist_backend: str = arg(
        "auto", help="with --distributed: nccl on GPUs, gloo on CPUs", choices=DIST_BACKENDS
    )
    busbw_mib: int | None = arg(
        None,
        help="with --distributed: all-reduce buffer per rank for the bus bandwidth "
        "(default 1024 MiB on GPUs, 64 on CPUs; --quick 256 / 16)",
    )
    dcgm_diag: int | None = arg(
        None,
        help="also run `dcgmi diag -r LEVEL` (1 quick to 4 hours) on datacenter GPUs; skipped "
        "without dcgmi",
        choices=[1, 2, 3, 4],
    )

    def __post_init__(self) -> None:
        _check(bool(self.model), "--model must not be empty")
        _check(self.dist_timeout >= 1, "--dist-timeout must be at least 1 second")
        _check(
            self.dist_backend in DIST_BACKENDS,
            f"--dist-backend must be one of {', '.join(DIST_BACKENDS)}",
        )
        _check(self.busbw_mib is None or self.busbw_mib >= 1, "--busbw-mib must be at least 1")
        _check(self.steps is None or self.steps >= 2, "--steps must be at least 2")
        _check(self.batch_size >= 1, "--batch-size must be at least 1")
        _check(self.seq_len >= 8, "--seq-len must be at least 8")
        _check(self.gemm_size >= 256, "--gemm-size must be at least 256")
        _check(self.lr is None or self.lr > 0, "--lr must be positive")
        if self.json is not None:
            self.json = Path(self.json)

    @property
    def train_steps(self) -> int:
        if self.steps is not None:
            return self.steps
        return 12 if self.quick else 30


def to_dict(args: Any) -> dict[str, Any]:
    """The resolved arguments, JSON-ready."""
    out = {}
    for f in dataclasses.fields(args):
        value = getattr(args, f.name)
        out[f.name] = str(value) if isinstance(value, Path) else value
    return out


# --- argparse from the dataclasses -----------------------------------------------------------


def _base_type(annotation: Any) -> tuple[type, bool]:
    """(element type, is_list) for str, int, float, bool, Path, X | None, list[X]."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        (annotation,) = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is list:
        return typing.get_args(annotation)[0], True
    return annotation, False


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One option per field; defaults stay out of the namespace so a --config can fill them."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        extra = dict(f.metadata.get("argparse", {}))
        positional = extra.pop("positional", False)
        kind, is_list = _base_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        # Required fields are checked after a --config file had its say, in build_args.
        shown = "" if required or default in (None, [], False) else f" (default: {default})"
        kwargs: dict[str, Any] = {"help": f.metadata.get("help", "") + shown, "dest": f.name}
        kwargs["default"] = argparse.SUPPRESS
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction if default else "store_true"
        else:
            kwargs["type"] = kind
            if is_list:
                kwargs.setdefault("nargs", "+")
        kwargs.update(extra)
        if positional:
            kwargs.pop("dest")
            parser.add_argument(f.name, **kwargs)
        else:
            parser.add_argument("--" + f.name.replace("_", "-"), **kwargs)
    parser.add_argument("--config", type=Path, help="YAML or JSON file of these options")


def load_config_file(path: Path, cls: type) -> dict[str, Any]:
    """Options from a YAML/JSON file; keys may use dashes or underscores."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read config file '{path}': {exc.strerror or exc}") from exc
    try:
        if str(path).endswith(".json"):
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # json.JSONDecodeError, yaml.YAMLError
        raise UsageError(f"config file '{path}' is not valid: {exc}") from exc
    data = data or {}
    if not isinstance(data, dict):
        raise UsageError(f"config file '{path}' must hold a mapping of option: value")
    names = {f.name for f in dataclasses.fields(cls)}
    out = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in names:
            raise UsageError(f"config file '{path}': unknown option '{key}'")
        out[name] = value
    return out


def build_args(cls: type, namespace: argparse.Namespace) -> Any:
    """Defaults < --config file < command line, then the dataclass's own checks."""
    given = {
        f.name: getattr(namespace, f.name)
        for f in dataclasses.fields(cls)
        if hasattr(namespace, f.name)
    }
    from_file = (
        load_config_file(namespace.config, cls) if getattr(namespace, "config", None) else {}
    )
    values = {**from_file, **given}
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if f.name not in values
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise UsageError("missing " + ", ".join("--" + m.replace("_", "-") for m in missing))
    try:
        return cls(**values)
    except TypeError as exc:
        raise UsageError(str(exc)) from exc
