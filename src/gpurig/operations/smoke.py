"""`bloomkit smoke` on the host, as the service user; the report comes back to the controller."""

from __future__ import annotations

import json
import re
import shlex
import tempfile
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyinfra import logger
from pyinfra.api.command import FunctionCommand, StringCommand
from pyinfra.api.host import Host
from pyinfra.api.operation import operation
from pyinfra.api.state import State

from gpurig import report
from gpurig.operations.control import record_failure

EXIT_LINE = re.compile(r"^gpurig-smoke-exit=(\d+)$")
TIMED_OUT = 124  # timeout(1)


@dataclass(frozen=True)
class SmokeRun:
    user: str
    report: str  # on the host
    timeout_s: int
    args: list[str]  # after `bloomkit smoke --json REPORT`
    reports_dir: str  # on the controller


def command(run: SmokeRun) -> str:
    """A login shell of the service user: /etc/profile.d puts the venv on its PATH."""
    smoke = shlex.join(["bloomkit", "smoke", "--json", run.report, *run.args])
    return (
        f"rm -f {shlex.quote(run.report)}; "
        f"timeout -k 15 {int(run.timeout_s)} runuser -l {shlex.quote(run.user)} "
        f"-c {shlex.quote(smoke)}; echo gpurig-smoke-exit=$?"
    )


def _exit_code(lines: list[str]) -> int | None:
    for line in reversed(lines):
        match = EXIT_LINE.match(line.strip())
        if match:
            return int(match[1])
    return None


def _without_report(run: SmokeRun, code: int | None, lines: list[str]) -> str:
    if code == TIMED_OUT:
        return f"smoke: timed out after {run.timeout_s} s (smoke.timeout_s) and wrote no report"
    tail = [ln.strip() for ln in lines if ln.strip() and not EXIT_LINE.match(ln.strip())]
    said = f": {tail[-1][:200]}" if tail else ""
    return f"smoke: exited {code if code is not None else '?'} without a report{said}"


def run_smoke(state: State, host: Host, run: SmokeRun, on_report: Callable[[str], None]) -> bool:
    status, output = host.run_shell_command(
        StringCommand(command(run)), _sudo=True, _timeout=run.timeout_s + 120
    )
    lines = output.output_lines if output else []
    code = _exit_code(lines)
    directory = Path(run.reports_dir)
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=directory, prefix=f".{host.name}.", suffix=".fetch") as f:
        fetched = status and code is not None and host.get_file(run.report, f.name, _sudo=True)
        try:
            data = json.loads(Path(f.name).read_text()) if fetched else None
        except ValueError:
            data = None
    if not isinstance(data, dict):
        data = report.failure_report(host.name, _without_report(run, code, lines))
    report.write(directory, host.name, data)
    on_report(host.name)
    result = report.parse(host.name, data)
    seconds = f" in {result.seconds:.0f} s" if result.seconds is not None else ""
    if result.verdict == report.PASS:
        host.log_styled(f"smoke: pass{seconds}", fg="green", log_func=logger.info)
        return True
    reason = "; ".join(result.failures)
    reason = reason if reason.startswith("smoke") else f"smoke: {reason}"
    record_failure(host.name, reason)
    host.log_styled(reason, fg="red", log_func=logger.error)
    return False


@operation(is_idempotent=False, idempotent_notice="runs the acceptance test on every deploy")
def smoke(run: SmokeRun, on_report: Callable[[str], None]) -> Generator[Any, None, None]:
    """Always runs (by design); fails the host unless the report's verdict is pass."""
    yield FunctionCommand(run_smoke, (run, on_report), {})
