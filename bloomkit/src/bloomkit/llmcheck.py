"""The LLM path, end to end, on one device: tokenizer, model, N training steps with the loss
going down, save, reload, identical weights and logits after reload, generate.

Training repeats one fixed batch of TINY_CORPUS (fixed seeds), so the loss must fall: the tiny
model goes from ln(512) = 6.2 to about 0.1 in 30 steps at lr 1e-2; a pretrained model
memorises the batch at 1e-4. Used by the smoke `llm` stages; nothing here prints.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bloomkit.config import TINY
from bloomkit.errors import BloomkitError
from bloomkit.models import TINY_CORPUS, load_model, tiny_cpu_threads

log = logging.getLogger(__name__)

# The last loss must be below this fraction of the first. The batch is fixed and there is no
# dropout, so a broken backward or optimizer leaves the loss exactly where it was; an adapter on
# a frozen model moves it less than full training does (the tiny model: 6.34 -> 6.06 vs 0.09).
LOSS_DROP = {"full": 0.9, "lora": 0.99}
LOGITS_ATOL = 1e-5
GENERATE_TOKENS = 16


class CheckFailed(BloomkitError):
    """The path ran but a check did not hold; `figures` holds what was measured until then."""

    def __init__(self, message: str, figures: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.figures = figures or {}


def default_lr(model_name: str, lora: bool) -> float:
    if model_name == TINY:
        return 1e-2
    return 1e-3 if lora else 1e-4


def _batch(tokenizer: Any, batch_size: int, seq_len: int) -> torch.Tensor:
    ids = tokenizer(TINY_CORPUS, add_special_tokens=False)["input_ids"]
    if not ids:
        raise CheckFailed("the tokenizer turned the sample text into no tokens")
    need = batch_size * seq_len
    repeated = (ids * (need // len(ids) + 1))[:need]
    return torch.tensor(repeated, dtype=torch.long).view(batch_size, seq_len)


def _autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _with_lora(model: Any) -> Any:
    from peft import LoraConfig, get_peft_model

    # Every linear layer: works for any architecture, and adapts enough to move the loss.
    return get_peft_model(
        model, LoraConfig(task_type="CAUSAL_LM", r=8, lora_alpha=16, target_modules="all-linear")
    )


def _reload(
    saved: Path, model_name: str, lora: bool, dtype: torch.dtype | None, trust_remote_code: bool
) -> Any:
    from transformers import AutoModelForCausalLM

    if lora:
        from peft import PeftModel

        base = load_model(model_name, dtype=dtype, trust_remote_code=trust_remote_code).model
        return PeftModel.from_pretrained(base, str(saved))
    return AutoModelForCausalLM.from_pretrained(str(saved), trust_remote_code=trust_remote_code)


def run_llm_path(model_name: str, device: torch.device, **kwargs: Any) -> dict[str, Any]:
    """Figures of one pass; raises CheckFailed (figures attached) when a check does not hold.
    Keyword arguments: steps, batch_size, seq_len, lora, lr, trust_remote_code, workdir."""
    with tiny_cpu_threads(device, model_name):
        return _run(model_name, device, **kwargs)


def _run(
    model_name: str,
    device: torch.device,
    *,
    steps: int,
    batch_size: int,
    seq_len: int,
    lora: bool = False,
    lr: float | None = None,
    trust_remote_code: bool = False,
    workdir: Path | None = None,
) -> dict[str, Any]:
    figures: dict[str, Any] = {"model": model_name, "device": str(device), "lora": lora}
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 3)
        clock = now

    # A frozen base can live in bf16 on a GPU; full training keeps fp32 weights under autocast.
    base_dtype = torch.bfloat16 if lora and device.type == "cuda" else None
    loaded = load_model(model_name, dtype=base_dtype, trust_remote_code=trust_remote_code)
    tokenizer, model = loaded.tokenizer, loaded.model
    lap("load_s")
    if model_name == TINY:
        # Byte-level BPE must give the text back exactly.
        ids = tokenizer(TINY_CORPUS, add_special_tokens=False)["input_ids"]
        figures["tokenizer_roundtrip"] = tokenizer.decode(ids) == TINY_CORPUS
        if not figures["tokenizer_roundtrip"]:
            raise CheckFailed("tokenizer: decode(encode(text)) != text", figures)
    if lora:
        model = _with_lora(model)
    model.to(device)
    batch = _batch(tokenizer, batch_size, seq_len).to(device)
    figures["parameters"] = sum(p.numel() for p in model.parameters())
    lap("prepare_s")

    torch.manual_seed(0)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    lr = lr if lr is not None else default_lr(model_name, lora)
    figures["lr"] = lr
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0)
    losses = []
    for _ in range(steps):
        with _autocast(device):
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    del optimizer
    lap("train_s")
    figures.update(
        steps=steps,
        loss_first=round(losses[0], 4),
        loss_last=round(losses[-1], 4),
        tokens_per_s=round(steps * batch.numel() / timings["train_s"], 1),
    )
    if not (losses[-1] < losses[0] * LOSS_DROP["lora" if lora else "full"]):
        raise CheckFailed(
            f"loss did not go down: {losses[0]:.3f} -> {losses[-1]:.3f} in {steps} steps", figures
        )

    model.eval()
    probe = batch[:1]
    with torch.no_grad():
        logits_before = model(input_ids=probe).logits.float()
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bloomkit-")))
        saved = Path(tempfile.mkdtemp(prefix="llm-", dir=workdir))
        # LoRA: no embedding check against the Hub (bloomkit never resizes embeddings).
        model.save_pretrained(str(saved), **({"save_embedding_layers": False} if lora else {}))
        tokenizer.save_pretrained(str(saved))
        figures["saved_mb"] = round(sum(f.stat().st_size for f in saved.rglob("*")) / 1e6, 2)
        lap("save_s")
        reloaded = _reload(saved, model_name, lora, base_dtype, trust_remote_code).to(device)
        reloaded.eval()
        lap("reload_s")

    before = model.state_dict()
    after = reloaded.state_dict()
    differing = [k for k, v in before.items() if k in after and not torch.equal(v, after[k])]
    with torch.no_grad():
        logits_after = reloaded(input_ids=probe).logits.float()
    max_diff = float((logits_after - logits_before).abs().max())
    figures.update(weights_identical=not differing, logits_max_abs_diff=max_diff)
    if differing:
        raise CheckFailed(f"weights differ after reload: {', '.join(differing[:3])}", figures)
    if not max_diff <= LOGITS_ATOL:
        raise CheckFailed(f"logits differ after reload by up to {max_diff:.2e}", figures)
    lap("compare_s")

    prompt = probe[:, :8]
    with torch.no_grad():
        out = reloaded.generate(
            input_ids=prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=GENERATE_TOKENS,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
    new_tokens = out[0, prompt.shape[1] :]
    text = tokenizer.decode(new_tokens, skip_special_tokens=True)
    figures.update(generated_tokens=int(new_tokens.numel()), generated=text)
    if new_tokens.numel() == 0:
        raise CheckFailed("generate produced no tokens", figures)
    # After training on the corpus, greedy decoding should continue it (informative only).
    expected = tokenizer.decode(probe[0, 8 : 8 + new_tokens.numel()], skip_special_tokens=True)
    figures["continues_training_text"] = text == expected
    lap("generate_s")
    figures["timings"] = timings
    del model, reloaded
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return figures
