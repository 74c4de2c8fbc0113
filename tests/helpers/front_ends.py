"""Running a front end (pyinfra, ansible-playbook, gpurig) as a subprocess in an integration test:
one Run per command, its output kept and its tail printed for the reader of a failure."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # this venv's pyinfra, ansible-playbook, gpurig
RECAP = re.compile(
    r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M
)


@dataclass
class Run:
    name: str
    code: int
    output: str  # stdout and stderr as they came, interleaved
    seconds: float

    def recap(self) -> dict[str, dict[str, int]]:
        """Ansible's PLAY RECAP per host: ok, changed, unreachable, failed."""
        return {
            m[1]: {
                "ok": int(m[2]),
                "changed": int(m[3]),
                "unreachable": int(m[4]),
                "failed": int(m[5]),
            }
            for m in RECAP.finditer(self.output)
        }


def run_logged(name: str, argv: list[str], env: dict[str, str], timeout: float) -> Run:
    """`argv` in the repository root, bounded by `timeout`; never raises on a non-zero exit."""
    began = time.monotonic()
    done = subprocess.run(
        argv,
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )
    run = Run(name, done.returncode, done.stdout, time.monotonic() - began)
    print(f"\n--- {name}: exit {run.code} in {run.seconds:.1f} s\n{run.output[-5000:]}")
    return run


def ansible_env(env: dict[str, str]) -> dict[str, str]:
    """`env` made ready for ansible-playbook: the repo's ansible.cfg, no colour codes in the
    output, and this venv's bin first on PATH (ansible-inventory, and gpurig for the roles)."""
    return {
        **env,
        "ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg"),
        "ANSIBLE_FORCE_COLOR": "0",
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    }
