"""Bench: `bloomkit smoke` wall time and peak RSS (fresh process, imports included), and
fine-tune throughput (tokens/s, and MFU on a GPU) of the tiny model, or of a named one.

    python bench/bench_bloomkit.py [--runs 3] [--json FILE]
    python bench/bench_bloomkit.py --gpu [--model bigscience/bloom-560m] [--json FILE]

Each command runs in its own process; its peak RSS comes from os.wait4's rusage for that
child alone. Throughput is bloomkit's own figure: tokens through the optimizer over the
training loop's wall time (model load and saving excluded), from bloomkit_config.json.
Targets: smoke on a 2-core CPU host <= 30 s and <= 2 GB; on an H200 the GEMM stage >= 750
TFLOP/s and the whole GPU smoke <= 60 s. Runs without bloomkit installed (uses bloomkit/src).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SENTENCES = [
    "A GPU host is ready when it can train a model, save it, load it again and generate text.",
    "The driver talks to the kernel module and torch talks to the CUDA runtime.",
    "Matrix multiplication is the heart of a transformer: attention, projections and the MLP.",
    "Memory bandwidth feeds it, and the all-reduce keeps every replica of the weights the same.",
    "bloomkit checks each layer in turn and writes down what it measured.",
]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    try:
        import bloomkit  # noqa: F401
    except ImportError:
        src = str(REPO / "bloomkit" / "src")
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("HF_HUB_OFFLINE", "1")  # a benchmark must not wait on the network
    return env


def run(argv: list[str], env: dict[str, str] | None = None) -> dict[str, object]:
    """Run `argv` (in `env`, else child_env()); its wall time, peak RSS, exit code and output."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=env if env is not None else child_env()
        )
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        output = out.read()
    return {
        "command": shlex.join(argv),
        "wall_s": round(seconds, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux: KiB
        "exit": proc.returncode,
        "output": output,
    }


def bloomkit(*args: str) -> list[str]:
    return [sys.executable, "-m", "bloomkit", *args]


def bench_smoke(runs: int, gpu: bool, workdir: Path) -> dict[str, object]:
    results: dict[str, object] = {}
    for label, extra in (("smoke", []), ("smoke_quick", ["--quick"])):
        timings, rss, report = [], [], {}
        for i in range(runs):
            path = workdir / f"{label}-{i}.json"
            argv = bloomkit("smoke", *extra, "--json", str(path))
            if gpu:
                argv.insert(argv.index("smoke") + 1, "--require-gpu")
            done = run(argv)
            if done["exit"] != 0:
                print(done["output"], file=sys.stderr)
                raise SystemExit(f"{done['command']} exited {done['exit']}")
            timings.append(done["wall_s"])
            rss.append(done["peak_rss_mb"])
            report = json.loads(path.read_text())
        stages = {s["name"]: s for s in report["stages"]}
        results[label] = {
            "command": shlex.join(argv).replace(str(path), "REPORT.json"),
            "wall_s_median": statistics.median(timings),
            "wall_s_max": max(timings),
            "peak_rss_mb_max": max(rss),
            "duration_s_stages": report["duration_s"],
            "stage_seconds": {n: s["seconds"] for n, s in stages.items() if s["status"] != "skip"},
            "gemm_tflops_bf16": stages["gemm"]["figures"].get("tflops_bf16"),
            "membw_gbs": stages["membw"]["figures"].get("gbs"),
            "h2d_gbs": stages["h2d"]["figures"].get("h2d_gbs"),
            "llm_tokens_per_s": stages["llm"]["figures"].get("tokens_per_s"),
        }
        print(
            f"{label}: median {statistics.median(timings):.1f} s wall (max {max(timings):.1f}), "
            f"peak RSS {max(rss):.0f} MB over {runs} run(s)"
        )
    return results


def corpus(path: Path, lines: int) -> Path:
    with path.open("w") as out:
        for i in range(lines):
            text = f"{i}: " + " ".join(SENTENCES[(i + j) % len(SENTENCES)] for j in range(3))
            out.write(json.dumps({"text": text}) + "\n")
    return path


def bench_finetune(
    model: str,
    steps: int,
    batch: int,
    seq_len: int,
    workdir: Path,
    lines: int,
    data: Path | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, object]:
    """Fine-tune on `data`, or on a corpus of `lines` JSONL texts; `env` for the child."""
    if data is None:
        data = corpus(workdir / f"corpus-{lines}.jsonl", lines)
    output = workdir / f"ft-{model.replace('/', '--')}"
    argv = bloomkit(
        "finetune",
        "--model",
        model,
        "--data",
        str(data),
        "--output",
        str(output),
        "--max-steps",
        str(steps),
        "--batch-size",
        str(batch),
        "--seq-len",
        str(seq_len),
        "--save-steps",
        "100000",
        "--logging-steps",
        str(steps),
        "--no-progress",
        "--overwrite",
    )
    done = run(argv, env)
    if done["exit"] != 0:
        print(done["output"], file=sys.stderr)
        return {"command": done["command"], "error": done["output"].strip().splitlines()[-1:]}
    record = json.loads((output / "bloomkit_config.json").read_text())
    result = record["result"]
    figures = {
        "command": done["command"].replace(str(workdir), "$WORK"),
        "model": model,
        "device": record["resolved"]["device"],
        "precision": record["resolved"]["precision"],
        "parameters": record["resolved"]["parameters"],
        "tokens": result["tokens_this_run"],
        "train_s": result["seconds"],
        "tokens_per_s": result["tokens_per_s"],
        "mfu": result["mfu"],
        "loss": [result["first_loss"], result["last_loss"]],
        "wall_s": done["wall_s"],
        "peak_rss_mb": done["peak_rss_mb"],
    }
    mfu = f", MFU {result['mfu']:.1%}" if result["mfu"] is not None else ""
    print(
        f"finetune {model} on {figures['device']} ({figures['precision']}): "
        f"{result['tokens_per_s']:.0f} tokens/s{mfu} over {steps} steps of {batch}x{seq_len}"
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="smoke runs (median)")
    parser.add_argument("--gpu", action="store_true", help="GPU host: --require-gpu, GPU sizes")
    parser.add_argument("--model", help="also fine-tune this model (id in the HF cache, or dir)")
    parser.add_argument("--skip-smoke", action="store_true")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()

    figures: dict[str, object] = {
        "host": os.uname().nodename,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
    }
    with tempfile.TemporaryDirectory(prefix="bench-bloomkit-") as tmp:
        workdir = Path(tmp)
        if not args.skip_smoke:
            figures.update(bench_smoke(args.runs, args.gpu, workdir))
        if args.gpu:
            figures["finetune_tiny"] = bench_finetune("tiny", 100, 64, 512, workdir, 20000)
        else:
            figures["finetune_tiny"] = bench_finetune("tiny", 30, 8, 128, workdir, 2000)
        if args.model:
            figures["finetune_model"] = bench_finetune(args.model, 40, 8, 1024, workdir, 3000)
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
