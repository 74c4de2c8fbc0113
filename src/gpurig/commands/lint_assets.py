"""`gpurig lint-assets`: ansible-lint (production profile) on roles/ and playbooks/, hadolint on
every Dockerfile under images/. Part of `make lint`."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from gpurig.errors import GpurigError

REPO = Path(__file__).resolve().parents[3]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repo", type=Path, default=REPO, help="repository root")


def _tool(name: str) -> str:
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise GpurigError(f"{name} not found: run `make venv` (it is in the dev dependency group)")
    return found


def run(args: argparse.Namespace) -> int:
    failed = []
    if (args.repo / "playbooks").is_dir() and any((args.repo / "roles").glob("*/tasks")):
        lint = [_tool("ansible-lint"), "--profile", "production", "playbooks", "roles"]
        if subprocess.run(lint, cwd=args.repo).returncode:
            failed.append("ansible-lint")
    dockerfiles = sorted(args.repo.glob("images/**/*Dockerfile*"))
    if dockerfiles:
        hadolint = [_tool("hadolint"), *map(str, dockerfiles)]
        if subprocess.run(hadolint, cwd=args.repo).returncode:
            failed.append("hadolint")
    if failed:
        raise GpurigError(f"{' and '.join(failed)} found problems (listed above)")
    return 0
