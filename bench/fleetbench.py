"""What the sandbox benchmarks share: a throw-away fleet with its environment, timed commands
(whole, or per pyinfra operation), the deploy command lines of both front ends, copies of a
deployed host, and the figures file.

    with bench_fleet("deploy", keep=args.keep) as bench:
        hosts = bench.fleet.up(2)
        seconds = timed("gpurig deploy", gpurig_deploy([hosts[0].name]), bench.env)
        bench.figures["fresh_s"] = seconds
    bench.write(args.out)
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

from gpurig.sandbox import Fleet, SandboxHost, docker_client, docker_env, ensure_engine

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@dataclass
class Bench:
    fleet: Fleet
    state_dir: Path
    env: dict[str, str]
    figures: dict[str, Any] = field(default_factory=dict)
    images: list[str] = field(default_factory=list)  # committed here, removed at the end

    def write(self, out: Path) -> None:
        out.write_text(json.dumps(self.figures, indent=2) + "\n")
        print(json.dumps(self.figures, indent=2))
        print(f"wrote {out}")


def compile_sources(tree: Path = REPO) -> None:
    """Bytecode for a tree's sources, as `make venv` makes it. Where PYTHONDONTWRITEBYTECODE
    is set (this machine), a source edited since then would otherwise be compiled again by
    every pyinfra process the benchmark starts: about 0.3 s of each no-change run."""
    folders = [str(tree / d) for d in ("src", "bloomkit/src", "plugins") if (tree / d).is_dir()]
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0", *folders], check=True)


@contextmanager
def bench_fleet(name: str, *, keep: bool = False) -> Iterator[Bench]:
    """A fleet in a temporary state dir (removed at the end unless `keep`), with the
    environment every front end and `gpurig` command of the benchmark runs in; the working
    tree's sources compiled first."""
    ensure_engine()
    compile_sources()
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
            for tag in bench.images:
                docker_client().images.remove(tag, force=True)
            shutil.rmtree(state_dir, ignore_errors=True)


def timed(
    label: str, command: list[str], env: dict[str, str], expect: int = 0, cwd: Path = REPO
) -> float:
    """Wall seconds of `command` run in the repository (or `cwd`); a different exit status ends
    the run."""
    began = time.monotonic()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - began
    if done.returncode != expect:
        tail = (done.stdout + done.stderr)[-3000:]
        raise SystemExit(f"{label}: exit {done.returncode}, expected {expect}:\n{tail}")
    print(f"  {label}: {seconds:.1f} s", flush=True)
    return seconds


def machine_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy (every core), from /proc/stat."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # less idle, iowait


def timed_cpu(label: str, command: list[str], env: dict[str, str]) -> dict[str, float]:
    """`timed`, plus where the CPU went: the controller's processes (the command and its
    children), and the rest of the machine (sandbox hosts, the engine). On a shared machine
    the rest includes other jobs: measure when it is quiet."""
    before_self = resource.getrusage(resource.RUSAGE_CHILDREN)
    before_all = machine_cpu_s()
    wall = timed(label, command, env)
    after_self = resource.getrusage(resource.RUSAGE_CHILDREN)
    controller = (after_self.ru_utime - before_self.ru_utime) + (
        after_self.ru_stime - before_self.ru_stime
    )
    return {
        "wall_s": wall,
        "controller_cpu_s": controller,
        "rest_cpu_s": machine_cpu_s() - before_all - controller,
    }


def timed_ops(
    label: str, command: list[str], env: dict[str, str], cwd: Path = REPO
) -> tuple[float, dict[str, float]]:
    """Wall time, and seconds per pyinfra operation: pyinfra runs each operation on every host
    before the next starts, so an operation's seconds are those of its slowest host."""
    began = time.monotonic()
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert process.stdout is not None
    lines: list[str] = []
    starts: list[tuple[str, float]] = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith("--> Starting operation: "):
            starts.append((line.removeprefix("--> Starting operation: ").strip(), time.monotonic()))
        elif line.startswith("--> Results") and starts:
            starts.append(("(end)", time.monotonic()))
    code = process.wait()
    seconds = time.monotonic() - began
    if code:
        raise SystemExit(f"{label} failed (exit {code}):\n{''.join(lines)[-3000:]}")
    ops = {name: round(end - start, 1) for (name, start), (_, end) in pairwise(starts)}
    if starts:
        ops["(before the first operation)"] = round(starts[0][1] - began, 1)
    print(f"  {label}: {seconds:.1f} s", flush=True)
    return seconds, ops


def slowest(ops: dict[str, float], count: int = 6) -> dict[str, float]:
    return dict(sorted(ops.items(), key=lambda item: -item[1])[:count])


def copies(bench: Bench, host: SandboxHost, count: int) -> list[SandboxHost]:
    """`count` more hosts started from a commit of `host` (a deployed one): a fleet that
    already has the deploy's end state, for no-change runs, without installing it again."""
    client = docker_client()
    # One tag per host copied: bench_versions copies each version's host.
    tag = f"gpurig/bench-copy:{bench.fleet.state.fleet_id}-{host.name}"
    client.containers.get(host.container).commit(
        repository=tag.split(":")[0], tag=tag.split(":")[1]
    )
    bench.images.append(tag)
    return bench.fleet.up(count, image=tag)


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
