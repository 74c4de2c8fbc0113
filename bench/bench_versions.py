"""Two versions of gpurig side by side, in one run on identical fresh bookworm hosts, so that a
change's effect is measured under the same load (this machine is shared):

1. fresh host to green smoke, `--pairs` pairs in turns (before, after; then after, before...);
2. no-change re-runs (`--skip-smoke`) of one converged host, the two versions in turns, each
   on the host it deployed (the versions' bloomkit wheels may differ: on one host every run
   would swap venvs);
3. with `--fleet N`, no-change re-runs of N hosts too (each version's host and N-1 copies of
   it, as bench_fleet makes them), in the same turns: each version's N-host/1-host ratio;
4. with `--redeploys R`, R re-deploys with the smoke test (what `gpurig deploy` does on a
   converged host by default), in turns: the whole run and the smoke's seconds.

    .venv/bin/python bench/bench_versions.py --before REV [--pairs 2] [--runs 5] [--fleet N]
        [--redeploys R] [--out FILE]

`--before` is a git revision of this repository: `git archive` puts its tree in a temporary
folder, whose src/ goes first on PYTHONPATH for its runs (the same venv, so the same pyinfra).
The "after" version is this working tree.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from fleetbench import (
    REPO,
    bench_fleet,
    compile_sources,
    copies,
    gpurig_deploy,
    slowest,
    timed,
    timed_ops,
)


def checkout(revision: str, into: Path) -> Path:
    archive = subprocess.run(
        ["git", "archive", "--format=tar", revision], cwd=REPO, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    compile_sources(into)  # as `make venv` does for the working tree
    return into


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="git revision to compare with")
    parser.add_argument("--pairs", type=int, default=2, help="fresh deploys of each version")
    parser.add_argument("--runs", type=int, default=5, help="no-change runs of each version")
    parser.add_argument("--fleet", type=int, default=0, help="hosts of a no-change fleet run")
    parser.add_argument("--redeploys", type=int, default=0, help="re-deploys with the smoke")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results-versions.json")
    args = parser.parse_args()
    if args.pairs < 1:
        parser.error("--pairs must be at least 1: the later runs use the first pair's hosts")
    with bench_fleet("versions") as bench, tempfile.TemporaryDirectory() as tmp:
        old = checkout(args.before, Path(tmp))
        env = bench.env
        old_env = {**env, "PYTHONPATH": str(old / "src")}
        versions = {"before": (old, old_env), "after": (REPO, env)}
        figures = bench.figures
        figures["before"] = args.before
        hosts = bench.fleet.up(2 * args.pairs)
        fresh: dict[str, list[float]] = {"before": [], "after": []}
        for i in range(args.pairs):
            order = ("before", "after") if i % 2 == 0 else ("after", "before")
            for j, version in enumerate(order):
                tree, version_env = versions[version]
                command = gpurig_deploy([hosts[2 * i + j].name])
                seconds, ops = timed_ops(f"fresh, {version}", command, version_env, cwd=tree)
                fresh[version].append(seconds)
                figures.setdefault(f"fresh_{version}_slowest_ops_s", []).append(slowest(ops))
        own = {"before": hosts[0], "after": hosts[1]}  # pair 0: each version's own host
        fleets = {version: [host.name] for version, host in own.items()}
        if args.fleet > 1:
            for version, host in own.items():
                fleets[version] += [h.name for h in copies(bench, host, args.fleet - 1)]
        rerun: dict[str, list[float]] = {"before": [], "after": []}
        rerun_fleet: dict[str, list[float]] = {"before": [], "after": []}
        for i in range(args.runs):
            for version in ("before", "after") if i % 2 == 0 else ("after", "before"):
                tree, version_env = versions[version]
                command = gpurig_deploy([own[version].name], "--skip-smoke")
                rerun[version].append(
                    timed(f"no change, {version}", command, version_env, cwd=tree)
                )
                if args.fleet > 1:
                    label = f"no change, {args.fleet} hosts, {version}"
                    command = gpurig_deploy(fleets[version], "--skip-smoke")
                    rerun_fleet[version].append(timed(label, command, version_env, cwd=tree))
        redeploy: dict[str, list[float]] = {"before": [], "after": []}
        smoke: dict[str, list[float]] = {"before": [], "after": []}
        for i in range(args.redeploys):
            for version in ("before", "after") if i % 2 == 0 else ("after", "before"):
                tree, version_env = versions[version]
                command = gpurig_deploy([own[version].name])
                label = f"re-deploy with the smoke, {version}"
                seconds, ops = timed_ops(label, command, version_env, cwd=tree)
                redeploy[version].append(seconds)
                smoke[version].append(next(s for op, s in ops.items() if "bloomkit smoke" in op))
        runs_by_name = [("fresh", fresh), ("rerun", rerun)]
        if args.redeploys:
            runs_by_name += [("redeploy", redeploy), ("redeploy_smoke", smoke)]
        if args.fleet > 1:
            runs_by_name.append((f"rerun_{args.fleet}_hosts", rerun_fleet))
            for version in ("before", "after"):
                one = statistics.median(rerun[version])
                many = statistics.median(rerun_fleet[version])
                figures[f"rerun_{args.fleet}_over_1_{version}"] = many / one
        for name, runs in runs_by_name:
            figures[f"{name}_runs_s"] = runs
            before, after = statistics.median(runs["before"]), statistics.median(runs["after"])
            figures[f"{name}_before_s"], figures[f"{name}_after_s"] = before, after
            figures[f"{name}_after_over_before"] = after / before
        figures["load_average_end"] = os.getloadavg()
    bench.write(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
