"""Ansible beside pyinfra, on identical fresh sandbox hosts, in one run:

1. fresh host to green smoke, one host each: `ansible-playbook playbooks/gpu.yml` and
   `gpurig deploy` (pyinfra);
2. no-change re-run on that host (smoke skipped: -e gpurig_skip_smoke=true, --skip-smoke),
   the two front ends in turns, median of three;
3. four fresh hosts deployed together (no smoke), then their no-change re-run, median of three.

    .venv/bin/python bench/bench_ansible.py [--out FILE] [--keep] [--hosts 4]

Needs a Docker engine (`gpurig sandbox engine`). Hosts live in a temporary state dir and are
removed at the end (unless --keep). The front ends run one after the other, never at once.
Prints the figures and writes them as JSON.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

from fleetbench import REPO, ansible_deploy, bench_fleet, gpurig_deploy, timed

RERUNS = 3
NO_SMOKE_ANSIBLE = ("-e", '{"gpurig_skip_smoke": true}')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results-ansible.json")
    parser.add_argument(
        "--hosts", type=int, default=4, help="size of the multi-host runs (0: one host only)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the sandbox hosts")
    args = parser.parse_args()
    with bench_fleet("ansible", keep=args.keep) as bench:
        fleet, env, figures = bench.fleet, bench.env, bench.figures
        inventory = fleet.state.ansible_inventory_file
        print("starting identical fresh bookworm hosts", flush=True)
        a1, p1 = (h.name for h in fleet.up(2))
        print("fresh host to green smoke, one host:", flush=True)
        figures["fresh_1_ansible_s"] = timed("ansible", ansible_deploy(inventory, [a1]), env)
        figures["fresh_1_pyinfra_s"] = timed("pyinfra", gpurig_deploy([p1]), env)
        # In turns, so that both front ends see the same load on a shared machine.
        print("no-change re-run, one host (no smoke), in turns:", flush=True)
        runs: dict[str, list[float]] = {"ansible": [], "pyinfra": []}
        for i in range(RERUNS):
            command = ansible_deploy(inventory, [a1], *NO_SMOKE_ANSIBLE)
            runs["ansible"].append(timed(f"ansible run {i + 1}", command, env))
            command = gpurig_deploy([p1], "--skip-smoke")
            runs["pyinfra"].append(timed(f"pyinfra run {i + 1}", command, env))
        for name, times in runs.items():
            figures[f"rerun_1_{name}_s"] = statistics.median(times)
        kinds = ["fresh_1", "rerun_1"]
        if args.hosts:
            kinds += multi_host(bench.fleet, inventory, env, args.hosts, figures)
        for kind in kinds:
            figures[f"{kind}_ansible_over_pyinfra"] = round(
                figures[f"{kind}_ansible_s"] / figures[f"{kind}_pyinfra_s"], 2
            )
    bench.write(args.out)
    return 0


def multi_host(
    fleet: Any, inventory: Path, env: dict[str, str], n: int, figures: dict[str, Any]
) -> list[str]:
    """n fresh hosts for each front end, deployed together, then their no-change re-run."""
    print(f"{n} fresh hosts each, deployed together (no smoke):", flush=True)
    group_a = [h.name for h in fleet.up(n)]
    group_p = [h.name for h in fleet.up(n)]
    figures[f"fresh_{n}_ansible_s"] = timed(
        "ansible", ansible_deploy(inventory, group_a, *NO_SMOKE_ANSIBLE), env
    )
    figures[f"fresh_{n}_pyinfra_s"] = timed("pyinfra", gpurig_deploy(group_p, "--skip-smoke"), env)
    print(f"no-change re-run, {n} hosts (no smoke):", flush=True)
    for name, command in (
        ("ansible", ansible_deploy(inventory, group_a, *NO_SMOKE_ANSIBLE)),
        ("pyinfra", gpurig_deploy(group_p, "--skip-smoke")),
    ):
        runs = [timed(f"{name} run {i + 1}", command, env) for i in range(RERUNS)]
        figures[f"rerun_{n}_{name}_s"] = statistics.median(runs)
    return [f"fresh_{n}", f"rerun_{n}"]


if __name__ == "__main__":
    sys.exit(main())
