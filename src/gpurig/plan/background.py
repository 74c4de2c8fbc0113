"""Jobs a step starts on the host and a later step waits for (gpurig.plan.apt_background,
gpurig.plan.trust): slow work that overlaps the steps between them instead of coming first.

A job runs detached from the SSH session (`setsid`, its output in a log under /var/log/gpurig)
and the start returns at once. The wait step prints the log and exits with the job's status,
so a failure reads as the same named diagnosis as a job run in the foreground. Each start has
its own status file, so a job left running by an interrupted deploy cannot answer for the next.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from gpurig.hostlayout import LOG_DIR
from gpurig.plan.steps import CHANGED, UNCHANGED


@dataclass(frozen=True)
class Job:
    name: str  # the log's name: /var/log/gpurig/<name>.log
    doing: str  # what the start says: "<doing> in the background"
    wait_s: int  # the wait's bound

    @property
    def log(self) -> str:
        return f"{LOG_DIR}/{self.name}.log"

    @property
    def status(self) -> str:
        return f"{self.log}.status"  # .<job>: the job's exit status, written last

    @property
    def running(self) -> str:
        return f"{self.log}.running"  # "<job> <pid>": started and not yet waited for

    def start(self, command: str) -> list[str]:
        """Lines that start `command` as this job and say so."""
        q = shlex.quote
        status = f'{q(self.status)}."$1"'
        job = f"({command}); echo $? > {status}.new; mv -f {status}.new {status}"
        return [
            f"mkdir -p {q(LOG_DIR)}",
            "job=$$",
            f"rm -f {q(self.status)}.*",
            # Its own session: the end of this SSH command (a pty's hangup) does not stop it.
            f'setsid nohup sh -c {q(job)} {q(self.name)} "$job" > {q(self.log)} 2>&1 < /dev/null &',
            f'echo "$job $!" > {q(self.running)}',
            f'echo "{CHANGED}{self.doing} in the background ({self.log})"',
        ]

    def _poll(self, busy: str) -> str:
        """Shell that sleeps while `busy` holds, up to the wait's bound."""
        return (
            f"i=0; while {busy} && [ $i -lt {self.wait_s * 5} ]; do sleep 0.2; i=$((i + 1)); done"
        )

    def awaited(self) -> str:
        """One line for another job that needs this one done first: it waits while this job
        runs (bounded), and leaves its result to the wait step."""
        q = shlex.quote
        running = f'[ ! -e {q(self.status)}."$j" ] && kill -0 "$p" 2>/dev/null'
        return f"if read -r j p < {q(self.running)} 2>/dev/null; then {self._poll(running)}; fi"

    def wait(self) -> str:
        """The wait step's script: the job's log, and its exit status."""
        q = shlex.quote
        return "\n".join(
            [
                f'if [ ! -e {q(self.running)} ]; then echo "{UNCHANGED}"; exit 0; fi',
                f"read -r j p < {q(self.running)}",
                f'S={q(self.status)}."$j"',
                self._poll('[ ! -e "$S" ]'),
                f"cat {q(self.log)} 2>/dev/null",
                'if [ ! -e "$S" ]; then',
                f'  echo "{self.name}: not done after {self.wait_s} s (its log: {self.log})" >&2',
                "  exit 1",
                "fi",
                f'rc=$(cat "$S"); rm -f {q(self.running)} "$S"',
                'exit "$rc"',
            ]
        )
