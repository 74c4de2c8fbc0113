"""The `bloomkit` command: subcommands map to typed functions (litgpt's dict of name -> fn).

Only `main()` configures logging. Errors the user can act on are one line on stderr and a
non-zero exit (1: failed, 2: bad usage); `--debug` adds the traceback. Heavy imports (torch,
transformers) happen inside the subcommand, so `bloomkit --help` is instant.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any

from bloomkit import __version__
from bloomkit.config import (
    EnvArgs,
    FinetuneArgs,
    GenerateArgs,
    SmokeArgs,
    add_arguments,
    build_args,
)
from bloomkit.errors import EXIT_FAIL, EXIT_OK, BloomkitError

log = logging.getLogger("bloomkit")


def run_finetune(args: FinetuneArgs, debug: bool) -> int:
    from bloomkit.finetune import finetune

    summary = finetune(args)
    if int(os.environ.get("RANK", "0")) == 0:
        losses = (
            f"loss {summary['first_loss']:.3f} -> {summary['last_loss']:.3f}"
            if summary["first_loss"] is not None
            else f"loss {summary['train_loss']:.3f}"
        )
        mfu = f", MFU {summary['mfu']:.1%}" if summary["mfu"] is not None else ""
        print(
            f"saved {summary['output']}: {summary['global_step']} steps, {losses}, "
            f"{summary['tokens_per_s']:.0f} tokens/s{mfu}"
        )
    return EXIT_OK


def run_generate(args: GenerateArgs, debug: bool) -> int:
    from bloomkit.generate import generate

    generate(args)
    return EXIT_OK


def run_env(args: EnvArgs, debug: bool) -> int:
    from bloomkit.env import collect_env, format_env

    env = collect_env()
    print(json.dumps(env, indent=2, default=str) if args.json else format_env(env))
    return EXIT_OK


def run_smoke(args: SmokeArgs, debug: bool) -> int:
    if args.distributed:
        from bloomkit.distributed import smoke
    else:
        from bloomkit.smoke import smoke
    return smoke(args, debug=debug)


COMMANDS: dict[str, tuple[type, Callable[[Any, bool], int]]] = {
    "finetune": (FinetuneArgs, run_finetune),
    "generate": (GenerateArgs, run_generate),
    "env": (EnvArgs, run_env),
    "smoke": (SmokeArgs, run_smoke),
}


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="debug logging, and tracebacks with errors",
    )
    common.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="warnings and errors only",
    )
    parser = argparse.ArgumentParser(
        prog="bloomkit",
        parents=[common],
        description="Fine-tune, generate and smoke-test Hugging Face causal LMs on a GPU host.",
    )
    parser.add_argument("--version", action="version", version=f"bloomkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (cls, _) in COMMANDS.items():
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        add_arguments(sub.add_parser(name, parents=[common], help=doc, description=doc), cls)
    return parser


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is now (it may be replaced after main() configured us)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def configure_logging(debug: bool, quiet: bool) -> None:
    """bloomkit's own logger on stderr; only rank 0 speaks below WARNING."""
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    if int(os.environ.get("RANK", "0")) != 0:
        level = max(level, logging.WARNING)
    for handler in list(log.handlers):
        log.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("bloomkit: %(message)s"))
    log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not debug:
        # Deprecation notices are for library authors, not for the user of a CLI.
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        # Library chatter (advice on generation flags, weight-loading bars) is not for the user
        # of a CLI; Trainer's progress bar is separate (finetune --no-progress).
        try:
            import transformers

            transformers.utils.logging.set_verbosity_error()
            transformers.utils.logging.disable_progress_bar()
        except ImportError:
            pass


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        namespace = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (2)
        return int(exc.code or 0)
    debug = getattr(namespace, "debug", False)
    configure_logging(debug, getattr(namespace, "quiet", False))
    cls, run = COMMANDS[namespace.command]
    prefix = f"bloomkit {namespace.command}: error:"
    try:
        return run(build_args(cls, namespace), debug)
    except BloomkitError as exc:
        if debug:
            log.exception("traceback")
        print(f"{prefix} {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prefix} interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        import torch

        if debug:
            log.exception("traceback")
        if isinstance(exc, torch.OutOfMemoryError):
            print(
                f"{prefix} out of GPU memory in {namespace.command}: lower --batch-size",
                file=sys.stderr,
            )
            return EXIT_FAIL
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        hint = "" if debug else " (--debug shows the traceback)"
        print(f"{prefix} {type(exc).__name__}: {first}{hint}", file=sys.stderr)
        return EXIT_FAIL
