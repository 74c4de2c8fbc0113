"""`gpurig image build|smoke|render|size`: container images of the lock (images/README.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from gpurig import lock, report, spec
from gpurig.errors import GpurigError
from gpurig.loading import checked_stack


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--stack", type=Path, default=spec.DEFAULT_STACK, help="spec file")
    common.add_argument("--lock", type=Path, default=lock.DEFAULT_LOCK_DIR, help="lock folder")
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    build = sub.add_parser(
        "build", parents=[common], help="build the image of a lock target with BuildKit"
    )
    build.add_argument(
        "--variant",
        default="cpu",
        help="cpu, cuda (the spec's first CUDA variant) or a variant such as cu130 (default cpu)",
    )
    build.add_argument("--python", help="the target's Python, e.g. 3.13 (default: the first)")
    build.add_argument(
        "--base",
        metavar="IMAGE",
        help="base image (default: gpurig/base:<suite> for cpu, nvidia/cuda:<cuda>-base-... "
        "for CUDA); a mirror, or any glibc image",
    )
    build.add_argument(
        "--python-source",
        choices=["system", "uv"],
        help="Python from the base's apt, or uv's standalone build (default: from the base's OS)",
    )
    build.add_argument(
        "--tag",
        action="append",
        metavar="TAG",
        help="tag instead of gpurig/bloomkit:<target>-<hash> (repeatable)",
    )

    smoke = sub.add_parser(
        "smoke", parents=[common], help="check an image against the lock and run bloomkit smoke"
    )
    smoke.add_argument("image", metavar="IMAGE", help="image reference or id")
    smoke.add_argument(
        "--gpus",
        choices=["auto", "all", "none"],
        default="auto",
        help="pass the machine's GPUs through (auto: when the engine has the NVIDIA toolkit)",
    )
    smoke.add_argument("--require-gpu", action="store_true", help="fail without a usable GPU")
    smoke.add_argument(
        "--hf-home", type=Path, metavar="DIR", help="a Hugging Face cache to mount (read-only)"
    )
    smoke.add_argument(
        "--reports", type=Path, default=Path("reports/images"), help="where reports are kept"
    )

    render = sub.add_parser(
        "render", parents=[common], help="write images/<target>/Dockerfile from the template"
    )
    render.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 if a rendered file drifted"
    )

    size = sub.add_parser(
        "size", parents=[common], help="compute an image's size from the lock's wheel sizes"
    )
    size.add_argument("--target", action="append", help="lock target (default: every target)")
    size.add_argument(
        "--base-size",
        type=float,
        metavar="MB",
        help="base image size in MB (default: the built-in table, or the local image)",
    )


def run(args: argparse.Namespace) -> int:
    stack = checked_stack(args.stack)
    locked = lock.load(args.lock)
    if args.action == "build":
        return _build(args, stack, locked)
    if args.action == "smoke":
        return _smoke(args, stack, locked)
    if args.action == "render":
        return _render(args, stack, locked)
    return _size(args, stack, locked)


def _build(args: argparse.Namespace, stack: spec.Stack, locked: lock.Lock) -> int:
    from gpurig.images import build

    target = build.pick_target(stack, locked, args.variant, args.python)
    result = build.build(
        stack,
        locked,
        target,
        base=args.base,
        python_source=args.python_source,
        tags=args.tag,
    )
    cached = sum(step.cached for step in result.steps.values())
    print(
        f"built {', '.join(result.tags)} ({result.image_id[7:19]}): "
        f"{result.size_bytes / 1e9:.2f} GB in {result.seconds:.0f} s, "
        f"{cached} of {len(result.steps)} steps cached"
    )
    print(f"smoke-test it: gpurig image smoke {result.tags[0]}")
    return 0


def _smoke(args: argparse.Namespace, stack: spec.Stack, locked: lock.Lock) -> int:
    from gpurig.images import smoke

    gpus = {"auto": None, "all": True, "none": False}[args.gpus]
    row, path = smoke.smoke_image(
        args.image,
        stack,
        locked,
        gpus=gpus,
        require_gpu=args.require_gpu or stack.nvidia.require_gpu,
        hf_home=args.hf_home,
        reports_dir=args.reports,
    )
    ok = report.print_summary([row], Console(highlight=False))
    print(f"report: {path}")
    return 0 if ok else 1


def _render(args: argparse.Namespace, stack: spec.Stack, locked: lock.Lock) -> int:
    from gpurig.images import render

    locked.assert_fresh(stack)
    files = render.render(stack, locked)
    stale = render.drifted(files)
    stray = render.stray(files)
    if args.check:
        for path in stale:
            print(f"{path}: differs from a fresh render", file=sys.stderr)
        for path in stray:
            print(f"{path}: the lock has no such target", file=sys.stderr)
        if stale or stray:
            raise GpurigError(
                f"{len(stale) + len(stray)} image file(s) drifted: run `gpurig image render`"
            )
        print(f"{len(files)} Dockerfiles match images/Dockerfile.template and {args.lock}/")
        return 0
    for path in render.write(files):
        print(f"wrote {path}")
    for path in stray:
        (render.REPO / path).unlink()
        print(f"removed {path} (no such target in the lock)")
    if not stale and not stray:
        print(f"{len(files)} Dockerfiles already up to date")
    return 0


def _size(args: argparse.Namespace, stack: spec.Stack, locked: lock.Lock) -> int:
    from gpurig.images import sizes

    names = args.target or list(locked.targets)
    for name in names:
        target = locked.targets.get(name)
        if target is None:
            raise GpurigError(f"no target {name} in the lock (it has {', '.join(locked.targets)})")
        estimate = sizes.estimate(locked, target, base_mb=args.base_size)
        print(sizes.format_estimate(estimate))
    return 0
