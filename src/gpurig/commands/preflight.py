"""`gpurig preflight`: can these hosts take this stack? Facts only: no host is changed.

Runs the deploy's own preflight stage (gpurig.deploys.preflight) through pyinfra, with `--dry`,
against any inventory the deploy takes (the repo's inventory.py by default: GPURIG_HOSTS or the
sandbox hosts), so the verdicts are the deploy's, host data overrides included. Each host's
verdict comes back as JSON; the command prints every problem of every host, each with its fix,
and exits 1 when any host fails or cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from gpurig import lock, spec
from gpurig.errors import GpurigError, UsageError
from gpurig.inventory import STRICT_HOST_KEYS
from gpurig.model.host import HostFacts
from gpurig.preflight import Verdict

DEPLOY_FILE = Path(__file__).with_name("preflight_deploy.py")
ENV_OUT = "GPURIG_PREFLIGHT_OUT"
TIMEOUT_S = 900


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inventory",
        nargs="?",
        default="inventory.py",
        help="pyinfra inventory: a file (default inventory.py) or user@host,... as pyinfra takes",
    )
    parser.add_argument("--stack", type=Path, default=spec.DEFAULT_STACK, help="spec file")
    parser.add_argument("--lock", type=Path, default=lock.DEFAULT_LOCK_DIR, help="lock folder")
    parser.add_argument("--limit", action="append", help="only these hosts or groups")
    parser.add_argument("--json", action="store_true", help="print the verdicts as JSON")


def host_result(name: str, facts: HostFacts | None, verdict: Verdict) -> dict[str, Any]:
    """One host's verdict as plain data (what preflight_deploy.py writes)."""
    return {
        "host": name,
        "ok": verdict.ok,
        "problems": verdict.problems,
        "notes": verdict.notes,
        "diagnoses": [d.as_dict() for d in verdict.diagnoses],
        "target": verdict.target.name if verdict.target else None,
        "python": verdict.python,
        "uv_python": verdict.uv_python,
        "install_driver": verdict.install_driver,
        "facts": asdict(facts) if facts else None,
    }


def result_file(directory: Path, name: str) -> Path:
    return directory / (re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".json")


def _hosts(inventory: str, limit: list[str] | None) -> list[str]:
    """The inventory's host names, as pyinfra loads them (groups in --limit expand)."""
    from pyinfra.api.state import State
    from pyinfra.context import ctx_state
    from pyinfra_cli.inventory import make_inventory

    try:
        with ctx_state.use(State()):  # pyinfra loads inventory files as "the current state's"
            loaded = make_inventory(inventory)
    except Exception as error:  # pyinfra raises its own and the inventory file's errors
        raise UsageError(f"cannot load inventory {inventory}: {error}") from None
    names = []
    for host in loaded:
        if not limit or host.name in limit or set(host.groups) & set(limit):
            names.append(host.name)
    return names


def gather(
    inventory: str, stack: Path, lock_dir: Path, limit: list[str] | None
) -> tuple[list[dict[str, Any]], str]:
    """Verdicts of the reachable hosts, and pyinfra's output (it names the unreachable ones)."""
    with tempfile.TemporaryDirectory(prefix="gpurig-preflight-") as out:
        env = {
            **os.environ,
            "GPURIG_STACK": str(stack.absolute()),
            "GPURIG_LOCK": str(lock_dir.absolute()),
            ENV_OUT: out,
        }
        # --dry: nothing runs; -y: an unreachable host must not stop the others at a prompt.
        argv = [sys.executable, "-m", "pyinfra", inventory, str(DEPLOY_FILE), "--dry", "-y"]
        argv += STRICT_HOST_KEYS
        for name in limit or []:
            argv += ["--limit", name]
        try:
            run = subprocess.run(
                argv, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired:
            raise GpurigError(f"pyinfra gathered no facts within {TIMEOUT_S} s") from None
        results = [json.loads(p.read_text()) for p in sorted(Path(out).glob("*.json"))]
    return results, run.stdout + run.stderr


def _unreachable(name: str, output: str) -> str:
    lines = [
        ln.strip()
        for ln in output.splitlines()
        if f"[{name}]" in ln and re.search(r"(?i)could not|error|refused|timed out|denied", ln)
    ]
    reason = re.sub(r"^\[[^]]*\]\s*", "", lines[-1]) if lines else "no facts came back"
    return f"cannot reach the host ({reason}): is it up, and its key in known_hosts?"


def _summary(result: dict[str, Any]) -> str:
    facts = result.get("facts")
    if not facts:
        return "no facts"
    parts = [f"{facts['os_id']}-{facts['os_version']}"]
    gpus = facts.get("gpus") or []
    if gpus:
        kinds: dict[str, int] = {}
        for gpu in gpus:
            cc = gpu.get("compute_capability")
            label = f"{gpu['name']} (sm_{cc.replace('.', '')})" if cc else gpu["name"]
            kinds[label] = kinds.get(label, 0) + 1
        parts.append(", ".join(f"{n}x {k}" if n > 1 else k for k, n in kinds.items()))
        if facts.get("nvswitches"):
            parts.append(f"{facts['nvswitches']} NVSwitch")
        driver = facts.get("driver_version")
        parts.append(f"driver {driver}" if driver else "no driver loaded")
    else:
        parts.append("no NVIDIA GPU")
    if result.get("target"):
        parts.append(f"installs {result['target']}")
    return ", ".join(parts)


def run(args: argparse.Namespace) -> int:
    if (
        not Path(args.inventory).exists()
        and "," not in args.inventory
        and "@" not in args.inventory
    ):
        raise UsageError(f"inventory {args.inventory} not found: pass a file or user@host,...")
    names = _hosts(args.inventory, args.limit)
    if not names:
        raise UsageError(f"no hosts in {args.inventory}" + (" for --limit" if args.limit else ""))
    results, output = gather(args.inventory, args.stack, args.lock, args.limit)
    by_host = {r["host"]: r for r in results}
    if not results and re.search(r"(?i)deploy error|pyinfra error", output):
        # A bad stack.yml or a stale lock stops pyinfra before any host: say that, not "down".
        last = [ln for ln in output.splitlines() if ln.strip()][-3:]
        raise GpurigError(" / ".join(ln.strip(" ->") for ln in last))
    for name in names:
        if name not in by_host:
            by_host[name] = {
                "host": name,
                "ok": False,
                "problems": [_unreachable(name, output)],
                "notes": [],
                "diagnoses": [],
                "target": None,
                "facts": None,
            }
    ordered = [by_host[name] for name in names]
    if args.json:
        print(json.dumps(ordered, indent=2))
    else:
        console = Console(highlight=False, soft_wrap=True)
        for result in ordered:
            status = "[green]ok[/green]  " if result["ok"] else "[red]FAIL[/red]"
            console.print(f"{status} [bold]{escape(result['host'])}[/bold]: {_summary(result)}")
            for problem in result["problems"]:
                console.print(f"     [red]problem:[/red] {escape(problem)}")
            for note in result["notes"]:
                console.print(f"     note: {escape(note)}")
        failed = sum(not r["ok"] for r in ordered)
        console.print(f"{len(ordered) - failed} of {len(ordered)} host(s) pass preflight")
    return 1 if any(not r["ok"] for r in ordered) else 0
