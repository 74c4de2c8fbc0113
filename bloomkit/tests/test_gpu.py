"""On a CUDA host: the GPU stages measure real figures and the LLM path trains on the GPU.

Skipped without CUDA. Figures go to stdout and, when BLOOMKIT_GPU_FIGURES names a file, are
appended there as JSON lines (tests/gpu/run.sh collects them).
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from bloomkit import gpu, peaks

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture
def record(request):
    """record(**figures): print them and append them to $BLOOMKIT_GPU_FIGURES."""

    def write(**figures) -> None:
        line = json.dumps({"test": request.node.name, **figures}, default=str)
        print(line)
        path = os.environ.get("BLOOMKIT_GPU_FIGURES")
        if path:
            with open(path, "a") as out:
                out.write(line + "\n")

    return write


def _peak(index: int = 0) -> peaks.Peak | None:
    return peaks.lookup(torch.cuda.get_device_name(index))


def test_every_gpu_computes_like_the_cpu(record) -> None:
    for index in range(torch.cuda.device_count()):
        figures = gpu.check_device(index)
        record(**figures)
        assert figures["problem"] is None, figures


def test_bf16_gemm(record) -> None:
    shapes = [(8192, 8192, 8192), *gpu.GEMM_SHAPES_FULL]
    figures = gpu.gemm_tflops(0, shapes)
    peak = _peak()
    record(name=torch.cuda.get_device_name(0), peak=peak and peak.bf16_tflops, **figures)
    assert figures["tflops_bf16"] > 0
    if peak is not None:
        assert figures["tflops_bf16"] >= peak.gemm_min_tflops


def test_memory_and_host_link_bandwidth(record) -> None:
    memory = gpu.memory_bandwidth(0, 2 * gpu.GIB)
    link = gpu.host_to_device_bandwidth(0, 512 * gpu.MIB)
    peak = _peak()
    record(memory=memory, link=link, peak_gbs=peak and peak.mem_gbs)
    if peak is not None:
        assert memory["gbs"] >= peak.membw_min_gbs
        if peak.h2d_min_gbs is not None:
            assert link["h2d_gbs"] >= peak.h2d_min_gbs


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_nccl_all_reduce(record) -> None:
    figures = gpu.nccl_all_reduce(list(range(torch.cuda.device_count())), gpu.GIB)
    record(**figures)
    assert figures["correct"]


def test_smoke_requires_and_passes_on_this_gpu(cli, tmp_path, record) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    from bloomkit.report import load_schema

    path = tmp_path / "smoke.json"
    result = cli("smoke", "--require-gpu", "--json", path)
    report = json.loads(path.read_text())
    jsonschema.Draft202012Validator(load_schema()).validate(report)
    stages = {s["name"]: s for s in report["stages"]}
    record(
        verdict=report["verdict"],
        duration_s=report["duration_s"],
        stages={
            n: {"status": s["status"], "seconds": s["seconds"], "reason": s["reason"]}
            for n, s in stages.items()
        },
    )
    assert result.code == 0, result.out
    for name in ("cuda", "gemm", "membw", "h2d", "llm"):
        assert stages[name]["status"] == "pass", stages[name]
    assert stages["gemm"]["figures"]["tflops_bf16"] > 0
    assert stages["llm"]["figures"]["device"].startswith("cuda")


def test_out_of_memory_names_the_stage_and_the_knob(cli, tmp_path) -> None:
    path = tmp_path / "smoke.json"
    # 3 x 300000^2 bf16 = 540 GB: no GPU has that.
    result = cli("smoke", "--quick", "--gemm-size", "300000", "--json", path)
    report = json.loads(path.read_text())
    assert result.code == 1
    assert (
        "gemm: out of GPU memory in stage gemm: lower --gemm-size (now 300000)"
        in (report["failures"])
    )
    stages = {s["name"]: s for s in report["stages"]}
    assert stages["llm"]["status"] == "pass"  # the stages after it still ran


def test_finetune_tiny_on_gpu_in_bf16(tmp_path, cli, record) -> None:
    from bloomkit.config import FinetuneArgs
    from bloomkit.finetune import CONFIG_FILE, finetune

    data = os.path.join(os.path.dirname(__file__), "data", "train.jsonl")
    summary = finetune(
        FinetuneArgs(
            data=data,
            output=tmp_path / "out",
            model="tiny",
            max_steps=30,
            batch_size=16,
            seq_len=64,
            lr=1e-2,
            logging_steps=1,
            save_steps=1000,
            progress=False,
        )
    )
    resolved = json.loads((tmp_path / "out" / CONFIG_FILE).read_text())["resolved"]
    record(
        tokens_per_s=summary["tokens_per_s"],
        precision=resolved["precision"],
        loss=(summary["first_loss"], summary["last_loss"]),
    )
    assert resolved["device"].startswith("cuda")
    assert resolved["precision"] == ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    assert summary["last_loss"] < summary["first_loss"]
    result = cli("generate", "--model", tmp_path / "out", "--seed", "1", "hello")
    assert result.code == 0, result.err


def _synthetic_corpus(path, lines: int) -> str:
    """Enough varied text for full batches (the fixture file is a few hundred tokens)."""
    from bloomkit.models import TINY_CORPUS

    sentences = [s for s in TINY_CORPUS.splitlines() if s]
    with open(path, "w") as out:
        for i in range(lines):
            text = f"{i}: " + " ".join(sentences[(i + j) % len(sentences)] for j in range(4))
            out.write(json.dumps({"text": text}) + "\n")
    return str(path)


@pytest.mark.slow
def test_bloom_560m_throughput(tmp_path, record, monkeypatch) -> None:
    """Needs bigscience/bloom-560m in the HF cache that BLOOMKIT_HF_HOME names."""
    from huggingface_hub import try_to_load_from_cache

    if os.environ.get("BLOOMKIT_HF_HOME"):
        monkeypatch.setenv("HF_HOME", os.environ["BLOOMKIT_HF_HOME"])
    cached = try_to_load_from_cache("bigscience/bloom-560m", "config.json")
    if not isinstance(cached, str):
        pytest.skip("bigscience/bloom-560m is not in the HF cache (set BLOOMKIT_HF_HOME)")
    from bloomkit.config import FinetuneArgs
    from bloomkit.finetune import finetune

    data = _synthetic_corpus(tmp_path / "corpus.jsonl", 3000)
    summary = finetune(
        FinetuneArgs(
            data=data,
            output=tmp_path / "out",
            max_steps=40,
            batch_size=8,
            seq_len=1024,
            save_steps=1000,
            progress=False,
            logging_steps=10,
        )
    )
    record(
        model="bigscience/bloom-560m",
        tokens_per_s=summary["tokens_per_s"],
        mfu=summary["mfu"],
        loss=(summary["first_loss"], summary["last_loss"]),
    )
    assert summary["tokens_per_s"] > 0
    assert summary["last_loss"] < summary["first_loss"]
