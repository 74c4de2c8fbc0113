"""`bloomkit finetune`: causal-LM fine-tuning on the HF Trainer (accelerate underneath).

The same command runs on one CPU, one GPU, or many under `torchrun` / `accelerate launch`.
Everything is written to `OUTPUT.partial` beside the output (checkpoints included: that is what
`--resume` continues after a crash) and renamed to OUTPUT only when the run has finished, so
OUTPUT is either absent or complete.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch

from bloomkit import __version__, peaks
from bloomkit.chat import use_template
from bloomkit.config import FinetuneArgs, to_dict
from bloomkit.data import check_source, iter_examples, pack
from bloomkit.errors import BloomkitError, GPUOutOfMemory, UsageError
from bloomkit.models import (
    DTYPES,
    count_parameters,
    default_device,
    load_model,
    load_tokenizer,
    resolve_precision,
    tiny_cpu_threads,
)
from bloomkit.paths import check_output_dir

log = logging.getLogger(__name__)

CONFIG_FILE = "bloomkit_config.json"
PARTIAL_SUFFIX = ".partial"


def partial_dir(output: Path) -> Path:
    return output.with_name(output.name + PARTIAL_SUFFIX)


def latest_checkpoint(directory: Path) -> Path | None:
    """The highest-numbered checkpoint-N in `directory` that has its trainer state."""
    found = []
    for path in directory.glob("checkpoint-*"):
        step = path.name.removeprefix("checkpoint-")
        if step.isdigit() and (path / "trainer_state.json").is_file():
            found.append((int(step), path))
    return max(found)[1] if found else None


def _prepare_dirs(args: FinetuneArgs, is_main: bool) -> tuple[Path, Path, Path | None]:
    """(final, partial, checkpoint to resume from) after checking what is already there."""
    final = args.output.expanduser().resolve()
    partial = partial_dir(final)
    if args.resume is None:
        if final.exists() and not args.overwrite:
            raise UsageError(
                f"output '{final}' exists: --overwrite replaces it, --resume continues it"
            )
        if partial.exists():
            if not args.overwrite:
                raise UsageError(
                    f"an unfinished run is in '{partial}': --resume continues it, "
                    "--overwrite starts over"
                )
            if is_main:
                shutil.rmtree(partial)
        return final, partial, None
    if args.resume != "latest":
        checkpoint = Path(args.resume).expanduser().resolve()
        if not (checkpoint / "trainer_state.json").is_file():
            raise UsageError(
                f"--resume: '{checkpoint}' is not a checkpoint (no trainer_state.json)"
            )
        return final, partial, checkpoint
    checkpoint = latest_checkpoint(partial) if partial.is_dir() else None
    if checkpoint is None and final.is_dir() and latest_checkpoint(final) is not None:
        # Continue a finished run (e.g. with more --max-steps) without touching it until the end.
        if is_main:
            if partial.exists():
                shutil.rmtree(partial)
            shutil.copytree(final, partial)
        checkpoint = latest_checkpoint(final)
        assert checkpoint is not None
        checkpoint = partial / checkpoint.name
    if checkpoint is None:
        raise UsageError(f"--resume: no checkpoint in '{partial}' or '{final}'")
    return final, partial, checkpoint


def train_flops_per_token(model: Any, lora: bool, seq_len: int) -> float:
    """Training FLOPs per token: 6N (4N with frozen weights: no weight gradients) plus
    12 * layers * hidden * seq_len for attention (PaLM, appendix B)."""
    config = model.config
    params = sum(p.numel() for p in model.parameters())
    layers = getattr(config, "num_hidden_layers", 0) or 0
    hidden = getattr(config, "hidden_size", 0) or 0
    return (4 if lora else 6) * params + 12 * layers * hidden * seq_len


def model_flops_utilisation(
    flops_per_token: float, tokens_per_s: float, device: torch.device, world_size: int
) -> float | None:
    """Achieved model FLOP/s over the datasheet bf16 peak of every GPU; None on a CPU."""
    if device.type != "cuda":
        return None
    peak = peaks.lookup(torch.cuda.get_device_name(device))
    if peak is None:
        return None
    return round(flops_per_token * tokens_per_s / (peak.bf16_tflops * 1e12 * world_size), 4)


def _swap_into_place(partial: Path, final: Path) -> None:
    """partial -> final; an existing final (--overwrite, --resume) goes only after."""
    old = None
    if final.exists():
        old = final.with_name(f"{final.name}.old-{os.getpid()}")
        final.rename(old)
    partial.rename(final)
    if old is not None:
        shutil.rmtree(old)


def finetune(args: FinetuneArgs, callbacks: list[Any] | None = None) -> dict[str, Any]:
    """Train, save into OUTPUT.partial, rename to OUTPUT; returns the run's summary."""
    # Cheap checks first: a missing data file or a bad output directory fails before the heavy
    # imports, and no data error leaves anything on disk: the data is read, checked and packed
    # before the output directories are touched. A file where the output directory (or its
    # OUTPUT.partial) goes would otherwise fail only at the end, after the whole run.
    final = args.output.expanduser().resolve()
    check_output_dir(final, "--output")
    check_output_dir(partial_dir(final), "--output's work directory")
    check_source(args.data)

    import transformers
    from accelerate import PartialState
    from transformers import Trainer, TrainerCallback, TrainingArguments, default_data_collator
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    transformers.utils.logging.disable_progress_bar()  # weight-shard bars; Trainer's stays
    tokenizer = load_tokenizer(args.model, trust_remote_code=args.trust_remote_code)
    # Set on the tokenizer that is saved with the output: generate --chat on the output then
    # renders prompts exactly as the training data was rendered. Without --chat-template the
    # tokenizer's own is checked when the first conversation in the data needs it.
    if args.chat_template is not None:
        use_template(tokenizer, args.chat_template, args.model)
        on_chat = None
    else:
        on_chat = functools.partial(use_template, tokenizer, None, args.model)
    dataset = pack(iter_examples(args.data, args.split), tokenizer, args.seq_len, on_chat=on_chat)

    is_main = int(os.environ.get("RANK", "0")) == 0
    final, partial, checkpoint = _prepare_dirs(args, is_main)
    # On CPUs accelerate sees torchrun's ranks only when told it runs on CPUs (gloo); without it
    # every CPU rank believed it was the main process and wrote OUTPUT.
    state = PartialState(cpu=default_device().type == "cpu")
    state.wait_for_everyone()  # rank 0 has cleared or copied OUTPUT.partial
    is_main = state.is_main_process

    device = default_device()
    precision = resolve_precision(args.precision, device)
    # Full fine-tuning keeps fp32 master weights under autocast; LoRA freezes the base in the
    # compute dtype and trains fp32 adapters.
    load_dtype = DTYPES[precision] if args.lora and precision != "fp32" else None
    loaded = load_model(args.model, dtype=load_dtype, trust_remote_code=args.trust_remote_code)
    model = loaded.model
    if args.lora:
        model = _with_lora(model, args)
    total_params = count_parameters(model)
    trainable = count_parameters(model, trainable_only=True)
    if is_main:
        log.info(
            "%s: %.1fM parameters, %.2fM trainable, %s on %s",
            args.model,
            total_params / 1e6,
            trainable / 1e6,
            precision,
            device,
        )

    training_args = TrainingArguments(
        output_dir=str(partial),
        max_steps=args.max_steps,
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=args.grad_accum,
        learning_rate=args.learning_rate,
        warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay,
        lr_scheduler_type=args.lr_scheduler,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        **_checkpointing_option(TrainingArguments, args.gradient_checkpointing),
        logging_steps=args.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=args.save_steps,
        save_total_limit=args.save_total_limit,
        seed=args.seed,
        report_to="none",
        disable_tqdm=not args.progress,
        remove_unused_columns=False,
        use_cpu=device.type == "cpu",
        dataloader_num_workers=0,
        include_num_input_tokens_seen=True,  # counted, not assumed: the last batch may be short
    )

    class Recorder(TrainerCallback):
        """The logged losses and the wall time of this run's own steps."""

        def __init__(self) -> None:
            self.losses: list[tuple[int, float]] = []
            self.steps = 0
            self.tokens_before = 0
            self.started = 0.0
            self.seconds = 0.0

        def on_train_begin(self, _args: Any, state: Any, *_: Any, **__: Any) -> None:
            self.started = time.perf_counter()
            self.tokens_before = state.num_input_tokens_seen

        def on_step_end(self, *_: Any, **__: Any) -> None:
            self.steps += 1

        def on_log(self, _args: Any, state: Any, _control: Any, logs: Any = None, **__: Any):
            if logs and "loss" in logs:
                self.losses.append((state.global_step, float(logs["loss"])))
            if logs and state.is_world_process_zero and not args.progress:
                log.info("%s", _format_logs(state.global_step, logs))

        def on_train_end(self, *_: Any, **__: Any) -> None:
            self.seconds = time.perf_counter() - self.started

    class Bar(ProgressCallback):
        """Trainer's progress bar, with the log lines on stderr beside it (stdout stays for
        the result line)."""

        def on_log(self, _args: Any, state: Any, _control: Any, logs: Any = None, **__: Any):
            if logs and state.is_world_process_zero and self.training_bar is not None:
                self.training_bar.write(_format_logs(state.global_step, logs), file=sys.stderr)

    recorder = Recorder()
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        data_collator=default_data_collator,
        processing_class=tokenizer,
        callbacks=[recorder, *(callbacks or [])],
    )
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    if args.progress:
        trainer.add_callback(Bar)
    if checkpoint is not None and is_main:
        log.info("resuming from %s", checkpoint)
    try:
        with tiny_cpu_threads(device, args.model):
            result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        state.wait_for_everyone()
        _save(trainer, tokenizer, partial, args, is_main)
    except torch.OutOfMemoryError as exc:
        raise GPUOutOfMemory(
            "finetune",
            f"lower --batch-size (now {args.batch_size}) or --seq-len (now {args.seq_len}), "
            "raise --grad-accum to keep the effective batch, or add --gradient-checkpointing "
            "or --lora",
        ) from exc

    # GPUs that trained: one per process under torchrun; all of them under DataParallel.
    world = training_args.world_size * max(1, training_args.n_gpu)
    tokens = trainer.state.num_input_tokens_seen - recorder.tokens_before  # all ranks
    tokens_per_s = tokens / recorder.seconds if recorder.seconds > 0 else 0.0
    summary = {
        "output": str(final),
        "global_step": trainer.state.global_step,
        "steps_this_run": recorder.steps,
        "tokens_this_run": tokens,
        "train_loss": float(result.training_loss),
        "first_loss": recorder.losses[0][1] if recorder.losses else None,
        "last_loss": recorder.losses[-1][1] if recorder.losses else None,
        "losses": recorder.losses,
        "resumed_from": str(checkpoint) if checkpoint else None,
        "seconds": round(recorder.seconds, 3),
        "tokens_per_s": round(tokens_per_s, 1),
        "mfu": model_flops_utilisation(
            train_flops_per_token(model, args.lora, args.seq_len), tokens_per_s, device, world
        ),
    }
    if is_main:
        record = {
            "bloomkit_version": __version__,
            "command": "finetune",
            "args": to_dict(args),
            "resolved": {
                "learning_rate": args.learning_rate,
                "precision": precision,
                "device": str(device),
                "world_size": training_args.world_size,
                "devices": world,
                "base_model": loaded.base or args.model,
                "parameters": total_params,
                "trainable_parameters": trainable,
                "saved": "merged model" if args.merge else "adapter" if args.lora else "model",
            },
            "data": {
                "examples": dataset.num_examples,
                "tokens": dataset.num_tokens,
                "blocks": len(dataset),
            },
            "result": {k: v for k, v in summary.items() if k != "output"},
            "versions": _versions(),
        }
        (partial / CONFIG_FILE).write_text(json.dumps(record, indent=2) + "\n")
        _swap_into_place(partial, final)
    state.wait_for_everyone()
    return summary


