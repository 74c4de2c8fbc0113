"""The deploy on hosts that boot like fresh cloud VMs: apt-daily and unattended-upgrades hold
the dpkg lock as the deploy starts. One run, two hosts: the one whose lock a real apt process
holds waits and passes; the one whose lock is held past the (shortened) bound fails with the
named dpkg-lock diagnosis, alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gpurig.sandbox.testing import SandboxFleet

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
BOUND_S = 90  # longer than unattended-upgrades' first run here, far shorter than 120 s
DEPLOY_TIMEOUT_S = 1500
# The command line of whatever holds the dpkg frontend lock now (empty when none does).
LOCK_HOLDER = (
    'i=":$(stat -c %i /var/lib/dpkg/lock-frontend) "; '
    "for p in $(awk -v i=\"$i\" 'index($0, i) {print $5}' /proc/locks); do "
    "tr '\\0' ' ' < /proc/$p/cmdline; echo; done"
)
HOLD_PAST_BOUND = (
    'sudo -n setsid -f python3 -c "import fcntl, time; '
    "f = open('/var/lib/dpkg/lock-frontend', 'w'); fcntl.lockf(f, fcntl.LOCK_EX); "
    'time.sleep(900)" </dev/null >/dev/null 2>&1'
)


def wait_for_holder(fleet: SandboxFleet, host: str, wanted: tuple[str, ...]) -> str:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        _, holders = fleet.ssh(host, LOCK_HOLDER)
        if any(word in holders for word in wanted):
            return holders
        time.sleep(0.5)
    pytest.fail(f"{host}: nothing like {wanted} took the dpkg lock within 120 s")


def test_first_boot_apt_waits_and_a_lock_past_the_bound_fails_alone(
    sandbox_fleet: Callable[..., SandboxFleet], tmp_path: Path
) -> None:
    fleet = sandbox_fleet(os="bookworm", count=2, init="systemd", first_boot_apt=True)
    waiting, stuck = (h.name for h in fleet.hosts)
    fleet.ssh(stuck, HOLD_PAST_BOUND)
    wait_for_holder(fleet, stuck, ("fcntl",))
    holder = wait_for_holder(fleet, waiting, ("unattended-upgrade", "apt-get", "apt.systemd"))
    print(f"{waiting}: the dpkg lock is held by {holder.strip()}")

    began = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "gpurig.cli", "deploy", "--skip-smoke"],
        cwd=REPO_ROOT,
        env={
            **fleet.env,
            "GPURIG_REPORTS_DIR": str(tmp_path),
            "GPURIG_APT_LOCK_TIMEOUT_S": str(BOUND_S),
        },
        capture_output=True,
        text=True,
        timeout=DEPLOY_TIMEOUT_S,
        check=False,
    )
    output = result.stdout + result.stderr
    print(f"--- gpurig deploy: exit {result.returncode} in {time.monotonic() - began:.0f} s")
    print(output[-6000:])

    assert result.returncode != 0
    record = json.loads((tmp_path / ".gpurig-run.json").read_text())
    statuses = {name: info["status"] for name, info in record["hosts"].items()}
    assert statuses == {waiting: "skipped", stuck: "failed"}  # skipped: the smoke test only
    failure = json.loads((tmp_path / f"{stuck}.json").read_text())["failures"][0]
    assert failure.startswith("dpkg lock held: another package manager holds "), failure
    assert "/var/lib/dpkg/lock-frontend" in failure
    code, journal = fleet.ssh(waiting, "journalctl -b -u apt-daily-upgrade.service -o cat")
    assert code == 0, journal
    assert "Finished apt-daily-upgrade.service" in journal, journal
    code, out = fleet.ssh(waiting, "/opt/gpurig/venv/bin/python -c 'import torch, bloomkit'")
    assert code == 0, out
