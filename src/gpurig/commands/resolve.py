"""`gpurig resolve`: lock stack.yml into hash-pinned requirements per variant and Python."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from rich.console import Console

from gpurig import lock, spec
from gpurig.errors import UsageError
from gpurig.loading import checked_stack


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stack", type=Path, default=spec.DEFAULT_STACK, help="spec file")
    parser.add_argument("--lock", type=Path, default=lock.DEFAULT_LOCK_DIR, help="lock folder")
    parser.add_argument(
        "--uv-args",
        metavar="TARGET",
        help="print the uv index flags of a locked target (e.g. cpu-cp311) and exit",
    )


def run(args: argparse.Namespace) -> int:
    if args.uv_args:
        target = lock.load(args.lock).targets.get(args.uv_args)
        if target is None:
            raise UsageError(f"{args.uv_args} is not a locked target: see lock/manifest.json")
        print(shlex.join(target.uv_source_args()))
        return 0
    stack = checked_stack(args.stack)
    console = Console(highlight=False, stderr=True)
    with console.status("resolving with uv"):
        locked = lock.resolve(stack, args.lock)
    for name, target in locked.targets.items():
        pushed = f", {len(target.local_wheels)} wheel(s) pushed from the controller"
        console.print(
            f"[green]locked[/green] {name}: torch {target.torch}, "
            f"{len(target.packages)} distributions{pushed if target.local_wheels else ''}"
        )
    for name, reason in locked.unavailable.items():
        console.print(f"[yellow]not available[/yellow] {name}: {reason}")
    console.print(f"wrote {args.lock}/")
    return 0
