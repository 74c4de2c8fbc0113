"""Fleet benchmarks on sandbox hosts, all in one run on identical fresh bookworm hosts:

1. a fresh deploy (to a green smoke) of one host, then of `--fresh` hosts (8) together: the
   ratio, and the seconds of each pyinfra operation in both runs, so that the CPU-bound part
   (the venv install and the smoke test, on this machine's cores) is named;
2. a no-change re-run (`--skip-smoke`) of one host and of `--rerun` hosts (16) in turns, so
   both see the same load on a shared machine; goal: 16 hosts within 2x of one. The hosts
   beyond the deployed ones are copies of a deployed host (a `docker commit`), which have its
   end state without installing it again.

    .venv/bin/python bench/bench_fleet.py [--fresh 8] [--rerun 16] [--runs 3] [--out FILE]

Heavy: `--fresh` venv installs at once, `--rerun` hosts running. Needs a Docker engine
(`gpurig sandbox engine`); hosts and the committed image are removed at the end (unless
--keep). Prints the figures and writes them as JSON.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

from fleetbench import REPO, bench_fleet, copies, gpurig_deploy, timed_cpu, timed_ops

CPU_BOUND = ("Install the locked venv", "Run bloomkit smoke")


def cpu_bound_s(ops: dict[str, float]) -> float:
    return sum(s for name, s in ops.items() if any(part in name for part in CPU_BOUND))


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fresh", type=int, default=8, help="hosts deployed fresh together")
    parser.add_argument("--rerun", type=int, default=16, help="hosts of the no-change re-run")
    parser.add_argument("--runs", type=int, default=3, help="no-change runs of each size")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results-fleet.json")
    parser.add_argument("--keep", action="store_true", help="keep the sandbox hosts")
    args = parser.parse_args()
    with bench_fleet("fleet", keep=args.keep) as bench:
        fleet, env, figures = bench.fleet, bench.env, bench.figures
        print(f"starting {1 + args.fresh} identical fresh bookworm hosts", flush=True)
        first, *many = fleet.up(1 + args.fresh)
        one, one_ops = timed_ops("fresh, 1 host", gpurig_deploy([first.name]), env)
        label = f"fresh, {len(many)} hosts"
        fresh, many_ops = timed_ops(label, gpurig_deploy([h.name for h in many]), env)
        figures |= {
            "fresh_1_host_s": one,
            f"fresh_{len(many)}_hosts_s": fresh,
            "fresh_ratio": fresh / one,
            "fresh_1_host_ops_s": one_ops,
            f"fresh_{len(many)}_hosts_ops_s": many_ops,
            "fresh_cpu_bound_s": {"1": cpu_bound_s(one_ops), str(len(many)): cpu_bound_s(many_ops)},
        }
        deployed = [first, *many]
        extra = max(0, args.rerun - len(deployed))
        print(f"{extra} copies of a deployed host", flush=True)
        fleet_names = [h.name for h in deployed + copies(bench, first, extra)][: args.rerun]
        print(f"no-change re-runs, 1 host and {len(fleet_names)} hosts in turns:", flush=True)
        small, large = [], []
        for i in range(args.runs):
            command = gpurig_deploy([first.name], "--skip-smoke")
            small.append(timed_cpu(f"1 host, run {i + 1}", command, env))
            command = gpurig_deploy(fleet_names, "--skip-smoke")
            large.append(timed_cpu(f"{len(fleet_names)} hosts, run {i + 1}", command, env))
        one, many = median_of(small), median_of(large)
        figures |= {
            "rerun_1_host_s": one["wall_s"],
            f"rerun_{len(fleet_names)}_hosts_s": many["wall_s"],
            "rerun_ratio": many["wall_s"] / one["wall_s"],
            # On 2 cores the fleet's run is CPU-bound: its floor is all its CPU over the cores.
            "rerun_cpu_s": {"1": one, str(len(fleet_names)): many},
            "rerun_cpu_floor_s": (many["controller_cpu_s"] + many["rest_cpu_s"]) / os.cpu_count(),
            "rerun_runs_s": {
                "1": [r["wall_s"] for r in small],
                str(len(fleet_names)): [r["wall_s"] for r in large],
            },
        }
    bench.write(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
