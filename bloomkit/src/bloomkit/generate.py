"""`bloomkit generate`: completions from a base model, a fine-tuned output, or base + adapter.

Prompts come from the arguments, a file, or stdin (one a line), and run in batches (left
padding). A batch of one streams its tokens to stdout as they come; with --seed, sampling gives
the same text every time. With --chat each prompt becomes a user turn (after --system, if
given) rendered by the model's chat template, ending where the assistant's answer begins.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import torch

from bloomkit.chat import prompt_text, use_template
from bloomkit.config import GenerateArgs
from bloomkit.errors import BloomkitError, GPUOutOfMemory, UsageError
from bloomkit.models import DTYPES, default_device, load_model, resolve_precision


def _prompts_from_lines(lines: list[str], where: str) -> list[str]:
    prompts = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BloomkitError(f"{where}:{number}: not valid JSON ({exc.msg})") from exc
            prompt = obj.get("prompt", obj.get("text")) if isinstance(obj, dict) else None
            if not isinstance(prompt, str):
                raise BloomkitError(f'{where}:{number}: expected {{"prompt": ...}}')
            prompts.append(prompt)
        else:
            prompts.append(line.rstrip("\n"))
    return prompts


def read_prompts(args: GenerateArgs, stdin: IO[str] | None = None) -> list[str]:
    """Arguments, else --prompts-file, else stdin ('-' forces stdin)."""
    stdin = stdin if stdin is not None else sys.stdin
    if args.prompts and args.prompts != ["-"]:
        return list(args.prompts)
    if args.prompts_file is not None:
        path = Path(args.prompts_file)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError as exc:
            # A file the command line named is not there: bad usage (exit 2).
            raise UsageError(f"prompts file '{path}' not found") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise BloomkitError(f"cannot read prompts file '{path}': {exc}") from exc
        prompts = _prompts_from_lines(lines, str(path))
        where = f"prompts file '{path}'"
    else:
        if args.prompts != ["-"] and stdin.isatty():
            raise UsageError("no prompts: pass them as arguments, with --prompts-file, or on stdin")
        prompts = _prompts_from_lines(stdin.read().splitlines(), "stdin")
        where = "stdin"
    if not prompts:
        raise BloomkitError(f"no prompts in {where}")
    return prompts


def _batches(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def generate(
    args: GenerateArgs, out: IO[str] | None = None, stdin: IO[str] | None = None
) -> list[dict[str, str]]:
    """Generate for every prompt, print as it goes; returns [{prompt, completion}]."""
    from transformers import TextStreamer

    out = out if out is not None else sys.stdout
    prompts = read_prompts(args, stdin)
    device = default_device()
    precision = resolve_precision(args.precision, device)
    loaded = load_model(
        args.model,
        dtype=DTYPES[precision],
        base=args.base,
        trust_remote_code=args.trust_remote_code,
    )
    model, tokenizer = loaded.model.to(device).eval(), loaded.tokenizer
    tokenizer.padding_side = "left"  # decoder-only: new tokens follow the prompt directly
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if args.chat:
        use_template(tokenizer, args.chat_template, args.model)

    class Streamer(TextStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            out.write(text + ("\n" if stream_end else ""))
            out.flush()

    options: dict[str, Any] = {
        "max_new_tokens": args.max_new_tokens,
        "pad_token_id": tokenizer.pad_token_id,
        "repetition_penalty": args.repetition_penalty,
        "do_sample": args.temperature > 0,
    }
    if args.temperature > 0:
        options.update(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k)
    else:
        options.update(temperature=None, top_p=None, top_k=None)
    results: list[dict[str, str]] = []
    for batch in _batches(prompts, args.batch_size):
        if args.seed is not None:
            # Per batch, so a prompt's text does not depend on the batches before it.
            torch.manual_seed(args.seed)
        # A chat template writes the special tokens it wants (a BOS, say) into the text itself.
        texts = [prompt_text(tokenizer, p, args.system) for p in batch] if args.chat else batch
        inputs = tokenizer(
            texts, return_tensors="pt", padding=True, add_special_tokens=not args.chat
        ).to(device)
        stream = args.stream and len(batch) == 1 and not args.json
        if stream and results:
            out.write("\n")  # a blank line between completions
        try:
            with torch.no_grad():
                output = model.generate(
                    **inputs,
                    **options,
                    streamer=Streamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
                    if stream
                    else None,
                )
        except torch.OutOfMemoryError as exc:
            raise GPUOutOfMemory(
                "generate",
                f"lower --batch-size (now {args.batch_size}) or --max-new-tokens "
                f"(now {args.max_new_tokens})",
            ) from exc
        completions = tokenizer.batch_decode(
            output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True
        )
        for prompt, completion in zip(batch, completions, strict=True):
            if args.json:
                out.write(json.dumps({"prompt": prompt, "completion": completion}) + "\n")
            elif not stream:
                out.write(("\n" if results else "") + completion + "\n")
            results.append({"prompt": prompt, "completion": completion})
        out.flush()
    return results
