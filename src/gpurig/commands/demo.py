"""`gpurig demo` (`make demo`): a sandbox host unless one runs, the deploy, the fleet summary."""

from __future__ import annotations

import argparse

from rich.console import Console

from gpurig.commands import deploy
from gpurig.sandbox import Fleet, ensure_engine


def add_arguments(parser: argparse.ArgumentParser) -> None:
    deploy.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    console = Console(highlight=False, stderr=True)
    ensure_engine()
    fleet = Fleet()
    running = [name for name, status in fleet.container_states().items() if status == "running"]
    if running:
        console.print(f"sandbox host(s) running: {', '.join(sorted(running))}")
    else:
        console.print("starting a sandbox host (`gpurig sandbox up 1`)")
        started = fleet.up(1)
        console.print(f"started {', '.join(h.name for h in started)}")
    return deploy.deploy(args)
