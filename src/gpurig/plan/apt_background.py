"""apt as a background job that a later step waits for: the lists refresh and the install
(network and dpkg) overlap the wheel push and the venv build (network and CPU) instead of
coming before them.

The apt step's script starts the install detached from the SSH session (`setsid`, its output in
a log under /var/log/gpurig) and returns at once; the wait step (`AptWait`), placed before the
first step that needs the packages, waits for the job's exit status and prints its log, so a
failure reads as the same named diagnosis as a foreground install (a dpkg lock held past the
bound, a package missing from the archive). The bounded dpkg-lock wait is apt's own, as before.

The job runs in the foreground when ca-certificates is missing: the trust store the venv's
downloads need comes with it.
"""

from __future__ import annotations

import shlex

from gpurig.hostlayout import LOG_DIR
from gpurig.plan.steps import AptWait, Stage

LOG = f"{LOG_DIR}/apt.log"
STATUS = f"{LOG}.status"  # .<job>: the job's exit status, written last
RUNNING = f"{LOG}.running"  # the job started and not yet waited for
FIRST_NEEDED = "ca-certificates"  # installed before anything else runs, when missing
# The wait's bound: apt's own dpkg-lock wait, twice (update and install), and the install.
WAIT_S = 1800


def start_script(install: str) -> str:
    """What the apt step runs when a package is missing (the caller checked that); `install`:
    gpurig.plan.system.apt_install's command. Each job has its own status file, so a job left
    running by an interrupted deploy cannot answer for the next one."""
    q = shlex.quote
    status = f'{q(STATUS)}."$1"'
    job = f"({install}); echo $? > {status}.new; mv -f {status}.new {status}"
    return "\n".join(
        [
            f"if ! dpkg-query -W -f='${{db:Status-Abbrev}}' {FIRST_NEEDED} 2>/dev/null "
            "| grep -q '^ii'; then",
            f"  {install}",
            "  exit $?",
            "fi",
            f"mkdir -p {q(LOG_DIR)}",
            "job=$$",
            f"rm -f {q(STATUS)}.*",
            f'echo "$job" > {q(RUNNING)}',
            # Its own session: the end of this SSH command (a pty's hangup) does not stop it.
            f'setsid nohup sh -c {q(job)} apt "$job" > {q(LOG)} 2>&1 < /dev/null &',
            f'echo "gpurig: changed: apt installs in the background ({LOG})"',
        ]
    )


def wait_script() -> str:
    q = shlex.quote
    return "\n".join(
        [
            f'if [ ! -e {q(RUNNING)} ]; then echo "gpurig: unchanged"; exit 0; fi',
            f'S={q(STATUS)}."$(cat {q(RUNNING)})"',
            f'i=0; while [ ! -e "$S" ] && [ $i -lt {WAIT_S * 2} ]; do sleep 0.5; '
            "i=$((i + 1)); done",
            f"cat {q(LOG)} 2>/dev/null",
            'if [ ! -e "$S" ]; then',
            f'  echo "apt did not finish in {WAIT_S} s (its log: {LOG})" >&2',
            "  exit 1",
            "fi",
            f'rc=$(cat "$S"); rm -f {q(RUNNING)} "$S"',
            'exit "$rc"',
        ]
    )


def place_wait(stages: list[Stage], apt_step: str, gpu: bool) -> None:
    """The wait goes after the venv; on a GPU host before the driver stage, whose own apt
    commands need the lists and the dpkg lock."""
    stage = next(s for s in stages if s.name == ("python" if gpu else "llm_env"))
    stage.steps.append(
        AptWait(
            f"{stage.name}.apt_wait",
            "Wait for the apt packages",
            apt_step=apt_step,
            script=wait_script(),
        )
    )
