"""`gpurig sandbox`: the Docker engine, base images and sandbox hosts."""

from __future__ import annotations

import argparse
import time

from rich.console import Console
from rich.table import Table

from gpurig.errors import GpurigError
from gpurig.sandbox import doubles
from gpurig.sandbox.boot import INITS
from gpurig.sandbox.engine import ensure_engine, stop_engine
from gpurig.sandbox.hosts import Fleet
from gpurig.sandbox.rootfs import KINDS, SUITES, ensure_base_image
from gpurig.sandbox.state import SandboxHost

console = Console(highlight=False)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    engine = actions.add_parser("engine", help="use the Docker engine that answers, or start ours")
    engine.add_argument("--stop", action="store_true", help="stop our engine (only ours)")

    up = actions.add_parser("up", help="start N more hosts like fresh cloud VMs")
    up.add_argument("count", nargs="?", type=int, default=1, metavar="N", help="default: 1")
    up.add_argument("--os", choices=SUITES, default="bookworm", help="Debian suite")
    up.add_argument(
        "--pretend-gpu",
        metavar="SKU",
        help=f"test double: lspci shows this NVIDIA GPU ({', '.join(doubles.GPU_SKUS)})",
    )
    up.add_argument(
        "--pretend-secure-boot", action="store_true", help="test double: mokutil says it is on"
    )
    up.add_argument(
        "--init",
        choices=INITS,
        default="systemd",
        help="systemd: boot like a cloud VM (default); none: sshd alone, as images are tested",
    )
    up.add_argument(
        "--first-boot-apt",
        action="store_true",
        help="start apt-daily and unattended-upgrades at boot (they hold the dpkg lock)",
    )
    up.add_argument(
        "--pretend-driver",
        metavar="VERSION",
        help="test double (with --pretend-gpu, systemd): an NVIDIA module of this version "
        "loads at each boot; nvidia-smi and modinfo answer for it",
    )

    actions.add_parser("list", help="show this state dir's hosts")
    actions.add_parser("down", help="remove this state dir's hosts and files")

    image = actions.add_parser("image", help="build (or find cached) a Debian base image")
    image.add_argument("--os", choices=SUITES, default="bookworm", help="Debian suite")
    image.add_argument("--kind", choices=KINDS, default="base", help="base: for Dockerfiles")
    image.add_argument("--rebuild", action="store_true", help="build even if cached")


def run(args: argparse.Namespace) -> int:
    action: str = args.action
    if action == "engine":
        return _engine(stop=args.stop)
    if action == "image":
        built = ensure_base_image(args.os, args.kind, rebuild=args.rebuild)
        how = f"built in {built.built_in_s:.0f} s" if built.built_in_s else "cached"
        console.print(f"{built.tag} ({how}, recipe {built.recipe})")
        return 0
    fleet = Fleet()
    if action == "up":
        began = time.monotonic()
        started = fleet.up(
            args.count,
            os=args.os,
            pretend_gpu=args.pretend_gpu,
            pretend_secure_boot=args.pretend_secure_boot,
            init=args.init,
            first_boot_apt=args.first_boot_apt,
            pretend_driver=args.pretend_driver,
        )
        console.print(f"started {len(started)} host(s) in {time.monotonic() - began:.1f} s")
        _print_fleet(fleet)
        return 0
    if action == "list":
        _print_fleet(fleet)
        return 0
    removed = fleet.down()
    console.print(f"removed {removed} container(s) and the files in {fleet.state_dir}")
    return 0


def _engine(*, stop: bool) -> int:
    if stop:
        pid = stop_engine()
        console.print(f"stopped dockerd (pid {pid})" if pid else "our engine was not running")
        return 0
    status = ensure_engine()
    if status.started_in_s is not None:
        console.print(f"started dockerd (pid {status.pid}) in {status.started_in_s:.1f} s")
    elif status.ours:
        console.print(f"our dockerd (pid {status.pid}) is running")
    else:
        console.print(f"using the engine at {status.url}")
    console.print(f"export DOCKER_HOST={status.url}")
    return 0


def _print_fleet(fleet: Fleet) -> None:
    hosts = fleet.hosts
    if not hosts:
        console.print(f"no sandbox hosts in {fleet.state_dir}: start some with `gpurig sandbox up`")
        return
    try:
        states = fleet.container_states()
    except GpurigError as error:
        console.print(f"[yellow]{error}[/]")
        states = {}
    table = Table("name", "address", "user", "os", "init", "pretend", "container", box=None)
    for host in hosts:
        table.add_row(
            host.name,
            host.address,
            host.user,
            host.os,
            host.init,
            _pretend(host),
            states.get(host.name, "missing" if states else "?"),
        )
    console.print(table)
    state = fleet.state
    first = hosts[0]
    console.print(f"\nstate dir: {state.path} (Ansible: {state.ansible_inventory_file.name})")
    console.print(
        f"ssh -i {state.key_file} -o UserKnownHostsFile={state.known_hosts_file} "
        f"-o StrictHostKeyChecking=yes -p {first.port} {first.user}@{first.hostname}",
        soft_wrap=True,
    )


def _pretend(host: SandboxHost) -> str:
    parts = [host.pretend_gpu or ""] + (["secure-boot"] if host.pretend_secure_boot else [])
    return " ".join(p for p in parts if p) or "-"
