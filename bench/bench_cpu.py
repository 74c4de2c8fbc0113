"""Where the whole machine's CPU goes during one fresh `gpurig deploy` and one install floor, on
identical fresh bookworm hosts: Linux perf samples every process (the controller, the hosts,
the engine) and this prints the CPU-seconds of each kind of process and, second by second, which
kinds kept the cores busy. On a 2-core machine the fresh deploy is bound by CPU: this names what
spends it, where bench_deploy only says how much.

    .venv/bin/python bench/bench_cpu.py [--out FILE]

Needs `perf` and the right to sample every CPU (root, or kernel.perf_event_paranoid <= 0).
"""

from __future__ import annotations

import argparse
import collections
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import bench_deploy
from fleetbench import REPO, bench_fleet, gpurig_deploy, machine_cpu_s, timed_ops

HZ = 197  # samples per second per CPU: a prime, off the beat of timers
# Kinds of process by their command name; anything else is "other" (the many short shell
# tools of update-ca-certificates and the probes).
KINDS = {
    "idle": ("swapper",),
    "uv": ("tokio-rt-worker", "main2", "uv"),
    "apt": ("apt-get", "dpkg", "dpkg-deb", "store", "http", "gpgv", "apt-config", "apt-key"),
    "pyinfra": ("pyinfra", "gpurig"),
    "ssh": ("sshd", "ssh", "scp", "sftp-server"),
    "python": ("python", "python3", "bloomkit"),
}
KIND_OF = {comm: kind for kind, comms in KINDS.items() for comm in comms}


def samples(data: Path) -> list[tuple[float, str, int]]:
    """(seconds, command name, pid) of every sample."""
    out = subprocess.run(
        ["perf", "script", "-i", str(data), "-F", "comm,pid,time", "-G"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = []
    for line in out.splitlines():
        *comm, pid, stamp = line.split()
        if stamp.endswith(":") and pid.isdigit():
            found.append((float(stamp[:-1]), " ".join(comm), int(pid)))
    return found


def tally(rows: list[tuple[float, str, int]]) -> dict[str, object]:
    """CPU-seconds by kind (python by process: the import check, the smoke and its warm-up are
    each one), and the busy cores of each kind, second by second."""
    start = rows[0][0]
    per_kind: collections.Counter[str] = collections.Counter()
    per_second: dict[int, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for stamp, comm, pid in rows:
        kind = KIND_OF.get(comm, "other")
        if kind == "python":
            kind = f"python {pid}"
        per_kind[kind] += 1
        per_second[int(stamp - start)][kind] += 1
    return {
        "cpu_s": {k: round(n / HZ, 2) for k, n in per_kind.most_common()},
        "busy_cores_by_second": {
            s: {k: round(n / HZ, 2) for k, n in c.most_common() if k != "idle"}
            for s, c in sorted(per_second.items())
        },
    }


def recorded(data: Path, run: Callable[[], object]) -> tuple[float, float]:
    """Seconds of `run()`, and the machine's CPU-seconds in them, with every CPU sampled into
    `data`."""
    perf = subprocess.Popen(
        ["perf", "record", "-a", "-q", "-F", str(HZ), "-o", str(data)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1)  # perf is sampling before the run starts
    began, cpu_before = time.monotonic(), machine_cpu_s()
    run()
    seconds, cpu = time.monotonic() - began, machine_cpu_s() - cpu_before
    perf.send_signal(signal.SIGINT)
    perf.wait(timeout=60)
    return seconds, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results-cpu.json")
    args = parser.parse_args()
    if shutil.which("perf") is None:
        print("bench_cpu needs Linux perf (apt-get install linux-perf)", file=sys.stderr)
        return 2
    with bench_fleet("cpu") as bench:
        ours, floor = bench.fleet.up(2)
        files, _ = bench_deploy.staged_files(bench.state_dir)
        for name, run in (
            ("gpurig", lambda: timed_ops("gpurig deploy", gpurig_deploy([ours.name]), bench.env)),
            ("floor", lambda: bench_deploy.floor(bench.fleet, floor, files)),
        ):
            data = bench.state_dir / f"{name}.perf"
            seconds, cpu = recorded(data, run)
            figures = tally(samples(data))
            figures |= {"wall_s": round(seconds, 1), "machine_cpu_s": round(cpu, 1)}
            bench.figures[name] = figures
            print(name, figures["cpu_s"], flush=True)
    bench.write(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
