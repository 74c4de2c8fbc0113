"""The ddp stage: a DDP fine-tune step of the tiny model, a different batch per rank.

Afterwards every rank holds bitwise-identical weights, equal to a one-process reference on the
global batch (the gradients really were averaged).
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
import torch.distributed as dist

from bloomkit.group import collective, group_state
from bloomkit.report import StageResult
from bloomkit.stages import Fail, SmokeContext

DDP_STEPS = 3
DDP_LR = 0.5
DDP_REFERENCE_MAX_WORLD = 64  # the one-process reference runs every rank's batch
DDP_WEIGHTS_ATOL = 1e-4  # DDP vs the reference: only the summation order differs


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 of every parameter's bytes, in order: equal digests, bitwise-equal weights."""
    digest = hashlib.sha256()
    for name, param in model.named_parameters():
        digest.update(name.encode())
        digest.update(param.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def rank_batch(ids: list[int], rank: int, batch_size: int, seq_len: int) -> torch.Tensor:
    """A different window of the corpus per rank, the same on every host."""
    need = batch_size * seq_len
    start = (rank * 17) % len(ids)
    repeated = ids * (need // len(ids) + 2)
    return torch.tensor(repeated[start : start + need], dtype=torch.long).view(batch_size, seq_len)


def _ddp(ctx: SmokeContext, result: StageResult) -> None:
    from torch.nn.parallel import DistributedDataParallel

    from bloomkit.models import (
        TINY_CORPUS,
        build_tiny_model,
        build_tiny_tokenizer,
        tiny_cpu_threads,
    )

    state = group_state(ctx)
    device, n = state.device, ctx.world_size
    tokenizer = build_tiny_tokenizer()
    ids = tokenizer(TINY_CORPUS, add_special_tokens=False)["input_ids"]
    batches = [rank_batch(ids, r, ctx.args.batch_size, ctx.args.seq_len) for r in range(n)]
    with tiny_cpu_threads(device, "tiny"):
        model = build_tiny_model(tokenizer)
        initial = weights_digest(model)
        model.to(device).train()
        ddp = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
        optimizer = torch.optim.SGD(ddp.parameters(), lr=DDP_LR)
        mine = batches[ctx.rank].to(device)
        losses = []
        for _ in range(DDP_STEPS):
            loss = ddp(input_ids=mine, labels=mine).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(round(float(loss.detach()), 4))
        final = weights_digest(model)
        reference_diff = None
        if n <= DDP_REFERENCE_MAX_WORLD:
            # One process, the global batch: the mean of the ranks' losses, as DDP averages.
            reference = build_tiny_model(tokenizer).to(device).train()
            ref_optimizer = torch.optim.SGD(reference.parameters(), lr=DDP_LR)
            for _ in range(DDP_STEPS):
                total = sum(
                    reference(input_ids=b.to(device), labels=b.to(device)).loss for b in batches
                )
                (total / n).backward()
                ref_optimizer.step()
                ref_optimizer.zero_grad(set_to_none=True)
            reference_diff = max(
                float((a.detach() - b.detach()).abs().max())
                for a, b in zip(model.parameters(), reference.parameters(), strict=True)
            )
    gathered: list[Any] = [None] * n
    dist.all_gather_object(gathered, {"initial": initial, "final": final})
    differing = [r for r, g in enumerate(gathered) if g["final"] != gathered[0]["final"]]
    result.figures = {
        "steps": DDP_STEPS,
        "losses": losses,
        "weights_sha256": final,
        "identical_across_ranks": not differing,
        "same_initial_weights": len({g["initial"] for g in gathered}) == 1,
        "max_diff_vs_reference": reference_diff,
    }
    if differing:
        hosts = ", ".join(f"rank {r} ({state.roster[r]['host']})" for r in differing)
        raise Fail(f"after {DDP_STEPS} DDP steps the weights differ from rank 0's on {hosts}")
    if final == initial:
        raise Fail(f"the weights did not change in {DDP_STEPS} DDP steps")
    if reference_diff is not None and not reference_diff <= DDP_WEIGHTS_ATOL:
        raise Fail(
            f"DDP weights differ from the one-process reference by {reference_diff:.2e}: "
            "the gradients were not averaged across ranks"
        )
    check = (
        f", within {reference_diff:.1e} of a one-process run on the global batch"
        if reference_diff is not None
        else ""
    )
    result.reason = (
        f"{DDP_STEPS} DDP steps of the tiny model, a different batch per rank: identical "
        f"weights on all {n} rank(s){check}"
    )


stage_ddp = collective(_ddp)
