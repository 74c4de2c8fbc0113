"""The GPU layer's front ends run against sandbox hosts (tests/integration/test_nvidia_*.py):
the driver stage through pyinfra (its plan too) and Ansible, and `gpurig preflight`."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpurig import spec
from gpurig.lock import LOCK_VERSION, MANIFEST, target_name
from gpurig.sandbox.testing import SandboxFleet
from helpers.front_ends import BIN, ansible_env, run_logged

REPO = Path(__file__).resolve().parents[2]
STAGE = REPO / "tests/integration/deploys/nvidia_stage.py"
Fleet = Callable[..., SandboxFleet]
DEBIAN_535 = """\
version: 1
python: ["3.11", "3.13"]
torch: {version: "2.13.0", variants: [cu126, cpu]}
nvidia: {driver_branch: 535}
"""


def stack_file(tmp_path: Path, text: str | None) -> Path:
    if text is None:
        return REPO / "stack.yml"
    path = tmp_path / "stack.yml"
    path.write_text(text)
    return path


def pyinfra(
    fleet: SandboxFleet,
    stack: Path,
    *args: str,
    timeout: float = 600,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "pyinfra", str(fleet.inventory_path), str(STAGE), *args]
    env = {**fleet.env, "GPURIG_STACK": str(stack), **(env or {})}
    return subprocess.run(
        argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )


def failing_playbook(
    fleet: SandboxFleet, reports: Path, playbook: str = "playbooks/gpu.yml", **env: str
) -> str:
    """The Ansible front end on the fleet (or the test playbook of one stage), which must
    fail; its output."""
    argv = [str(BIN / "ansible-playbook"), "-i", str(fleet.ansible_inventory), playbook]
    run = run_logged(
        "ansible-playbook",
        argv,
        ansible_env({**fleet.env, "GPURIG_REPORTS_DIR": str(reports), **env}),
        timeout=900,
    )
    assert run.code != 0, run.output[-3000:]
    return run.output


def plan(fleet: SandboxFleet, stack: Path) -> dict[str, list[str]]:
    """Operation name -> the hosts it would change, from `pyinfra --dry --json`."""
    run = pyinfra(fleet, stack, "--dry", "--json")
    assert run.returncode == 0, run.stderr[-2000:]
    payload: dict[str, Any] = json.loads(run.stdout)
    return {
        op["name"].removeprefix("NVIDIA driver | "): op["hosts_with_change"]
        for op in payload["plan"]
    }


def gpurig(fleet: SandboxFleet, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gpurig.cli", "preflight", *args],
        env={**fleet.env, "COLUMNS": "200"},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def made_up_lock(stack_path: Path, directory: Path) -> Path:
    """A lock on disk for a stack no machine here can resolve (cu126: PyTorch's index), as
    nvidia_stage.py makes in memory: the driver stage reads only the target's variant, and the
    run stops at the driver, before anything installs from it."""
    stack = spec.load(stack_path)
    targets = {}
    for variant in stack.torch.variants:
        for python in stack.python:
            name = target_name(variant, python)
            text = f"torch=={stack.torch.version}\n"
            (directory / f"{name}.txt").write_text(text)
            targets[name] = {
                "name": name, "variant": variant, "python": python, "file": f"{name}.txt",
                "sha256": hashlib.sha256(text.encode()).hexdigest(),
                "index": stack.sources.index, "extra_index": None,
                "find_links": [], "packages": {"torch": stack.torch.version},
            }  # fmt: skip
    manifest = {"lock_version": LOCK_VERSION, "spec_sha256": stack.digest(), "targets": targets}
    (directory / MANIFEST).write_text(json.dumps(manifest))
    return directory
