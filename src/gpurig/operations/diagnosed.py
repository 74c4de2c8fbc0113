"""Commands whose failures read as named diagnoses (gpurig.diagnose), not as raw output.

Recorded for the fleet report and the verdict, printed one line each instead of dpkg's output.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from pyinfra import logger
from pyinfra.api.command import PyinfraCommand, StringCommand
from pyinfra.api.host import Host
from pyinfra.api.state import State
from pyinfra.connectors.util import CommandOutput, OutputLine
from pyinfra.context import host

from gpurig import diagnose
from gpurig.diagnose import Context, Diagnosis
from gpurig.facts.gpu import GpuHost
from gpurig.hostlayout import LOG_DIR
from gpurig.model.host import HostFacts
from gpurig.operations import control
from gpurig.preflight import Verdict

FACTS_KEY = "gpurig_facts"  # host data preflight sets (gpurig.deploys.FACTS_KEY)


def diagnoses_now(target: Host, text: str, context: Context) -> list[Diagnosis]:
    """The named diagnoses of a failed command: its output, then the host's state right now."""
    try:
        state = target.get_fact(GpuHost)
    except Exception:  # the connection may be what failed; the output alone still says much
        state = None
    facts = target.data.get(FACTS_KEY)
    base = facts if isinstance(facts, HostFacts) else None
    return diagnose.after_failure(text, context, base, state, f"{LOG_DIR}/")


def record(target: Host, found: list[Diagnosis], verdict: Verdict | None) -> None:
    control.record_failure(target.name, str(found[0]))
    if verdict is not None:
        verdict.diagnoses += [d for d in found if d not in verdict.diagnoses]
        verdict.problems += [str(d) for d in found if str(d) not in verdict.problems]


class DiagnosedCommand(StringCommand):
    """A shell command whose failure reads as named diagnoses, not as its raw output."""

    def __init__(self, command: str, context: Context, verdict: Verdict | None) -> None:
        super().__init__(command)
        self.context = context
        self.verdict = verdict

    def execute(self, state: State, host: Host, connector_arguments: Any) -> Any:
        status, output = super().execute(state, host, connector_arguments)
        if status:
            return status, output
        found = diagnoses_now(host, "\n".join(output.output_lines), self.context)
        record(host, found, self.verdict)
        # pyinfra prints a failed command's output: make that the diagnoses.
        return False, CommandOutput([OutputLine("stderr", str(d)) for d in found])


class Stop(PyinfraCommand):
    """Fail the host with named diagnoses: recorded for the report, printed one line each."""

    def __init__(self, found: list[Diagnosis], verdict: Verdict | None) -> None:
        super().__init__()
        self.found = found
        self.verdict = verdict

    def __repr__(self) -> str:
        return f"Stop({' | '.join(str(d) for d in self.found)})"

    def execute(self, state: State, host: Host, connector_arguments: Any) -> bool:
        record(host, self.found, self.verdict)
        for diagnosis in self.found:
            host.log_styled(str(diagnosis), fg="red", log_func=logger.error)
        return False  # a failed operation takes the host out of the run


def stop(found: list[Diagnosis], verdict: Verdict | None) -> Generator[Any, None, None]:
    yield Stop(found, verdict)


def note(verdict: Verdict | None, text: str) -> None:
    """Say it in the report (once: generators also run when the plan is made)."""
    host.noop(text)
    if verdict is not None and host.state.is_executing and text not in verdict.notes:
        verdict.notes.append(text)