def _format_logs(step: int, logs: dict[str, Any]) -> str:
    shown = ", ".join(
        f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
        for k, v in logs.items()
        if k != "total_flos"
    )
    return f"step {step}: {shown}"


def _checkpointing_option(training_arguments: type, enabled: bool) -> dict[str, bool]:
    """transformers 5 renamed gradient_checkpointing to activation_checkpointing (and warns
    on the old name even when it is False): pass it only when asked, under the current name."""
    if not enabled:
        return {}
    fields = getattr(training_arguments, "__dataclass_fields__", {})
    name = (
        "activation_checkpointing"
        if "activation_checkpointing" in fields
        else "gradient_checkpointing"
    )
    return {name: True}


def _with_lora(model: Any, args: FinetuneArgs) -> Any:
    from peft import LoraConfig, get_peft_model

    def config(targets: Any) -> Any:
        return LoraConfig(
            task_type="CAUSAL_LM",
            r=args.lora_r,
            lora_alpha=args.lora_alpha,
            lora_dropout=args.lora_dropout,
            target_modules=targets,
        )

    targets: Any = args.lora_target or None
    if targets == ["all-linear"]:
        targets = "all-linear"  # peft's keyword, not a module name
    try:
        peft_model = get_peft_model(model, config(targets))
    except ValueError as exc:
        if args.lora_target:
            raise BloomkitError(f"--lora-target: {exc}") from exc
        # peft has no default for this architecture: adapt every linear layer.
        peft_model = get_peft_model(model, config("all-linear"))
    if args.gradient_checkpointing:
        peft_model.enable_input_require_grads()
    # bloomkit never resizes the embeddings, so peft's "auto" check (a Hub request for the base
    # config at every save: minutes of retries on an offline host) has nothing to find.
    peft_model.save_pretrained = functools.partial(
        peft_model.save_pretrained, save_embedding_layers=False
    )
    return peft_model


def _save(trainer: Any, tokenizer: Any, partial: Path, args: FinetuneArgs, is_main: bool) -> None:
    if not args.merge:
        trainer.save_model(str(partial))  # the model, or the adapter, and the tokenizer
        return
    if is_main:
        merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
        merged.save_pretrained(str(partial))
        tokenizer.save_pretrained(str(partial))


def _versions() -> dict[str, str | None]:
    from bloomkit.env import package_versions

    return {"torch": torch.__version__, **package_versions()}
