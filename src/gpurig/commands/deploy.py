"""`gpurig deploy`: run the pyinfra deploy (inventory.py + deploy/gpu.py), then the fleet summary.

Exits 0 only when every host of the run passed (or skipped its smoke test on purpose); a
failed host is named with its reason. Arguments after `--` go to pyinfra as they are. While it
runs, each host's stages show live on a terminal, as plain lines elsewhere (deploy_watch).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from gpurig import report
from gpurig.commands.deploy_watch import run_pyinfra
from gpurig.deploys import (
    EARLY_PUSH_KEY,
    ENV_LOCK,
    ENV_REPORTS,
    ENV_STACK,
    ENV_SUMMARY,
    reports_dir,
)
from gpurig.errors import UsageError
from gpurig.inventory import STRICT_HOST_KEYS

DEPLOY_FILE = Path("deploy/gpu.py")
INVENTORY = Path("inventory.py")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--inventory", type=Path, default=INVENTORY, help="pyinfra inventory")
    parser.add_argument(
        "--stack", type=Path, help=f"spec file (default: ${ENV_STACK} or stack.yml)"
    )
    parser.add_argument("--lock", type=Path, help=f"lock folder (default: ${ENV_LOCK} or lock)")
    parser.add_argument(
        "--reports", type=Path, help=f"report folder (default: ${ENV_REPORTS} or reports)"
    )
    parser.add_argument("--limit", help="only these hosts or groups (pyinfra --limit)")
    parser.add_argument("--dry", action="store_true", help="show what would change, change nothing")
    parser.add_argument(
        "--skip-smoke", action="store_true", help="no smoke test this run (gpurig_skip_smoke)"
    )
    parser.add_argument(
        "pyinfra_args", nargs=argparse.REMAINDER, help="after --: more pyinfra arguments"
    )


def pyinfra_command(args: argparse.Namespace) -> list[str]:
    beside = Path(sys.executable).with_name("pyinfra")
    found = str(beside) if beside.exists() else shutil.which("pyinfra")
    command = [found] if found else [sys.executable, "-m", "pyinfra"]
    # -y skips pyinfra's change detection, which is all a dry run is for.
    command += ["--dry"] if args.dry else ["-y"]
    if not args.dry:  # the run will execute: preflight may start the wheels' push early
        command += ["--data", f"{EARLY_PUSH_KEY}=true"]
    command += [str(args.inventory), str(DEPLOY_FILE)]
    if args.limit:
        command += ["--limit", args.limit]
    if args.skip_smoke:
        command += ["--data", "gpurig_skip_smoke=true"]
    extra = list(args.pyinfra_args or [])
    extra = extra[1:] if extra[:1] == ["--"] else extra
    if any("strict_host_key" in arg for arg in extra):
        raise UsageError("host keys are always checked strictly: add the host to known_hosts")
    return command + STRICT_HOST_KEYS + extra


def environment(args: argparse.Namespace) -> dict[str, str]:
    env = {**os.environ, ENV_SUMMARY: "0"}  # this command prints the summary itself
    for name, value in (
        (ENV_STACK, args.stack),
        (ENV_LOCK, args.lock),
        (ENV_REPORTS, args.reports),
    ):
        if value is not None:
            env[name] = str(Path(value).absolute())
    return env


def deploy(args: argparse.Namespace) -> int:
    """Run pyinfra; print the run's summary; 0 only when every host is ok."""
    if not DEPLOY_FILE.exists():
        raise UsageError(f"{DEPLOY_FILE} not found: run gpurig deploy from the repo root")
    if not args.inventory.exists():
        raise UsageError(f"inventory {args.inventory} not found")
    env = environment(args)
    started = time.time()
    if args.dry:  # no operation runs: nothing to follow but pyinfra's list of changes
        return subprocess.call(pyinfra_command(args), env=env)
    console = report.console()
    code = run_pyinfra(pyinfra_command(args), env, console)
    directory = Path(env.get(ENV_REPORTS) or reports_dir())
    try:
        reports = report.load_run(directory, since=started)
    except report.RunRecordError as error:
        console.print(f"[bold red]no fleet summary[/]: {error} (pyinfra exited {code})")
        return code or 1
    console.print()
    ok = report.print_summary(reports, console)
    return 0 if ok and code == 0 else 1


def run(args: argparse.Namespace) -> int:
    return deploy(args)
