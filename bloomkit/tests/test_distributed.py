"""`bloomkit smoke --distributed`: real gloo process groups on this machine (torchrun, and bare
ranks that die on purpose), and the pure parts: thresholds, the fleet verdict, RDMA ports."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from bloomkit import distributed, peaks
from bloomkit.busbw import busbw_expectation, rdma_ports
from bloomkit.config import SmokeArgs
from bloomkit.ddp import DDP_WEIGHTS_ATOL, rank_batch
from bloomkit.fleet import fleet_verdict, gather_fleet
from bloomkit.report import load_schema
from bloomkit.stages import SmokeContext

jsonschema = pytest.importorskip("jsonschema")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def quiet_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return {**env, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", **extra}


# --- pure parts ------------------------------------------------------------------------------


def test_thresholds_per_sku_and_interconnect() -> None:
    # 8 GPUs on one NVSwitch board: 80% of what such boards measure in nccl-tests.
    h100, basis = busbw_expectation("H100 SXM", nodes=1, local_ranks=8, nic_gbs=None)
    assert h100 == pytest.approx(0.8 * 475)
    assert "S62129" in basis
    a100, _ = busbw_expectation("A100 SXM 80GB", nodes=1, local_ranks=8, nic_gbs=None)
    assert a100 == pytest.approx(0.8 * 200)
    # Fewer GPUs on the board: the single-host NCCL stage's rule (60% of NVLink per direction).
    two, _ = busbw_expectation("H200 SXM", nodes=1, local_ranks=2, nic_gbs=None)
    assert two == pytest.approx(peaks.BUSBW_FRACTION * 450)
    four, _ = busbw_expectation("A100 SXM 40GB", 1, 4, None)  # never above 8 GPUs'
    assert four == pytest.approx(0.8 * 200)
    # Across nodes the RDMA ports bound it: 8x NDR = 400 GB/s; 4x HDR = 100 GB/s.
    ndr, basis = busbw_expectation("H100 SXM", nodes=2, local_ranks=8, nic_gbs=400)
    assert ndr == pytest.approx(0.8 * 400)
    assert "RDMA" in basis
    hdr, _ = busbw_expectation("A100 SXM 40GB", nodes=3, local_ranks=8, nic_gbs=100)
    assert hdr == pytest.approx(80)
    # Measured only: TCP sockets between nodes, a PCIe card on one node.
    assert busbw_expectation("H100 SXM", 2, 8, None)[0] is None
    assert busbw_expectation("L40S", 1, 4, None)[0] is None


def test_rdma_ports_reads_active_ports_and_their_rate(tmp_path: Path) -> None:
    for device, state, rate, link in [
        ("mlx5_0", "4: ACTIVE", "400 Gb/sec (4X NDR)", "InfiniBand"),
        ("mlx5_1", "1: DOWN", "400 Gb/sec (4X NDR)", "InfiniBand"),
        ("mlx5_2", "4: ACTIVE", "200 Gb/sec (2X HDR)", "Ethernet"),
    ]:
        port = tmp_path / device / "ports" / "1"
        port.mkdir(parents=True)
        (port / "state").write_text(state + "\n")
        (port / "rate").write_text(rate + "\n")
        (port / "link_layer").write_text(link + "\n")
    found = rdma_ports(tmp_path)
    assert [(p["device"], p["gbits"], p["link"]) for p in found] == [
        ("mlx5_0", 400.0, "InfiniBand"),
        ("mlx5_2", 200.0, "Ethernet"),
    ]
    assert rdma_ports(tmp_path / "absent") == []


def test_the_fleet_verdict_names_missing_and_failed_ranks() -> None:
    roster = [
        {"rank": r, "host": f"node-{r // 2}", "node_rank": r // 2, "local_rank": r % 2}
        for r in range(4)
    ]
    ok = {"verdict": "pass", "failures": [], "busbw_gbs": 1.0, "seconds": 1.0}
    summaries = {
        0: {**ok, "rank": 0, "host": "node-0", "node_rank": 0},
        1: {**ok, "rank": 1, "host": "node-0", "node_rank": 0},
        2: {**ok, "rank": 2, "host": "node-1", "node_rank": 1, "verdict": "fail",
            "failures": ["busbw: too slow"]},
    }  # fmt: skip
    fleet = fleet_verdict(summaries, 4, roster)
    assert fleet["verdict"] == "fail"
    assert fleet["reported"] == 3
    assert fleet["failures"] == [
        "rank 2 on node-1 (node 1): busbw: too slow",
        "rank 3 on node-1 (node 1): no verdict (died, hung or never joined)",
    ]
    del summaries[2]
    summaries[2] = {**ok, "rank": 2, "host": "node-1", "node_rank": 1}
    summaries[3] = {**ok, "rank": 3, "host": "node-1", "node_rank": 1}
    assert fleet_verdict(summaries, 4, roster)["verdict"] == "pass"


def test_each_rank_trains_on_its_own_batch() -> None:
    ids = list(range(100))
    first, second = (rank_batch(ids, r, 2, 8) for r in (0, 1))
    assert first.shape == (2, 8)
    assert not torch.equal(first, second)
    assert torch.equal(first, rank_batch(ids, 0, 2, 8))


def test_distributed_stages_join_right_after_cuda() -> None:
    names = [s.name for s in distributed.distributed_stages()]
    assert names[:3] == ["env", "cuda", "dist"]
    assert names[-3:] == ["allreduce", "busbw", "ddp"]
    assert not set(distributed.SINGLE_HOST_ONLY) & set(names)


def test_outside_torchrun_it_says_how_to_launch(cli) -> None:
    result = cli("smoke", "--distributed")
    assert result.code == 2
    assert "--distributed runs under torchrun" in result.err
    assert result.out == ""


def test_rank_zero_names_a_rank_that_never_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    store = torch.distributed.HashStore()
    monkeypatch.setattr("bloomkit.fleet._store", lambda: store)
    ctx = SmokeContext(args=SmokeArgs(distributed=True), rank=0, world_size=2)
    mine = {"rank": 0, "host": "a", "node_rank": 0, "local_rank": 0, "verdict": "pass",
            "failures": [], "busbw_gbs": None, "seconds": 1.0}  # fmt: skip
    began = time.monotonic()
    fleet = gather_fleet(ctx, mine, wait_s=0.5)
    assert time.monotonic() - began < 5
    assert fleet["verdict"] == "fail"
    assert fleet["failures"] == ["rank 1: no verdict (died, hung or never joined)"]
    # The other rank reads rank 0's decision, whatever its own verdict.
    other = SmokeContext(args=SmokeArgs(distributed=True), rank=1, world_size=2)
    assert gather_fleet(other, {**mine, "rank": 1}, wait_s=0.5) == fleet


# --- real process groups on this machine -----------------------------------------------------


def validate(report: dict) -> None:
    jsonschema.Draft202012Validator(load_schema()).validate(report)


@pytest.mark.slow
def test_two_ranks_under_torchrun_pass_with_a_fleet_verdict(tmp_path: Path) -> None:
    command = [
        *TORCHRUN, "--nnodes", "1", "--nproc-per-node", "2", "--rdzv-backend", "static",
        "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "--max-restarts", "0",
        "-m", "bloomkit", "smoke", "--distributed", "--quick", "--json",
        str(tmp_path / "{rank}.json"),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=quiet_env())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "fleet: PASS, 2 of 2 rank(s) reported" in done.stdout
    fleet = json.loads((tmp_path / "fleet.json").read_text())
    assert fleet["verdict"] == "pass"
    assert [r["rank"] for r in fleet["ranks"]] == [0, 1]
    digests = set()
    for rank in (0, 1):
        report = json.loads((tmp_path / f"{rank}.json").read_text())
        validate(report)
        assert report["rank"]["rank"] == rank
        assert report["fleet"]["verdict"] == "pass"
        stages = {s["name"]: s for s in report["stages"]}
        assert {stages[n]["status"] for n in ("dist", "allreduce", "busbw", "ddp")} == {"pass"}
        assert stages["dist"]["figures"]["backend"] == "gloo"
        assert stages["allreduce"]["figures"]["exact_sum"] is True
        assert stages["busbw"]["figures"]["busbw_gbs"] > 0
        ddp = stages["ddp"]["figures"]
        assert ddp["identical_across_ranks"]
        assert ddp["same_initial_weights"]
        assert ddp["max_diff_vs_reference"] <= DDP_WEIGHTS_ATOL
        digests.add(ddp["weights_sha256"])
        assert "llm" not in stages  # the per-host LLM path is the deploy smoke's job
    assert len(digests) == 1


@pytest.mark.slow
def test_a_missing_node_fails_the_rendezvous_in_bounded_time(tmp_path: Path) -> None:
    """Node 0 of 2 alone: torchrun's static rendezvous gives up after its timeout."""
    command = [
        *TORCHRUN, "--nnodes", "2", "--node-rank", "0", "--nproc-per-node", "1",
        "--rdzv-backend", "static", "--rdzv-endpoint", f"127.0.0.1:{free_port()}",
        "--rdzv-conf", "timeout=5", "--max-restarts", "0",
        "-m", "bloomkit", "smoke", "--distributed", "--quick",
    ]  # fmt: skip
    began = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=quiet_env())
    assert done.returncode != 0
    assert time.monotonic() - began < 60
    assert "1/2 clients joined" in done.stderr


