"""`bloomkit smoke`: the acceptance test of a host, as a list of stages.

The stages of one host: env, dcgm, cuda, gemm, membw, h2d, nccl, llm, llm_model (`STAGES`). The
runner and what a stage is live in bloomkit.stages; `bloomkit smoke --distributed`
(bloomkit.distributed) runs these stages with its own added. To add a stage, append a `Stage`
to `STAGES` or pass your own list to `run_smoke`.

Rank-aware: under torchrun each rank checks its own GPU (LOCAL_RANK); only rank 0 prints and
writes the report, unless the --json path holds '{rank}'.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bloomkit import dcgm, fabric, gpu, peaks
from bloomkit import stages as stages_runner
from bloomkit.config import TINY, SmokeArgs
from bloomkit.paths import check_output_file
from bloomkit.report import FAIL, PASS, SKIP, StageResult, format_summary, write_json
from bloomkit.stages import Fail, Skip, SmokeContext, Stage

log = logging.getLogger(__name__)
GIB = 1024**3
MIB = 1024**2


# --- stages ----------------------------------------------------------------------------------


def stage_env(ctx: SmokeContext, result: StageResult) -> None:
    from bloomkit.env import collect_env

    ctx.env = collect_env()
    torch_info = ctx.env["torch"]
    result.figures = {
        "python": ctx.env["python"]["version"],
        "torch": torch_info["version"],
        "torch_cuda": torch_info["cuda"],
        "driver_version": ctx.env["driver_version"],
        "cuda_driver": ctx.env["cuda_driver"],
        "gpus": len(ctx.env["gpus"]),
    }
    build = f"built for CUDA {torch_info['cuda']}" if torch_info["cuda"] else "CPU-only build"
    result.reason = (
        f"Python {ctx.env['python']['version']}, torch {torch_info['version']} ({build}), "
        f"driver {ctx.env['driver_version'] or '-'}, {len(ctx.env['gpus'])} GPU(s)"
    )


def stage_cuda(ctx: SmokeContext, result: StageResult) -> None:
    from bloomkit.env import cuda_status

    usable, why = cuda_status()
    if not usable:
        message = f"no usable CUDA device: {why}"
        fabric_manager = fabric.diagnosis(why)
        if fabric_manager:  # an HGX board whose NVSwitches nothing has set up
            message = f"{fabric_manager} ({why})"
        present = [g for g in ctx.env.get("gpus", []) if not g.get("visible_to_torch", True)]
        if present:
            message += f" ({len(present)} NVIDIA GPU(s) present)"
        if ctx.args.require_gpu:
            raise Fail(message)
        raise Skip(message)
    indices = [ctx.local_rank] if ctx.world_size > 1 else list(range(torch.cuda.device_count()))
    checked, problems = [], []
    for index in indices:
        try:
            figures = gpu.check_device(index)
        except RuntimeError as exc:  # a CUDA error: no kernel image, ECC, device lost ...
            if isinstance(exc, torch.OutOfMemoryError):
                raise
            figures = {"index": index, "problem": str(exc).strip().splitlines()[0]}
        checked.append(figures)
        if figures.get("problem"):
            problems.append(f"GPU {index} ({figures.get('name', '?')}): {figures['problem']}")
    ctx.devices = [f["index"] for f in checked if not f.get("problem")]
    result.figures = {"gpus": checked, "usable": len(ctx.devices)}
    if problems:
        raise Fail("; ".join(problems))
    names = ", ".join(sorted({f["name"] for f in checked}))
    result.reason = f"{len(checked)} GPU(s) ({names}): kernels match the CPU"


def _need_gpu(ctx: SmokeContext) -> str | None:
    return None if ctx.devices else "needs a usable CUDA device"


def _per_gpu(
    ctx: SmokeContext,
    measure: Callable[[int], dict[str, Any]],
    check: Callable[[dict[str, Any], peaks.Peak | None], str | None],
) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """Measure every usable GPU: (figures, failures, names without a known peak)."""
    rows, failures, unknown = [], [], []
    for index in ctx.devices:
        name = torch.cuda.get_device_name(index)
        peak = peaks.lookup(name)
        row = {"index": index, "name": name, "sku": peak.sku if peak else None, **measure(index)}
        problem = check(row, peak)
        if problem:
            failures.append(f"GPU {index} ({name}): {problem}")
        if peak is None:
            unknown.append(name)
        rows.append(row)
    return rows, failures, unknown


def _finish(result: StageResult, failures: list[str], unknown: list[str], summary: str) -> None:
    if failures:
        raise Fail("; ".join(failures))
    note = f"; no peak known for {', '.join(sorted(set(unknown)))}" if unknown else ""
    result.reason = summary + note


def stage_gemm(ctx: SmokeContext, result: StageResult) -> None:
    size = ctx.args.gemm_size
    shapes = [(size, size, size)] + ([] if ctx.args.quick else list(gpu.GEMM_SHAPES_FULL))
    budget = 0.1 if ctx.args.quick else 0.25

    def check(row: dict[str, Any], peak: peaks.Peak | None) -> str | None:
        if peak is None:
            return None
        row.update(
            peak_tflops=peak.bf16_tflops,
            min_tflops=round(peak.gemm_min_tflops, 1),
            fraction=round(row["tflops_bf16"] / peak.bf16_tflops, 3),
            source=peak.source,
        )
        if row["tflops_bf16"] < peak.gemm_min_tflops:
            return (
                f"bf16 GEMM {row['tflops_bf16']} TFLOP/s < {peak.gemm_fraction:.0%} of "
                f"{peak.sku}'s {peak.bf16_tflops} (is it throttled? nvidia-smi -q -d PERFORMANCE)"
            )
        return None

    rows, failures, unknown = _per_gpu(ctx, lambda i: gpu.gemm_tflops(i, shapes, budget), check)
    best = max(rows, key=lambda r: r["tflops_bf16"])
    result.figures = {"tflops_bf16": best["tflops_bf16"], "gpus": rows}
    worst = min(rows, key=lambda r: r["tflops_bf16"])
    _finish(
        result,
        failures,
        unknown,
        f"bf16 GEMM {worst['tflops_bf16']}-{best['tflops_bf16']} TFLOP/s "
        f"over {len(rows)} GPU(s), best shape {best['best_shape']}",
    )


def stage_membw(ctx: SmokeContext, result: StageResult) -> None:
    size = 512 * MIB if ctx.args.quick else 2 * GIB

    def check(row: dict[str, Any], peak: peaks.Peak | None) -> str | None:
        if peak is None:
            return None
        row.update(
            peak_gbs=peak.mem_gbs,
            min_gbs=round(peak.membw_min_gbs, 1),
            fraction=round(row["gbs"] / peak.mem_gbs, 3),
            source=peak.source,
        )
        if row["gbs"] < peak.membw_min_gbs:
            return (
                f"memory copy {row['gbs']} GB/s < {peak.membw_fraction:.0%} of "
                f"{peak.sku}'s {peak.mem_gbs}"
            )
        return None

    rows, failures, unknown = _per_gpu(ctx, lambda i: gpu.memory_bandwidth(i, size), check)
    result.figures = {"gbs": min(r["gbs"] for r in rows), "gpus": rows}
    _finish(
        result,
        failures,
        unknown,
        f"device memory {min(r['gbs'] for r in rows)}-{max(r['gbs'] for r in rows)} GB/s "
        "(copy, read + write)",
    )


def stage_h2d(ctx: SmokeContext, result: StageResult) -> None:
    size = 256 * MIB if ctx.args.quick else 512 * MIB

    def check(row: dict[str, Any], peak: peaks.Peak | None) -> str | None:
        if peak is None or peak.h2d_min_gbs is None:
            return None
        row.update(min_gbs=round(peak.h2d_min_gbs, 1), pcie_gen=peak.pcie_gen)
        if row["h2d_gbs"] < peak.h2d_min_gbs:
            return (
                f"host-to-device {row['h2d_gbs']} GB/s < half of PCIe Gen{peak.pcie_gen} x16: "
                "a narrow or downgraded link? (nvidia-smi -q | grep -A3 'Link Width')"
            )
        return None

    rows, failures, unknown = _per_gpu(ctx, lambda i: gpu.host_to_device_bandwidth(i, size), check)
    result.figures = {"h2d_gbs": min(r["h2d_gbs"] for r in rows), "gpus": rows}
    _finish(
        result,
        failures,
        unknown,
        f"host-to-device {min(r['h2d_gbs'] for r in rows)} GB/s, device-to-host "
        f"{min(r['d2h_gbs'] for r in rows)} GB/s (pinned)",
    )


def _need_two_gpus(ctx: SmokeContext) -> str | None:
    if ctx.world_size > 1:
        return "one GPU per rank: the distributed stages test NCCL across ranks"
    if len(ctx.devices) < 2:
        return "needs two usable GPUs"
    return None


def stage_nccl(ctx: SmokeContext, result: StageResult) -> None:
    size = 256 * MIB if ctx.args.quick else GIB
    figures = gpu.nccl_all_reduce(ctx.devices, size, budget_s=0.2 if ctx.args.quick else 0.5)
    result.figures = figures
    if not figures["correct"]:
        raise Fail(
            f"all-reduce gave wrong sums (on GPUs {figures.get('wrong_on', '?')}, "
            f"max error {figures['random_max_err']:.2e})"
        )
    found = {peaks.lookup(torch.cuda.get_device_name(i)) for i in ctx.devices}
    peak = found.pop() if len(found) == 1 else None
    summary = (
        f"all-reduce over {figures['gpus']} GPUs correct, bus bandwidth {figures['busbw_gbs']} GB/s"
    )
    if peak is not None and peak.busbw_min_gbs is not None:
        figures["min_busbw_gbs"] = round(peak.busbw_min_gbs, 1)
        if figures["busbw_gbs"] < peak.busbw_min_gbs:
            raise Fail(
                f"all-reduce bus bandwidth {figures['busbw_gbs']} GB/s < "
                f"{peaks.BUSBW_FRACTION:.0%} of {peak.sku}'s NVLink {peak.nvlink_gbs} GB/s "
                f"({fabric.nvlink_hint()})"
            )
    else:
        summary += " (no threshold for this board)"
    result.reason = summary


def _llm(
    ctx: SmokeContext,
    result: StageResult,
    model: str,
    devices: list[torch.device],
    lora: bool,
    lr: float | None = None,
) -> None:
    from bloomkit.llmcheck import CheckFailed, run_llm_path

    runs = []
    for device in devices:
        try:
            figures = run_llm_path(
                model,
                device,
                steps=ctx.args.train_steps,
                batch_size=ctx.args.batch_size,
                seq_len=ctx.args.seq_len,
                lora=lora,
                lr=lr,
                trust_remote_code=ctx.args.trust_remote_code,
                workdir=ctx.workdir,
            )
        except CheckFailed as exc:
            result.figures = {**exc.figures, "devices": runs}
            raise Fail(f"{model} on {device}: {exc}") from exc
        runs.append(figures)
    first = runs[0]
    result.figures = {**first, "devices": [r["device"] for r in runs]}
    if len(runs) > 1:
        result.figures["per_device"] = runs
    where = ", ".join(str(d) for d in devices)
    result.reason = (
        f"{model} on {where}: loss {first['loss_first']:.2f} -> {first['loss_last']:.2f} in "
        f"{first['steps']} steps, identical logits after reload, generated "
        f"{first['generated_tokens']} tokens"
    )


def _llm_devices(ctx: SmokeContext) -> list[torch.device]:
    return [torch.device("cuda", i) for i in ctx.devices] or [torch.device("cpu")]


def stage_llm(ctx: SmokeContext, result: StageResult) -> None:
    # The tiny model is cheap: the whole path runs on every usable GPU.
    _llm(ctx, result, TINY, _llm_devices(ctx), lora=False)


def stage_llm_model(ctx: SmokeContext, result: StageResult) -> None:
    _llm(ctx, result, ctx.args.model, _llm_devices(ctx)[:1], lora=ctx.args.lora, lr=ctx.args.lr)


def _llm_advice(ctx: SmokeContext) -> str:
    a = ctx.args
    return f"lower --batch-size (now {a.batch_size}) or --seq-len (now {a.seq_len})" + (
        "" if a.lora else ", or add --lora"
    )


STAGES: list[Stage] = [
    Stage("env", stage_env),
    # Before anything of this process holds a GPU: DCGM's diagnostics want them to themselves.
    Stage("dcgm", dcgm.stage_dcgm, when=dcgm.skip_reason),
    Stage(
        "cuda",
        stage_cuda,
        oom_advice=lambda ctx: "another process holds the GPU's memory (see nvidia-smi)",
    ),
    Stage(
        "gemm",
        stage_gemm,
        when=_need_gpu,
        oom_advice=lambda ctx: f"lower --gemm-size (now {ctx.args.gemm_size}) or use --quick",
    ),
    Stage(
        "membw",
        stage_membw,
        when=_need_gpu,
        oom_advice=lambda ctx: "use --quick (smaller buffers) or free GPU memory",
    ),
    Stage(
        "h2d",
        stage_h2d,
        when=_need_gpu,
        oom_advice=lambda ctx: "use --quick (smaller buffers) or free GPU memory",
    ),
    Stage(
        "nccl",
        stage_nccl,
        when=_need_two_gpus,
        oom_advice=lambda ctx: "use --quick (smaller buffers) or free GPU memory",
    ),
    Stage("llm", stage_llm, oom_advice=_llm_advice),
    Stage(
        "llm_model",
        stage_llm_model,
        oom_advice=_llm_advice,
        when=lambda ctx: None if ctx.args.model != TINY else "no --model given",
    ),
]


def run_smoke(ctx: SmokeContext, stages: list[Stage] | None = None) -> dict[str, Any]:
    """Run the per-host stages (or `stages`) in order; the report as a dict (schema_version 1)."""
    return stages_runner.run_smoke(ctx, STAGES if stages is None else stages)


def _check_report_path(args: SmokeArgs) -> None:
    """Refuse a --json path that cannot be written before a minute of stages, not after."""
    if args.json is None:
        return
    names = [os.environ.get("RANK", "0")]
    if args.distributed and "{rank}" in str(args.json):
        names.append("fleet")  # rank 0 also writes the fleet verdict there
    for name in names:
        check_output_file(Path(str(args.json).replace("{rank}", name)).expanduser(), "--json")


def prepare(args: SmokeArgs, debug: bool = False) -> SmokeContext:
    """Before any stage, for `bloomkit smoke` and its --distributed form: refuse an unwritable
    report path, quiet transformers, read the rank from the environment."""
    _check_report_path(args)
    import transformers

    if not debug:
        transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return SmokeContext.from_environment(args, debug=debug)


def smoke(args: SmokeArgs, debug: bool = False) -> int:
    """The `bloomkit smoke` command: run, print the summary, write the report; the exit code."""
    ctx = prepare(args, debug)
    report = run_smoke(ctx)
    if ctx.is_reporter:
        print(format_summary(report), flush=True)
        if args.json is not None:
            path = Path(str(args.json).replace("{rank}", str(ctx.rank)))
            write_json(path, report)
            print(f"report: {path}", flush=True)
    return 0 if report["verdict"] == PASS else 1


__all__ = [
    "FAIL",
    "PASS",
    "SKIP",
    "STAGES",
    "Fail",
    "Skip",
    "SmokeContext",
    "Stage",
    "run_smoke",
    "smoke",
]
