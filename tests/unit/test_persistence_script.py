"""The Ansible role's persistence step (the plan's script) under sh, with systemctl and
journalctl stand-ins: it decides as the pyinfra operation does, and its failure is named."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gpurig import diagnose
from gpurig.plan import driver as driver_plan
from gpurig.plan import driver_scripts

FAKE_SYSTEMCTL = """#!/bin/sh
# Unit state from $STATE_DIR/{enabled,active}; every call logged; start/restart fail on $FAIL.
echo "$*" >> "$STATE_DIR/calls"
case "$1" in
  is-enabled) cat "$STATE_DIR/enabled" 2>/dev/null ;;
  is-active) cat "$STATE_DIR/active" ;;
  start|restart) [ -z "$FAIL" ] || { echo "Job for $2 failed."; exit 1; } ;;
esac
"""
FAKE_JOURNALCTL = """#!/bin/sh
echo "$*" >> "$STATE_DIR/calls"
case "$*" in *"--sync"*) exit 0 ;; esac
echo "Failed to query NVIDIA devices. Please ensure that the NVIDIA device files exist."
"""


@pytest.mark.parametrize(
    ("enabled", "active", "prefix", "fail", "calls", "unchanged"),
    [
        ("", "inactive", "", "", [], True),  # not installed: nothing to do, said so
        ("enabled", "active", "", "", [], True),
        ("disabled", "inactive", "", "", ["enable nvidia-persistenced", "start "], False),
        ("enabled", "active", "restart=1; ", "", ["daemon-reload", "restart "], False),
    ],
)
def test_the_ansible_persistence_script_does_what_the_operation_does(
    tmp_path: Path,
    enabled: str,
    active: str,
    prefix: str,
    fail: str,
    calls: list[str],
    unchanged: bool,
) -> None:
    result, made = _run_persistence(tmp_path, enabled, active, prefix, fail)
    assert result.returncode == 0, result.stdout
    assert [c for c in made if not c.startswith("is-")] == [
        c + "nvidia-persistenced.service" if c.endswith(" ") else c for c in calls
    ]
    assert (driver_plan.UNCHANGED in result.stdout) is unchanged


def test_a_daemon_that_does_not_start_fails_the_script_with_its_journal(tmp_path: Path) -> None:
    result, made = _run_persistence(tmp_path, "enabled", "failed", "", "1")
    assert result.returncode == 1
    found = diagnose.from_output(result.stdout)
    assert [d.name for d in found] == [diagnose.PERSISTENCED_FAILED]
    assert "Failed to query NVIDIA devices" in found[0].message
    assert any(c.startswith("--since @") for c in made), made  # this start's lines only


def _run_persistence(
    tmp_path: Path, enabled: str, active: str, prefix: str, fail: str
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("systemctl", FAKE_SYSTEMCTL), ("journalctl", FAKE_JOURNALCTL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    (tmp_path / "enabled").write_text(enabled + "\n" if enabled else "")
    (tmp_path / "active").write_text(active + "\n")
    (bin_dir / "sleep").write_text("#!/bin/sh\n")  # the script's grace second
    (bin_dir / "sleep").chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "STATE_DIR": str(tmp_path),
        "FAIL": fail,
    }
    script = prefix + driver_scripts.persistence()
    result = subprocess.run(
        ["/bin/sh", "-c", script], env=env, capture_output=True, text=True, check=False
    )
    calls = tmp_path / "calls"
    return result, calls.read_text().splitlines() if calls.exists() else []
