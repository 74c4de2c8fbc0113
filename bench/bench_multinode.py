"""Multi-node benchmarks on sandbox hosts (gloo over 127.0.0.1), and the bus-bandwidth
thresholds `bloomkit smoke --distributed` applies on real GPUs.

1. fleet smoke wall time: `gpurig cluster smoke --quick` on 2 nodes, then 3 (each node a
   container on this machine: all ranks share its cores, so the figure is an upper bound);
2. how fast a stopped node fails the run (`gpurig cluster smoke` names it);
3. the all-reduce busbw expected per GPU SKU and interconnect, as thresholds, with their
   sources (bloomkit.peaks, bloomkit.distributed).

    .venv/bin/python bench/bench_multinode.py [--runs 3] [--out FILE] [--keep]
    .venv/bin/python bench/bench_multinode.py --thresholds     # (3) only: no hosts

Needs a Docker engine (`gpurig sandbox engine`) for (1) and (2): three fresh bookworm hosts in a
temporary state dir, deployed once with `gpurig deploy --skip-smoke`, removed at the end.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bloomkit" / "src"))

INVENTORY = """\
from gpurig.inventory import pyinfra_groups

globals().update(pyinfra_groups())
cluster_{name} = [(n, {{**d, "gpurig_rdzv_port": {port}}}) for n, d in sandbox[:{count}]]  # noqa
"""


def thresholds() -> list[dict[str, Any]]:
    """What the busbw stage requires on GPUs, per SKU and interconnect."""
    from bloomkit import distributed, peaks

    cases = [
        ("H100 SXM", 1, 8, None, "8 GPUs, NVLink/NVSwitch, one node"),
        ("H200 SXM", 1, 8, None, "8 GPUs, NVLink/NVSwitch, one node"),
        ("A100 SXM 80GB", 1, 8, None, "8 GPUs, NVLink/NVSwitch, one node"),
        ("H100 SXM", 1, 2, None, "2 GPUs of an NVSwitch board"),
        ("A100 SXM 40GB", 1, 4, None, "4 GPUs of an NVSwitch board"),
        ("H100 SXM", 2, 8, 8 * 400 / 8, "2+ nodes, 8x 400 Gb/s NDR InfiniBand"),
        ("H200 SXM", 2, 8, 8 * 400 / 8, "2+ nodes, 8x 400 Gb/s NDR InfiniBand"),
        ("A100 SXM 80GB", 2, 8, 8 * 200 / 8, "2+ nodes, 8x 200 Gb/s HDR InfiniBand"),
        ("A100 SXM 40GB", 2, 8, 4 * 200 / 8, "2+ nodes, 4x 200 Gb/s HDR InfiniBand"),
        ("H100 SXM", 2, 8, None, "2+ nodes, TCP sockets (no RDMA)"),
        ("L40S", 1, 4, None, "PCIe card, one node"),
    ]
    rows = []
    for sku, nodes, local, nic, what in cases:
        minimum, basis = distributed.busbw_expectation(sku, nodes, local, nic)
        rows.append(
            {
                "sku": sku,
                "interconnect": what,
                "min_busbw_gbs": None if minimum is None else round(minimum, 1),
                "basis": basis,
            }
        )
    rows.append(
        {
            "sku": "any (gloo on CPUs)",
            "interconnect": "TCP",
            "min_busbw_gbs": None,
            "basis": "measured only",
        }
    )
    assert peaks.FLEET_BUSBW_FRACTION == 0.80
    return rows


def free_ports(count: int) -> list[int]:
    probes = [socket.socket() for _ in range(count)]
    for probe in probes:
        probe.bind(("127.0.0.1", 0))
    ports = [int(p.getsockname()[1]) for p in probes]
    for probe in probes:
        probe.close()
    return ports


def fleet_figures(runs: int, keep: bool) -> dict[str, Any]:
    from fleetbench import bench_fleet, timed

    with bench_fleet("multinode", keep=keep) as bench:
        fleet, env = bench.fleet, bench.env
        work = bench.state_dir / "work"
        work.mkdir()
        env["GPURIG_REPORTS_DIR"] = str(work)
        figures: dict[str, Any] = {"runs": runs}
        fleet.up(3, os="bookworm")
        pair_port, trio_port = free_ports(2)
        pair, trio = work / "pair.py", work / "trio.py"
        pair.write_text(INVENTORY.format(name="pair", port=pair_port, count=2))
        trio.write_text(INVENTORY.format(name="trio", port=trio_port, count=3))
        gpurig = [sys.executable, "-m", "gpurig.cli"]
        pyinfra = str(Path(sys.executable).with_name("pyinfra"))
        print("deploying 3 hosts (no smoke)...", flush=True)
        figures["deploy_3_hosts_s"] = round(
            timed("deploy", [*gpurig, "deploy", "--inventory", str(pair), "--skip-smoke"], env), 1
        )
        for name, inventory in (("2_nodes", pair), ("3_nodes", trio)):
            if name == "3_nodes":
                timed("re-form", [pyinfra, "-y", str(inventory), "deploy/cluster.py"], env)
            smoke = [*gpurig, "cluster", "smoke", "-i", str(inventory), "--quick"]
            times = [timed(f"smoke {name} #{i + 1}", smoke, env) for i in range(runs)]
            figures[f"smoke_{name}_s"] = {
                "median": round(statistics.median(times), 1),
                "min": round(min(times), 1),
                "max": round(max(times), 1),
            }
            record = json.loads((work / "cluster" / inventory.stem / "cluster.json").read_text())
            figures[f"busbw_{name}_gbs"] = record["busbw_gbs"]
        fleet.stop(fleet.hosts[1])
        smoke = [*gpurig, "cluster", "smoke", "-i", str(trio), "--quick"]
        figures["stopped_node_named_s"] = round(timed("stopped node", smoke, env, expect=1), 1)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, help="write the figures as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the sandbox hosts")
    parser.add_argument("--thresholds", action="store_true", help="only the threshold table")
    args = parser.parse_args()
    result: dict[str, Any] = {"thresholds": thresholds()}
    print("busbw thresholds on GPUs (bloomkit smoke --distributed):")
    for row in result["thresholds"]:
        shown = "-" if row["min_busbw_gbs"] is None else f">= {row['min_busbw_gbs']:g} GB/s"
        print(f"  {row['sku']:<16} {row['interconnect']:<40} {shown:<14} {row['basis']}")
    if not args.thresholds:
        result["fleet"] = fleet_figures(args.runs, args.keep)
        print(json.dumps(result["fleet"], indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
