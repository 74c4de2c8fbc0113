"""What the sandbox benchmarks share: a throw-away fleet with its environment, timed commands,
the deploy command lines of both front ends, and the figures file.

    with bench_fleet("deploy", keep=args.keep) as bench:
        hosts = bench.fleet.up(2)
        seconds = timed("gpurig deploy", gpurig_deploy([hosts[0].name]), bench.env)
        bench.figures["fresh_s"] = seconds
    bench.write(args.out)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpurig.sandbox import Fleet, docker_env, ensure_engine

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@dataclass
class Bench:
    fleet: Fleet
    state_dir: Path
    env: dict[str, str]
    figures: dict[str, Any] = field(default_factory=dict)

    def write(self, out: Path) -> None:
        out.write_text(json.dumps(self.figures, indent=2) + "\n")
        print(json.dumps(self.figures, indent=2))
        print(f"wrote {out}")


@contextmanager
def bench_fleet(name: str, *, keep: bool = False) -> Iterator[Bench]:
    """A fleet in a temporary state dir (removed at the end unless `keep`), with the
    environment every front end and `gpurig` command of the benchmark runs in."""
    ensure_engine()
    state_dir = Path(tempfile.mkdtemp(prefix=f"gpurig-bench-{name}-"))
    fleet = Fleet(state_dir)
    env = {
        **os.environ,
        **docker_env(),
        **fleet.env(),
        "GPURIG_REPORTS_DIR": str(state_dir / "reports"),
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
    }
    for inherited in ("GPURIG_HOSTS", "GPURIG_CLUSTER"):  # they would win over the sandbox
        env.pop(inherited, None)
    figures = {"when": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count()}
    bench = Bench(fleet, state_dir, env, figures)
    try:
        yield bench
    finally:
        if not keep:
            fleet.down()
            shutil.rmtree(state_dir, ignore_errors=True)


def timed(label: str, command: list[str], env: dict[str, str], expect: int = 0) -> float:
    """Wall seconds of `command` run in the repository; a different exit status ends the run."""
    began = time.monotonic()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - began
    if done.returncode != expect:
        tail = (done.stdout + done.stderr)[-3000:]
        raise SystemExit(f"{label}: exit {done.returncode}, expected {expect}:\n{tail}")
    print(f"  {label}: {seconds:.1f} s", flush=True)
    return seconds


def gpurig_deploy(hosts: list[str], *args: str) -> list[str]:
    """`gpurig deploy` (pyinfra) limited to `hosts`."""
    command = [sys.executable, "-m", "gpurig.cli", "deploy", *args, "--"]
    for name in hosts:
        command += ["--limit", name]
    return command


def ansible_deploy(inventory: Path, hosts: list[str], *args: str) -> list[str]:
    """The Ansible front end limited to `hosts`."""
    return [
        str(BIN / "ansible-playbook"), "-i", str(inventory), "playbooks/gpu.yml",
        "--limit", ",".join(hosts), *args,
    ]  # fmt: skip
