"""Bench: the CPU image's size, its cold build, the rebuild after a bloomkit code change, and the
CUDA image's size (computed from the lock; with --cuda-on-debian also measured).

    python bench/bench_images.py [--cold] [--runs 3] [--cuda-on-debian] [--json FILE]

--cold empties BuildKit's cache on the engine (`docker builder prune --all`: the uv download
cache too) and removes the CPU image first, so the first build pays every download and compile;
the debootstrap base gpurig/base:<suite> is kept (bench_sandbox.py --cold times that). On an
engine others use, point it at a scratch one: GPURIG_ENGINE_DIR=/tmp/bench-engine.
--cuda-on-debian builds the first CUDA target on gpurig/base:<suite> (no NVIDIA base here),
which measures the venv the CUDA image carries; it downloads ~2.8 GB of wheels.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from gpurig import lock, spec
from gpurig.images import build, sizes
from gpurig.images.testing import touched_bloomkit_wheel
from gpurig.sandbox.engine import docker_client, docker_env, ensure_engine

REPO = Path(__file__).resolve().parents[1]
TOUCHED_TAG = "gpurig/bloomkit:bench-touched-bloomkit"


def quiet(line: str) -> None:
    pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true", help="empty BuildKit's cache first")
    parser.add_argument("--runs", type=int, default=3, help="bloomkit-change rebuilds to time")
    parser.add_argument("--cuda-on-debian", action="store_true", help="build CUDA on Debian")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    os.chdir(REPO)
    ensure_engine()
    client = docker_client()
    stack = spec.load(REPO / "stack.yml")
    locked = lock.load(REPO / "lock")
    target = build.pick_target(stack, locked, "cpu")
    results: dict[str, object] = {"target": target.name}

    if args.cold:
        for image in client.images.list(name=build.REPOSITORY):
            if any(tag.startswith(f"{build.REPOSITORY}:{target.name}-") for tag in image.tags):
                client.images.remove(image.id, force=True)
        env = {**os.environ, **docker_env(), "DOCKER_BUILDKIT": "1"}
        prune = [build.buildkit_client(), "builder", "prune", "--all", "--force"]
        subprocess.run(prune, env=env, check=True, capture_output=True)
    first = build.build(stack, locked, target, echo=quiet)
    label = "cold build" if args.cold else "build (BuildKit cache as found)"
    results["cpu_build_s" if not args.cold else "cpu_cold_build_s"] = round(first.seconds, 1)
    results["cpu_image_bytes"] = first.size_bytes
    print(f"{target.name} {label}: {first.seconds:.1f} s, image {first.size_bytes / 1e9:.2f} GB")

    noop = build.build(stack, locked, target, echo=quiet)
    results["cpu_rebuild_unchanged_s"] = round(noop.seconds, 1)
    print(f"{target.name} rebuild, nothing changed: {noop.seconds:.1f} s")

    wheel_s, build_s = [], []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="gpurig-bench-") as scratch:
            began = time.monotonic()
            wheel = touched_bloomkit_wheel(Path(scratch))
            wheel_s.append(time.monotonic() - began)
            again = build.build(stack, locked, target, tags=[TOUCHED_TAG], wheel=wheel, echo=quiet)
            assert again.step("uv pip sync").cached, "the dependency layer was rebuilt"
            build_s.append(again.seconds)
    client.images.remove(TOUCHED_TAG)
    total = [w + b for w, b in zip(wheel_s, build_s, strict=True)]
    results["cpu_rebuild_bloomkit_change_s"] = [round(t, 1) for t in build_s]
    results["bloomkit_wheel_build_s"] = [round(t, 1) for t in wheel_s]
    print(
        f"{target.name} rebuild after a bloomkit code change: median {statistics.median(total):.1f}"
        f" s (wheel {statistics.median(wheel_s):.1f} s + image {statistics.median(build_s):.1f} s)"
    )

    for name, cuda in locked.targets.items():
        if cuda.variant == "cpu":
            continue
        estimate = sizes.estimate(locked, cuda)
        results[f"{name}_computed_bytes"] = estimate.total
        print(sizes.format_estimate(estimate))
    check = sizes.estimate(locked, target)
    results["cpu_computed_bytes"] = check.total
    print(
        f"(the same computation for {target.name}: {check.total / 1e9:.2f} GB; "
        f"built: {first.size_bytes / 1e9:.2f} GB)"
    )

    if args.cuda_on_debian:
        cuda = build.pick_target(stack, locked, "cuda")
        suite = {"3.11": "bookworm", "3.13": "trixie"}[cuda.python]
        measured = build.build(
            stack, locked, cuda, base=f"gpurig/base:{suite}", tags=[f"{build.REPOSITORY}:"
            f"{cuda.name}-on-{suite}"], echo=quiet
        )  # fmt: skip
        results[f"{cuda.name}_on_{suite}_bytes"] = measured.size_bytes
        results[f"{cuda.name}_on_{suite}_build_s"] = round(measured.seconds, 1)
        print(
            f"{cuda.name} built on gpurig/base:{suite}: {measured.size_bytes / 1e9:.2f} GB "
            f"in {measured.seconds:.0f} s"
        )
    print(json.dumps(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
