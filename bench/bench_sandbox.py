"""Bench: `gpurig sandbox up 1` from a cached image (median of 3), and with --cold the first
base image build (debootstrap + import, then the sandbox layer).

    python bench/bench_sandbox.py [--os bookworm|trixie] [--init systemd|none] [--runs 3] [--cold]

--cold deletes the cached images and debootstrap's package cache for the suite first, so it
measures what a fresh machine pays. On an engine others are using, point it at a scratch one:
GPURIG_ENGINE_DIR=/tmp/bench-engine python bench/bench_sandbox.py --cold (it starts that engine;
stop it afterwards with GPURIG_ENGINE_DIR=/tmp/bench-engine gpurig sandbox engine --stop).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from gpurig.sandbox import Fleet, ensure_base_image, ensure_engine
from gpurig.sandbox.boot import INITS
from gpurig.sandbox.paths import cache_home
from gpurig.sandbox.rootfs import SUITES, remove_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--os", choices=SUITES, default="bookworm")
    parser.add_argument("--init", choices=INITS, default="systemd", help="what the hosts boot")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cold", action="store_true", help="time the first base image build")
    args = parser.parse_args()

    ensure_engine()
    results: dict[str, object] = {"os": args.os, "init": args.init}
    if args.cold:
        for kind in ("sandbox", "base"):
            remove_image(args.os, kind)
        shutil.rmtree(cache_home() / "debootstrap" / args.os, ignore_errors=True)
        base = ensure_base_image(args.os, "base")
        sandbox = ensure_base_image(args.os, "sandbox")
        results["first_base_build_s"] = round(base.built_in_s or 0.0, 1)
        results["first_sandbox_layer_s"] = round(sandbox.built_in_s or 0.0, 1)
        print(f"first build gpurig/base:{args.os}: {base.built_in_s:.1f} s")
        print(f"first build gpurig/sandbox:{args.os} (layer on base): {sandbox.built_in_s:.1f} s")
    else:
        ensure_base_image(args.os, "sandbox")  # cached from here on; not part of the timing

    timings = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="gpurig-bench-") as scratch:
            fleet = Fleet(Path(scratch) / "fleet")
            began = time.monotonic()
            fleet.up(1, os=args.os, init=args.init)
            timings.append(time.monotonic() - began)
            fleet.down()
    results["up_1_cached_s"] = [round(t, 2) for t in timings]
    median = statistics.median(timings)
    results["up_1_cached_median_s"] = round(median, 2)
    print(f"sandbox up 1 ({args.os}, init {args.init}, cached image): median {median:.2f} s")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
