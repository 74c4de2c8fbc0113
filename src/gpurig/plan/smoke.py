"""The verify stage's plan: `bloomkit smoke` as the service user, and how its failures read."""

from __future__ import annotations

import re
import shlex

from gpurig.plan.steps import Smoke
from gpurig.spec import Stack

EXIT_LINE = re.compile(r"^gpurig-smoke-exit=(\d+)$")
TIMED_OUT = 124  # timeout(1)
WARM_MARKER = ".gpurig-smoke-warm"  # in a venv whose smoke bytecode root has written
WARM_TIMEOUT_S = 300  # imports only: a hang must not hold the verify step


def smoke_args(stack: Stack, has_gpu: bool) -> list[str]:
    """`bloomkit smoke` options after `--json REPORT`."""
    args = ["--model", stack.smoke.model]
    if has_gpu or stack.nvidia.require_gpu:
        args.append("--require-gpu")
    if stack.smoke.quick:
        args.append("--quick")
    return args


def warm_up(venv: str) -> str:
    """Root's `python -m bloomkit.warm` in the background, once per venv: the bytecode of what
    the smoke imports, which the service user cannot write into root's venv (without it every
    smoke compiles ~1,100 modules in memory). Niced, in a clean environment with its own
    throw-away HOME and TMPDIR (torch's import makes a cache folder in the temporary folder);
    a failure only leaves the next smoke to try again. `wait` for it after the smoke."""
    q = shlex.quote
    python, marker = q(f"{venv}/bin/python"), q(f"{venv}/{WARM_MARKER}")
    return (
        f"W=; if [ ! -e {marker} ] && [ -x {python} ] && W=$(mktemp -d); then "
        f'( cd / && umask 022 && env -i PATH=/usr/bin:/bin HOME="$W" TMPDIR="$W" HF_HUB_OFFLINE=1 '
        f"nice -n 10 timeout -k 5 {WARM_TIMEOUT_S} {python} -m bloomkit.warm && touch {marker} "
        ") >/dev/null 2>&1 & fi; "
    )


def warm_beside_check(python: str) -> str:
    """Root's `python -m bloomkit.warm --beside-check` in the background, for the venv build
    (gpurig.plan.venv): most of the first smoke's bytecode, on the core the import check
    leaves idle, written before the venv goes live. Niced below the check, bounded, isolated
    (-I: no cwd or user site on its path, no PYTHON* variables), in a clean environment; a
    failure only leaves more to the warm-up beside the first smoke. Sets WARM to the PID of
    timeout(1), which passes a kill on to Python."""
    return (
        f"( cd / && exec env -i PATH=/usr/bin:/bin nice -n 10 timeout -k 5 {WARM_TIMEOUT_S} "
        f"{python} -I -m bloomkit.warm --beside-check ) >/dev/null 2>&1 & WARM=$!"
    )


def command(
    user: str,
    report: str,
    timeout_s: int,
    args: list[str],
    offline: bool = False,
    venv: str | None = None,
) -> str:
    """A login shell of the service user: /etc/profile.d puts the venv on its PATH.

    offline: the model is one the deploy placed in the HF cache (stack.yml's models), so the
    smoke reads it from there and never asks the Hub (HF_HUB_OFFLINE=1).
    venv: the live venv, whose smoke bytecode root writes beside the first smoke (warm_up)."""
    smoke = shlex.join(["bloomkit", "smoke", "--json", report, *args])
    if offline:
        smoke = f"HF_HUB_OFFLINE=1 {smoke}"
    return (
        f"rm -f {shlex.quote(report)}; "
        + (warm_up(venv) if venv else "")
        + f"timeout -k 15 {int(timeout_s)} runuser -l {shlex.quote(user)} "
        f"-c {shlex.quote(smoke)}; echo gpurig-smoke-exit=$?"
        + ('; wait; [ -z "$W" ] || rm -rf "$W"' if venv else "")
    )


def exit_code(lines: list[str]) -> int | None:
    for line in reversed(lines):
        match = EXIT_LINE.match(line.strip())
        if match:
            return int(match[1])
    return None


def without_report(timeout_s: int, code: int | None, lines: list[str]) -> str:
    """Why a host has no smoke report, in the same words from every front end."""
    if code == TIMED_OUT:
        return f"smoke: timed out after {timeout_s} s (smoke.timeout_s) and wrote no report"
    tail = [ln.strip() for ln in lines if ln.strip() and not EXIT_LINE.match(ln.strip())]
    said = f": {tail[-1][:200]}" if tail else ""
    return f"smoke: exited {code if code is not None else '?'} without a report{said}"


def step(stack: Stack, has_gpu: bool, extra: list[str] | None = None) -> Smoke:
    """extra: more `bloomkit smoke` options (the DCGM stage's, gpurig.plan.dcgm)."""
    return Smoke(
        "verify.smoke",
        "Run bloomkit smoke",
        user=stack.host.user,
        report=stack.host.report,
        timeout_s=stack.smoke.timeout_s,
        command=command(
            stack.host.user,
            stack.host.report,
            stack.smoke.timeout_s,
            [*smoke_args(stack, has_gpu), *(extra or [])],
            offline=stack.smoke.model in {m.repo for m in stack.models},
            venv=stack.host.venv,
        ),
    )
