"""The verify stage's plan: `bloomkit smoke` as the service user, and how its failures read."""

from __future__ import annotations

import re
import shlex

from gpurig.plan.steps import Smoke
from gpurig.spec import Stack

EXIT_LINE = re.compile(r"^gpurig-smoke-exit=(\d+)$")
TIMED_OUT = 124  # timeout(1)


def smoke_args(stack: Stack, has_gpu: bool) -> list[str]:
    """`bloomkit smoke` options after `--json REPORT`."""
    args = ["--model", stack.smoke.model]
    if has_gpu or stack.nvidia.require_gpu:
        args.append("--require-gpu")
    if stack.smoke.quick:
        args.append("--quick")
    return args


def command(
    user: str,
    report: str,
    timeout_s: int,
    args: list[str],
    offline: bool = False,
) -> str:
    """A login shell of the service user: /etc/profile.d puts the venv on its PATH.

    offline: the model is one the deploy placed in the HF cache (stack.yml's models), so the
    smoke reads it from there and never asks the Hub (HF_HUB_OFFLINE=1). The venv's build wrote
    the bytecode of most of what the smoke imports (gpurig.plan.venv.compile_beside_check)."""
    smoke = shlex.join(["bloomkit", "smoke", "--json", report, *args])
    if offline:
        smoke = f"HF_HUB_OFFLINE=1 {smoke}"
    return (
        f"rm -f {shlex.quote(report)}; "
        f"timeout -k 15 {int(timeout_s)} runuser -l {shlex.quote(user)} "
        f"-c {shlex.quote(smoke)}; echo gpurig-smoke-exit=$?"
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
        ),
    )
