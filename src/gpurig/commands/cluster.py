"""`gpurig cluster`: the training clusters of an inventory, and runs across all their nodes.

    gpurig cluster list  [-i INVENTORY] [--group NAME]
    gpurig cluster smoke [-i INVENTORY] [--group NAME] [--quick] [--timeout S] [-- OPTIONS]
    gpurig cluster run   [-i INVENTORY] [--group NAME] [--timeout S] -- finetune --data ...

`smoke` and `run` start /usr/local/bin/gpurig-launch on every member at once, over SSH
(paramiko; host keys strictly from known_hosts, as the deploy checks them), as the service user.
Nothing waits on a lost node: members are reached first (an unreachable one is named and
nothing starts), each one's cluster.env is checked against the inventory, and once a node fails
or drops its connection the others get a short grace, then their launch is ended by its process
id. A deadline bounds the whole run. `smoke` then fetches every rank's report to
reports/cluster/<group>/ and prints the fleet verdict (reports/cluster/<group>/cluster.json).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from rich.console import Console

from gpurig import cluster
from gpurig.cluster.report import fleet_record, print_outcome, rank_reports, save
from gpurig.cluster.run import run_on_cluster
from gpurig.cluster.transport import SshRemote
from gpurig.deploys import ENV_REPORTS, reports_dir
from gpurig.errors import GpurigError, UsageError

INVENTORY = "inventory.py"
DEFAULT_TIMEOUT_S = 900

console = Console(highlight=False, soft_wrap=True)


# --- the command -------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="the inventory's clusters, nodes and rendezvous")
    smoke = actions.add_parser("smoke", help="bloomkit smoke --distributed on every member")
    run = actions.add_parser("run", help="any bloomkit command on every member (after --)")
    for sub in (listing, smoke, run):
        # An option, as for `gpurig deploy`: every positional goes to bloomkit.
        sub.add_argument(
            "-i", "--inventory", default=INVENTORY, help=f"pyinfra inventory ({INVENTORY})"
        )
        sub.add_argument("--group", help="the cluster (NAME or cluster_NAME) when there are many")
    for sub in (smoke, run):
        sub.add_argument(
            "--timeout",
            type=int,
            default=DEFAULT_TIMEOUT_S,
            help=f"seconds for the whole run (default {DEFAULT_TIMEOUT_S})",
        )
        sub.add_argument(
            "--user", help="service user the launch runs as (default: stack.yml host.user)"
        )
    smoke.add_argument("--quick", action="store_true", help="bloomkit smoke --quick")
    smoke.add_argument(
        "--reports", type=Path, help=f"report folder (default: ${ENV_REPORTS} or reports)"
    )
    smoke.add_argument("bloomkit_args", nargs="*", help="after --: more bloomkit smoke options")
    run.add_argument("bloomkit_args", nargs="*", help="-- COMMAND ARGS: the bloomkit command")


# pyinfra's CLI package gevent-patches the process that imports it: the inventory is loaded in a
# child process, so this command's SSH threads and deadlines stay real threads and clocks.
LOAD_INVENTORY = """
import json, os, sys
from pyinfra.api import State
from pyinfra.context import ctx_state
from pyinfra_cli.inventory import make_inventory
from gpurig import cluster
with ctx_state.use(State(check_for_changes=False)):  # inventory files may read the state
    loaded = make_inventory(sys.argv[1], cwd=os.getcwd())
members, groups = cluster.from_pyinfra(loaded)
print("@@gpurig-inventory " + json.dumps(
    {"members": [[m.name, m.address, m.data] for m in members], "groups": groups}, default=str
))
"""


def load_members(inventory: str) -> tuple[list[cluster.Member], dict[str, list[str]]]:
    """The hosts and groups of a pyinfra inventory file, as `pyinfra INVENTORY ...` loads it
    (group_data folders and --data-free host data included)."""
    if not Path(inventory).exists():
        raise UsageError(f"no inventory file {inventory}")
    done = subprocess.run(
        [sys.executable, "-c", LOAD_INVENTORY, inventory],
        capture_output=True,
        text=True,
        timeout=120,
    )
    marker = "@@gpurig-inventory "
    found = [ln for ln in done.stdout.splitlines() if ln.startswith(marker)]
    if done.returncode != 0 or not found:
        lines = [ln for ln in (done.stderr or done.stdout).strip().splitlines() if ln.strip()]
        raise UsageError(f"cannot load inventory {inventory}: {lines[-1] if lines else '?'}")
    loaded = json.loads(found[-1][len(marker) :])
    members = [cluster.Member(name, address, data) for name, address, data in loaded["members"]]
    return members, {str(k): list(v) for k, v in loaded["groups"].items()}


def load_clusters(inventory: str) -> dict[str, cluster.Cluster]:
    members, groups = load_members(inventory)
    return cluster.find_clusters(members, groups, os.environ.get(cluster.ENV_CLUSTER))


def service_user() -> str:
    """stack.yml's host.user (GPURIG_STACK, else ./stack.yml): who runs training on the hosts."""
    from gpurig import spec
    from gpurig.deploys import stack_path

    try:
        return spec.load(stack_path()).host.user
    except GpurigError as error:
        raise UsageError(f"the service user: {error} (or pass --user)") from None


def run(args: argparse.Namespace) -> int:
    clusters = load_clusters(args.inventory)
    if args.action == "list":
        return _list(clusters, args.group)
    chosen = cluster.choose(clusters, args.group)
    extra = list(args.bloomkit_args or [])
    remotes = [SshRemote(m) for m in chosen.members]
    users = {m.name: m.data.get("ssh_user") for m in chosen.members}
    if args.action == "run" and not extra:
        raise UsageError("what to run: gpurig cluster run -- finetune --data FILE ...")
    args.user = args.user or service_user()
    if args.action == "run":
        outcome = run_on_cluster(
            chosen, remotes, extra, user=args.user, deadline_s=args.timeout,
            ssh_users=users, say=console.print,
        )  # fmt: skip
        record = fleet_record(chosen, outcome, {}, expect_fleet=False)
        print_outcome(record, {}, console)
        return 0 if outcome.ok else 1
    folder = f"{cluster.REPORTS_DIR}/{chosen.name}"
    smoke_args = [
        "smoke", "--distributed", "--json", f"{folder}/{{rank}}.json",
        "--dist-timeout", str(chosen.dist_timeout_s),
        *(["--quick"] if args.quick else []), *extra,
    ]  # fmt: skip
    outcome = run_on_cluster(
        chosen, remotes, smoke_args, user=args.user, deadline_s=args.timeout,
        reports=folder, ssh_users=users, say=console.print,
    )  # fmt: skip
    by_rank = rank_reports(outcome)
    record = fleet_record(chosen, outcome, by_rank)
    directory = (args.reports or reports_dir()) / "cluster" / chosen.name
    save(directory, outcome, record)
    print_outcome(record, by_rank, console)
    console.print(f"reports: {directory}")
    return 0 if record["verdict"] == "pass" else 1


def _list(clusters: Mapping[str, cluster.Cluster], group: str | None) -> int:
    shown = [cluster.choose(clusters, group)] if group else list(clusters.values())
    if not shown:
        cluster.choose(clusters, None)  # raises: how to mark one
    for found in shown:
        console.print(
            f"cluster {found.name} ({found.source}): {len(found.members)} node(s), rendezvous "
            f"{found.endpoint}, join {found.rdzv_timeout_s} s, collectives {found.dist_timeout_s} s"
        )
        for rank, member in enumerate(found.members):
            console.print(f"  node {rank}: {member.name} ({member.address})")
    return 0
