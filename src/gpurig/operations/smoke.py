"""`bloomkit smoke` on the host, as the service user; the report comes back to the controller."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

from pyinfra import logger
from pyinfra.api.command import FunctionCommand, StringCommand
from pyinfra.api.host import Host
from pyinfra.api.operation import operation
from pyinfra.api.state import State

from gpurig import report
from gpurig.operations.control import record_failure
from gpurig.plan.smoke import exit_code, without_report
from gpurig.plan.steps import Smoke


def run_smoke(
    state: State, host: Host, step: Smoke, reports_dir: str, on_report: Callable[[str], None]
) -> bool:
    status, output = host.run_shell_command(
        StringCommand(step.command), _sudo=True, _timeout=step.timeout_s + 120
    )
    lines = output.output_lines if output else []
    code = exit_code(lines)
    directory = Path(reports_dir)
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=directory, prefix=f".{host.name}.", suffix=".fetch") as f:
        # As the service user, who owns the report's folder and could leave a link there to
        # a file only root may read: root never follows a path the service user controls.
        fetched = (
            status
            and code is not None
            and host.get_file(
                step.report,
                f.name,
                remote_temp_filename=host.get_temp_filename(),  # a fresh name, not a guessable one
                _sudo=True,
                _sudo_user=step.user,
            )
        )
        try:
            data = json.loads(Path(f.name).read_text()) if fetched else None
        except ValueError:
            data = None
    if not isinstance(data, dict):
        data = report.failure_report(host.name, without_report(step.timeout_s, code, lines))
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
def smoke(
    step: Smoke, reports_dir: str, on_report: Callable[[str], None]
) -> Generator[Any, None, None]:
    """Always runs (by design); fails the host unless the report's verdict is pass."""
    yield FunctionCommand(run_smoke, (step, reports_dir, on_report), {})
