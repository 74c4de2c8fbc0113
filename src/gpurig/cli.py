"""The `gpurig` command: each subcommand lives in the module that owns its layer."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from gpurig import __version__
from gpurig.errors import GpurigError

# name -> (module, one-line help). Modules expose add_arguments(parser) and run(args) -> int;
# they are imported only when their subcommand runs, so `gpurig check` stays fast.
COMMANDS: dict[str, tuple[str, str]] = {
    "check": ("gpurig.commands.check", "validate stack.yml and show the resolved stack"),
    "resolve": ("gpurig.commands.resolve", "lock every distribution, per variant and Python"),
    "sandbox": ("gpurig.sandbox.cli", "start, list and stop local sandbox hosts"),
    "preflight": ("gpurig.commands.preflight", "check live hosts against the lock, change nothing"),
    "deploy": ("gpurig.commands.deploy", "run the pyinfra deploy and print the fleet summary"),
    "cluster": ("gpurig.commands.cluster", "training clusters: list, smoke-test, run on all nodes"),
    "report": ("gpurig.commands.report", "print the fleet summary from reports/"),
    "image": ("gpurig.images.cli", "build and smoke-test container images"),
    "render": ("gpurig.commands.render", "write the files generated from the spec (Ansible)"),
    "demo": ("gpurig.commands.demo", "sandbox host, deploy, fleet smoke report"),
    "lint-assets": ("gpurig.commands.lint_assets", "ansible-lint roles, hadolint Dockerfiles"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpurig", description=__doc__)
    parser.add_argument("--version", action="version", version=f"gpurig {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # Parse the command name first, then let the owning module parse the rest.
    known, rest = parser.parse_known_args(argv)
    module_name, help_text = COMMANDS[known.command]
    module = importlib.import_module(module_name)
    command_parser = argparse.ArgumentParser(prog=f"gpurig {known.command}", description=help_text)
    command_parser.add_argument("--debug", action="store_true", help="show tracebacks")
    module.add_arguments(command_parser)
    args = command_parser.parse_args(rest)
    args.debug = args.debug or known.debug
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING, format="%(message)s"
    )
    try:
        return int(module.run(args) or 0)
    except GpurigError as error:
        if args.debug:
            raise
        print(f"gpurig {known.command}: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"gpurig {known.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
