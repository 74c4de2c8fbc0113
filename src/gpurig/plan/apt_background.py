"""apt as a background job that a later step waits for (gpurig.plan.background): the lists
refresh and the install (network and dpkg) overlap the wheel push and the venv build (network
and CPU) instead of coming before them.

The wait step (`JobWait`), placed before the first step that needs the packages, prints the
job's log and takes its exit status, so a failure reads as the same named diagnosis as a
foreground install (a dpkg lock held past the bound, a package missing from the archive). The
bounded dpkg-lock wait is apt's own, as before.

The job runs in the foreground when ca-certificates is missing: the trust store the venv's
downloads need comes with it. Where an apt source is https, the job first lets the trust
store's update end (gpurig.plan.trust): it may go through an intercepting proxy whose CA that
update adds. Plain http sources do not wait for it.
"""

from __future__ import annotations

import shlex

from gpurig.plan import trust
from gpurig.plan.background import Job
from gpurig.plan.steps import JobWait, Stage

FIRST_NEEDED = "ca-certificates"  # installed before anything else runs, when missing
# The wait's bound: apt's own dpkg-lock wait, twice (update and install), and the install.
JOB = Job("apt", "apt installs", wait_s=1800)
# Any https source, one-line (sources.list) or deb822 (*.sources: "URIs: https://...").
HTTPS_SOURCES = "grep -rqsE '^[^#]*https://' /etc/apt/sources.list /etc/apt/sources.list.d"


def start_script(install: str) -> str:
    """What the apt step runs when a package is missing (the caller checked that); `install`:
    gpurig.plan.system.apt_install's command."""
    return "\n".join(
        [
            f"if ! dpkg-query -W -f='${{db:Status-Abbrev}}' {shlex.quote(FIRST_NEEDED)} "
            "2>/dev/null | grep -q '^ii'; then",
            f"  {install}",
            "  exit $?",
            "fi",
            *JOB.start(f"if {HTTPS_SOURCES}; then {trust.JOB.awaited()}; fi; {install}"),
        ]
    )


def wait_script() -> str:
    return JOB.wait()


def place_wait(stages: list[Stage], apt_step: str, gpu: bool) -> None:
    """The wait goes after the venv; on a GPU host before the driver stage, whose own apt
    commands need the lists and the dpkg lock."""
    stage = next(s for s in stages if s.name == ("python" if gpu else "llm_env"))
    stage.steps.append(
        JobWait(
            f"{stage.name}.apt_wait",
            "Wait for the apt packages",
            started_by=apt_step,
            script=wait_script(),
        )
    )
