"""`gpurig render`: the Ansible roles' defaults and argument specs, from stack.yml and the lock.

`--check` writes nothing and exits 1 naming each file whose committed copy drifted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gpurig import ansible_render, lock, spec
from gpurig.commands.check import load_checked
from gpurig.errors import GpurigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stack", type=Path, default=spec.DEFAULT_STACK, help="spec file")
    parser.add_argument("--lock", type=Path, default=lock.DEFAULT_LOCK_DIR, help="lock folder")
    parser.add_argument("--roles", type=Path, default=Path("roles"), help="Ansible roles folder")
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 if a generated file drifted"
    )


def run(args: argparse.Namespace) -> int:
    stack = load_checked(args.stack)
    locked = lock.load(args.lock)
    locked.assert_fresh(stack)
    files = ansible_render.render(stack, locked)
    if args.check:
        stale = ansible_render.drifted(files, args.roles)
        for relative in stale:
            print(f"{args.roles / relative}: differs from a fresh render", file=sys.stderr)
        if stale:
            raise GpurigError(f"{len(stale)} generated file(s) drifted: run `gpurig render`")
        print(f"{len(files)} generated files match {args.stack} and {args.lock}/")
        return 0
    written = ansible_render.write(files, args.roles)
    for relative in written:
        print(f"wrote {args.roles / relative}")
    if not written:
        print(f"{len(files)} generated files already up to date")
    return 0
