"""`gpurig render`: the Ansible roles' defaults and argument specs, and docs/overrides.md.

They come from gpurig's override vocabulary (gpurig.overrides and the stack.yml schema), not
from stack.yml's values: a changed spec needs no re-render. `--check` writes nothing and exits
1 naming each file whose committed copy drifted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gpurig import ansible_render
from gpurig.errors import GpurigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", type=Path, default=Path("."), help="repository root")
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 if a generated file drifted"
    )


def run(args: argparse.Namespace) -> int:
    files = ansible_render.render()
    if args.check:
        stale = ansible_render.drifted(files, args.root)
        for relative in stale:
            print(f"{args.root / relative}: differs from a fresh render", file=sys.stderr)
        if stale:
            raise GpurigError(f"{len(stale)} generated file(s) drifted: run `gpurig render`")
        print(f"{len(files)} generated files are up to date")
        return 0
    written = ansible_render.write(files, args.root)
    for relative in written:
        print(f"wrote {args.root / relative}")
    if not written:
        print(f"{len(files)} generated files already up to date")
    return 0
