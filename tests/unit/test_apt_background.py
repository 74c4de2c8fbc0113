"""apt as a background job and the step that waits for it (gpurig.plan.apt_background): the
scripts run here with /bin/sh, a stand-in for apt-get in place of the install and the log
folder moved to a temp dir; and where the plan puts the wait."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from gpurig.hostlayout import LOG_DIR
from gpurig.plan import apt_background
from gpurig.plan.steps import AptWait, Stage, Venv


def sh(script: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    script = script.replace(LOG_DIR, str(tmp_path / "log"))
    return subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, timeout=30)


def test_the_install_runs_in_the_background_and_the_wait_takes_its_result(
    tmp_path: Path,
) -> None:
    # ca-certificates is installed on this machine: the job goes to the background.
    install = f"sleep 1; echo fetched git; touch {tmp_path}/done"
    began = time.monotonic()
    started = sh(apt_background.start_script(install), tmp_path)
    assert started.returncode == 0, started.stderr
    assert time.monotonic() - began < 0.9  # returned before the install finished
    assert "gpurig: changed: apt installs in the background" in started.stdout
    assert not (tmp_path / "done").exists()

    waited = sh(apt_background.wait_script(), tmp_path)
    assert waited.returncode == 0, waited.stderr
    assert "fetched git" in waited.stdout  # the job's log, for the diagnosis
    assert (tmp_path / "done").exists()
    assert sorted(p.name for p in (tmp_path / "log").iterdir()) == ["apt.log"]

    again = sh(apt_background.wait_script(), tmp_path)  # nothing left running
    assert (again.returncode, again.stdout.strip()) == (0, "gpurig: unchanged")


def test_a_failed_install_fails_the_wait_with_apt_s_words_and_status(tmp_path: Path) -> None:
    install = "echo 'E: Could not get lock /var/lib/dpkg/lock-frontend' >&2; exit 100"
    assert sh(apt_background.start_script(install), tmp_path).returncode == 0
    waited = sh(apt_background.wait_script(), tmp_path)
    assert waited.returncode == 100
    assert "Could not get lock /var/lib/dpkg/lock-frontend" in waited.stdout


def test_a_job_left_by_an_earlier_run_does_not_answer_for_the_next(tmp_path: Path) -> None:
    assert sh(apt_background.start_script("exit 7"), tmp_path).returncode == 0
    time.sleep(0.5)  # the first job is done; its status was never taken
    assert sh(apt_background.start_script("sleep 0.5; exit 0"), tmp_path).returncode == 0
    assert sh(apt_background.wait_script(), tmp_path).returncode == 0


def _stages() -> list[Stage]:
    venv = Venv("llm_env.venv", "Install the locked venv")
    return [Stage("system"), Stage("python"), Stage("llm_env", [venv]), Stage("verify")]


@pytest.mark.parametrize(("gpu", "stage"), [(False, "llm_env"), (True, "python")])
def test_the_wait_comes_after_the_venv_or_before_the_driver(gpu: bool, stage: str) -> None:
    stages = _stages()
    apt_background.place_wait(stages, "system.apt", gpu=gpu)
    placed = {s.name: [step.id for step in s.steps] for s in stages}
    assert placed[stage][-1] == f"{stage}.apt_wait"
    wait = next(s for s in stages if s.name == stage).steps[-1]
    assert isinstance(wait, AptWait)
    assert wait.apt_step == "system.apt"
    assert sum(len(ids) for ids in placed.values()) == 2  # the venv and one wait
