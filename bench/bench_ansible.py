"""Ansible beside pyinfra, on identical fresh sandbox hosts, in one run:

1. fresh host to green smoke, one host each: `ansible-playbook playbooks/gpu.yml` and
   `gpurig deploy` (pyinfra);
2. no-change re-run on that host (smoke skipped: -e gpurig_skip_smoke=true, --skip-smoke),
   median of three;
3. four fresh hosts deployed together (no smoke), then their no-change re-run, median of three.

    .venv/bin/python bench/bench_ansible.py [--out FILE] [--keep] [--hosts 4]

Needs a Docker engine (`gpurig sandbox engine`). Hosts live in a temporary state dir and are
removed at the end (unless --keep). The front ends run one after the other, never at once.
Prints the figures and writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gpurig.sandbox import Fleet, docker_env, ensure_engine

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RERUNS = 3


def timed(label: str, command: list[str], env: dict[str, str]) -> float:
    began = time.monotonic()
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - began
    if result.returncode:
        tail = (result.stdout + result.stderr)[-3000:]
        raise SystemExit(f"{label} failed (exit {result.returncode}):\n{tail}")
    print(f"  {label}: {seconds:.1f} s", flush=True)
    return seconds


def ansible(inventory: Path, hosts: list[str], *args: str) -> list[str]:
    return [
        str(BIN / "ansible-playbook"), "-i", str(inventory), "playbooks/gpu.yml",
        "--limit", ",".join(hosts), *args,
    ]  # fmt: skip


def pyinfra(hosts: list[str], *args: str) -> list[str]:
    command = [sys.executable, "-m", "gpurig.cli", "deploy", *args, "--"]
    for name in hosts:
        command += ["--limit", name]
    return command


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results-ansible.json")
    parser.add_argument(
        "--hosts", type=int, default=4, help="size of the multi-host runs (0: one host only)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the sandbox hosts")
    args = parser.parse_args()
    ensure_engine()
    state_dir = Path(tempfile.mkdtemp(prefix="gpurig-bench-ansible-"))
    fleet = Fleet(state_dir)
    env = {
        **os.environ,
        **docker_env(),
        **fleet.env(),
        "GPURIG_REPORTS_DIR": str(state_dir / "reports"),
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
    }
    env.pop("GPURIG_HOSTS", None)
    inventory = fleet.state.ansible_inventory_file
    no_smoke_ansible = ("-e", '{"gpurig_skip_smoke": true}')
    figures: dict[str, Any] = {"when": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count()}
    try:
        print("starting identical fresh bookworm hosts", flush=True)
        a1, p1 = (h.name for h in fleet.up(2))
        print("fresh host to green smoke, one host:", flush=True)
        figures["fresh_1_ansible_s"] = timed("ansible", ansible(inventory, [a1]), env)
        figures["fresh_1_pyinfra_s"] = timed("pyinfra", pyinfra([p1]), env)
        print("no-change re-run, one host (no smoke):", flush=True)
        for name, command in (
            ("ansible", ansible(inventory, [a1], *no_smoke_ansible)),
            ("pyinfra", pyinfra([p1], "--skip-smoke")),
        ):
            runs = [timed(f"{name} run {i + 1}", command, env) for i in range(RERUNS)]
            figures[f"rerun_1_{name}_s"] = statistics.median(runs)
        kinds = ["fresh_1", "rerun_1"]
        if args.hosts:
            kinds += multi_host(fleet, inventory, env, args.hosts, no_smoke_ansible, figures)
        for kind in kinds:
            figures[f"{kind}_ansible_over_pyinfra"] = round(
                figures[f"{kind}_ansible_s"] / figures[f"{kind}_pyinfra_s"], 2
            )
    finally:
        if not args.keep:
            fleet.down()
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    print(f"wrote {args.out}")
    return 0


def multi_host(
    fleet: Fleet,
    inventory: Path,
    env: dict[str, str],
    n: int,
    no_smoke_ansible: tuple[str, str],
    figures: dict[str, Any],
) -> list[str]:
    """n fresh hosts for each front end, deployed together, then their no-change re-run."""
    print(f"{n} fresh hosts each, deployed together (no smoke):", flush=True)
    group_a = [h.name for h in fleet.up(n)]
    group_p = [h.name for h in fleet.up(n)]
    figures[f"fresh_{n}_ansible_s"] = timed(
        "ansible", ansible(inventory, group_a, *no_smoke_ansible), env
    )
    figures[f"fresh_{n}_pyinfra_s"] = timed("pyinfra", pyinfra(group_p, "--skip-smoke"), env)
    print(f"no-change re-run, {n} hosts (no smoke):", flush=True)
    for name, command in (
        ("ansible", ansible(inventory, group_a, *no_smoke_ansible)),
        ("pyinfra", pyinfra(group_p, "--skip-smoke")),
    ):
        runs = [timed(f"{name} run {i + 1}", command, env) for i in range(RERUNS)]
        figures[f"rerun_{n}_{name}_s"] = statistics.median(runs)
    return [f"fresh_{n}", f"rerun_{n}"]


if __name__ == "__main__":
    sys.exit(main())