RANK_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from bloomkit import distributed
    from bloomkit.config import SmokeArgs
    from bloomkit.fleet import gather_fleet, rank_summary
    from bloomkit.stages import SmokeContext, Stage, run_smoke

    def die(ctx, result):
        if ctx.rank == 1:
            os._exit(3)  # a node lost after joining

    ctx = SmokeContext.from_environment(SmokeArgs(distributed=True, dist_timeout=20, quick=True))
    stages = [s for s in distributed.distributed_stages() if s.name in ("dist", "allreduce")]
    stages.insert(1, Stage("die", die))
    report = run_smoke(ctx, stages)
    fleet = gather_fleet(ctx, rank_summary(ctx, report), wait_s=4)
    print(json.dumps({"report": report, "fleet": fleet}))
    """
)


def rank_env(rank: int) -> dict[str, str]:
    """What torchrun would set for rank `rank` of 2, one per node."""
    return {
        "RANK": str(rank),
        "WORLD_SIZE": "2",
        "LOCAL_RANK": "0",
        "LOCAL_WORLD_SIZE": "1",
        "GROUP_RANK": str(rank),
        "MASTER_ADDR": "127.0.0.1",
    }


@pytest.mark.slow
def test_a_rank_lost_mid_run_is_named_and_nothing_hangs(tmp_path: Path) -> None:
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    port = str(free_port())
    ranks = [
        subprocess.Popen(
            [sys.executable, str(script)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=quiet_env(**rank_env(r), MASTER_PORT=port),
        )
        for r in (0, 1)
    ]
    began = time.monotonic()
    out, err = ranks[0].communicate(timeout=180)
    ranks[1].communicate(timeout=60)
    assert ranks[1].returncode == 3
    assert ranks[0].returncode == 0, err[-3000:]
    result = json.loads(out.strip().splitlines()[-1])
    stages = {s["name"]: s for s in result["report"]["stages"]}
    assert stages["dist"]["status"] == "pass"
    assert stages["allreduce"]["status"] == "fail"
    assert "a collective failed" in stages["allreduce"]["reason"]
    fleet = result["fleet"]
    assert fleet["verdict"] == "fail"
    host = socket.gethostname()
    lost = f"rank 1 on {host} (node 1): no verdict (died, hung or never joined)"
    assert lost in fleet["failures"]
    assert time.monotonic() - began < 120


@pytest.mark.slow
def test_finetune_under_torchrun_on_cpus_writes_one_output(tmp_path: Path, data_dir: Path) -> None:
    """Two CPU ranks (gloo): only rank 0 writes OUTPUT, which records the world size."""
    output = tmp_path / "out"
    command = [
        *TORCHRUN, "--nnodes", "1", "--nproc-per-node", "2", "--rdzv-backend", "static",
        "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "--max-restarts", "0",
        "-m", "bloomkit", "finetune", "--data", str(data_dir / "train.jsonl"),
        "--output", str(output), "--model", "tiny", "--max-steps", "2", "--seq-len", "32",
        "--batch-size", "2", "--no-progress",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=quiet_env())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("saved ") == 1
    config = json.loads((output / "bloomkit_config.json").read_text())
    assert config["resolved"]["world_size"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no .partial left
