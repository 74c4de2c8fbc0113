"""Deploy benchmarks on sandbox hosts, all measured in one run on identical fresh hosts:

1. fresh host to green smoke with `gpurig deploy`, against the install floor: the same lock
   installed by a bare `uv pip install` (files copied with OpenSSH scp), then `bloomkit smoke`;
   goal: gpurig <= 1.25x the floor. `--pairs` pairs in turns (gpurig first, then the floor
   first, ...): whichever goes first downloads through a cold proxy and meets other load;
2. the route the blog posts teach, as a shell script: apt's python3-pip and python3-venv, a
   virtualenv, `pip install` of the same packages, then `bloomkit smoke`;
3. a no-change re-run (`--skip-smoke`) on one host, then on four (goals: <= 3 s; four hosts
   within 1.5x of one); the other three are copies of the deployed host (fleetbench.copies).

The fleet figures (16 hosts, 8 fresh) are bench/bench_fleet.py's.

`--offline FOLDER`: both sides install from a wheelhouse of the lock's wheels (filled once by
gpurig's own download, then reused): gpurig with `install.offline` (it pushes every wheel),
the floor with every wheel copied and `--no-index`. No download goes through the proxy, whose
latency otherwise varies the figures of both sides from run to run.

    .venv/bin/python bench/bench_deploy.py [--out FILE] [--pairs 2] [--skip-blog] [--keep]
        [--offline FOLDER]

Needs a Docker engine (`gpurig sandbox engine`); hosts live in a temporary state dir and are
removed at the end (unless --keep). Prints the figures and writes them as JSON.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml
from fleetbench import (
    REPO,
    bench_fleet,
    copies,
    gpurig_deploy,
    machine_cpu_s,
    slowest,
    timed,
    timed_ops,
)

from gpurig import bloomkit_wheel, lock, spec, wheelhouse
from gpurig.lock import _uv
from gpurig.sandbox import Fleet, SandboxHost

TARGET = "cpu-cp311"  # what a GPU-less bookworm host gets
RERUNS = 5


def scp(fleet: Fleet, host: SandboxHost, files: list[Path], folder: str) -> None:
    state = fleet.state
    fleet.ssh(host, f"mkdir -p {folder}")  # as the SSH user, who copies into it
    subprocess.run(
        [
            "scp", "-q", "-P", str(host.port), "-i", str(state.key_file),
            "-o", f"UserKnownHostsFile={state.known_hosts_file}",
            "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes",
            *map(str, files), f"{host.user}@{host.hostname}:{folder}/",
        ],
        check=True,
    )  # fmt: skip


def remote(fleet: Fleet, host: SandboxHost, script: str) -> None:
    code, out = fleet.ssh(host, f"sudo -n sh -c {shlex.quote(script)}", timeout=3600)
    if code:
        raise SystemExit(f"on {host.name}: exit {code}\n{out[-3000:]}")


def staged_files(tmp: Path) -> tuple[list[Path], str]:
    """What the floor and the blog route need on the host, and the requirements text."""
    stack = spec.load(REPO / "stack.yml")
    locked = lock.load(REPO / "lock")
    target = locked.targets[TARGET]
    wheel = bloomkit_wheel.build()
    requirements = tmp / "requirements.txt"
    requirements.write_text(
        locked.requirements(target).read_text().rstrip("\n") + "\n" + wheel.requirement + "\n"
    )
    local = [Path(folder) / name for name, (folder, _) in target.local_wheels.items()]
    ca = Path(stack.network.ca_bundle or "/etc/ssl/certs/ca-certificates.crt")
    ca_copy = tmp / "ca.pem"
    ca_copy.write_bytes(ca.read_bytes())
    return [Path(_uv()), wheel.path, requirements, ca_copy, *local], target.torch


def floor(
    fleet: Fleet, host: SandboxHost, files: list[Path], offline: bool = False
) -> tuple[float, float]:
    """Seconds of the whole floor, and of its smoke test alone."""
    index = "--no-index" if offline else "--index-url https://pypi.org/simple"
    began = time.monotonic()
    scp(fleet, host, files, "/tmp/floor")
    remote(
        fleet,
        host,
        "set -e; cd /tmp/floor; export SSL_CERT_FILE=/tmp/floor/ca.pem; "
        "./uv venv --quiet --python /usr/bin/python3 /opt/floor; "
        "./uv pip install --quiet --python /opt/floor/bin/python --require-hashes "
        f"-r requirements.txt {index} --find-links /tmp/floor",
    )
    smoke_began = time.monotonic()
    remote(fleet, host, "/opt/floor/bin/bloomkit smoke --json /tmp/floor/smoke.json --model tiny")
    seconds = time.monotonic() - began
    smoke = time.monotonic() - smoke_began
    print(f"  install floor (scp + uv pip install + smoke): {seconds:.1f} s", flush=True)
    return seconds, smoke


def offline_stack(folder: Path, state_dir: Path) -> tuple[Path, list[Path]]:
    """stack.yml with install.offline from `folder`, and the wheelhouse's wheels of TARGET
    (gpurig.wheelhouse downloads what the folder lacks, once)."""
    text = yaml.safe_load((REPO / "stack.yml").read_text())
    text["install"] = {**text.get("install", {}), "offline": True, "wheelhouse": str(folder)}
    path = state_dir / "stack-offline.yml"
    path.write_text(yaml.safe_dump(text))
    stack, locked = spec.load(path), lock.load(REPO / "lock")
    chosen = wheelhouse.offline_wheels(stack, locked, locked.targets[TARGET])
    return path, [Path(src) for src, _ in chosen.values()]


def blog_route(fleet: Fleet, host: SandboxHost, files: list[Path], torch: str) -> float:
    stack = spec.load(REPO / "stack.yml")
    pins = " ".join(f"{name}=={pin}" for name, pin in stack.packages.items())
    wheel = next(f for f in files if f.name.startswith("bloomkit-"))
    began = time.monotonic()
    scp(fleet, host, files, "/tmp/blog")
    remote(
        fleet,
        host,
        "set -e; export DEBIAN_FRONTEND=noninteractive PIP_CERT=/tmp/blog/ca.pem; "
        "apt-get update -q; apt-get install -y -q python3-pip python3-venv; "
        "python3 -m venv /opt/blog; "
        f"/opt/blog/bin/pip install -q --find-links /tmp/blog torch=={torch}; "
        f"/opt/blog/bin/pip install -q {pins}; "
        f"/opt/blog/bin/pip install -q /tmp/blog/{wheel.name}; "
        "/opt/blog/bin/bloomkit smoke --json /tmp/blog/smoke.json --model tiny",
    )
    seconds = time.monotonic() - began
    print(f"  blog route (apt pip + venv + pip install + smoke): {seconds:.1f} s", flush=True)
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results-deploy.json")
    parser.add_argument("--pairs", type=int, default=2, help="gpurig and floor runs, in turns")
    parser.add_argument("--skip-blog", action="store_true", help="skip the blog-post route")
    parser.add_argument("--keep", action="store_true", help="keep the sandbox hosts")
    parser.add_argument("--offline", type=Path, help="a wheelhouse both sides install from")
    args = parser.parse_args()
    with bench_fleet("deploy", keep=args.keep) as bench:
        fleet, env, figures = bench.fleet, bench.env, bench.figures
        print("starting identical fresh bookworm hosts", flush=True)
        hosts = fleet.up(2 * args.pairs + (0 if args.skip_blog else 1))
        files, torch = staged_files(bench.state_dir)
        if args.offline:
            stack_file, wheels = offline_stack(args.offline.absolute(), bench.state_dir)
            env = {**env, "GPURIG_STACK": str(stack_file)}
            files += [w for w in wheels if w.name not in {f.name for f in files}]
            figures["offline"] = True
        print("fresh host to green smoke, gpurig and the floor in turns:", flush=True)
        ours: list[float] = []
        floors: list[float] = []
        for i in range(args.pairs):
            mine, bare = hosts[2 * i], hosts[2 * i + 1]
            for turn in ("gpurig", "floor") if i % 2 == 0 else ("floor", "gpurig"):
                # The whole machine's CPU (controller, host, engine): on 2 cores the fresh
                # path is CPU-bound, so the CPU each side spends bounds the ratio.
                cpu_before = machine_cpu_s()
                if turn == "floor":
                    seconds, smoke = floor(fleet, bare, files, offline=bool(args.offline))
                    floors.append(seconds)
                    figures.setdefault("fresh_floor_smoke_s", []).append(smoke)
                else:
                    seconds, ops = timed_ops("gpurig deploy", gpurig_deploy([mine.name]), env)
                    ours.append(seconds)
                    figures.setdefault("fresh_gpurig_slowest_ops_s", []).append(slowest(ops))
                cpu = round(machine_cpu_s() - cpu_before, 1)
                figures.setdefault(f"fresh_{turn}_machine_cpu_s", []).append(cpu)
                print(f"    machine CPU: {cpu} s", flush=True)
        first = hosts[0]
        figures |= {
            "fresh_gpurig_runs_s": ours,
            "fresh_floor_runs_s": floors,
            "fresh_gpurig_s": statistics.median(ours),
            "fresh_floor_s": statistics.median(floors),
            "fresh_ratio": statistics.median(ours) / statistics.median(floors),
        }
        if not args.skip_blog:
            figures["fresh_blog_s"] = blog_route(fleet, hosts[-1], files, torch)
            figures["blog_over_gpurig"] = figures["fresh_blog_s"] / figures["fresh_gpurig_s"]
        more = [h.name for h in copies(bench, first, 3)]
        # One host and four hosts in turns, so that both see the same load on a shared machine.
        print("no-change re-runs, one host and four hosts in turns:", flush=True)
        one, four = [], []
        for i in range(RERUNS):
            command = gpurig_deploy([first.name], "--skip-smoke")
            one.append(timed(f"1 host, run {i + 1}", command, env))
            command = gpurig_deploy([first.name, *more], "--skip-smoke")
            four.append(timed(f"4 hosts, run {i + 1}", command, env))
        figures["rerun_1_host_s"] = statistics.median(one)
        figures["rerun_4_hosts_s"] = statistics.median(four)
        figures["rerun_4_over_1"] = figures["rerun_4_hosts_s"] / figures["rerun_1_host_s"]
    bench.write(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
