"""`gpurig check`: validate stack.yml against its schema and the compatibility table."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from gpurig import compat, lock, spec
from gpurig.errors import GpurigError
from gpurig.loading import checked_stack


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stack", type=Path, default=spec.DEFAULT_STACK, help="spec file")
    parser.add_argument("--lock", type=Path, default=lock.DEFAULT_LOCK_DIR, help="lock folder")


def run(args: argparse.Namespace) -> int:
    stack = checked_stack(args.stack)
    console = Console(highlight=False)
    console.print(f"[bold]{args.stack}[/bold] is valid")
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_row("python", ", ".join(stack.python))
    for variant in stack.torch.variants:
        cuda = compat.cuda_version(variant)
        needs = f"CUDA {cuda}, driver >= {compat.min_driver_text(variant)}" if cuda else "no GPU"
        release = stack.torch.version_of(variant)
        arches = compat.arches(release, variant)
        cc = f", sm {arches[0]}-{arches[-1]}" if arches else ""
        table.add_row(f"torch {variant}", f"{release} ({needs}{cc})")
    for name, pin in stack.packages.items():
        table.add_row(name, pin)
    if stack.extra_packages:
        table.add_row("extra", ", ".join(stack.extra_packages))
    table.add_row("driver", f"branch {stack.nvidia.driver_branch}")
    table.add_row("host", f"user {stack.host.user}, venv {stack.host.venv}")
    table.add_row("install", "offline wheelhouse" if stack.install.offline else "from indexes")
    try:
        locked = lock.load(args.lock)
        locked.assert_fresh(stack)
        status = f"fresh: {', '.join(locked.targets)}"
        if locked.unavailable:
            status += f" (not available: {', '.join(locked.unavailable)})"
    except GpurigError as error:
        status = f"[yellow]{error}[/yellow]"
    table.add_row("lock", status)
    console.print(table)
    return 0
