"""Background jobs and the steps that wait for them (gpurig.plan.background): apt's install
(gpurig.plan.apt_background) and the trust store's update (gpurig.plan.trust). The scripts run
here with /bin/sh, stand-ins for apt-get and update-ca-certificates, the log folder moved to a
temp dir; and where the plan puts each wait."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from gpurig.hostlayout import LOG_DIR
from gpurig.plan import apt_background, trust
from gpurig.plan.steps import JobWait, Stage, Venv


def sh(script: str, tmp_path: Path, path: str | None = None) -> subprocess.CompletedProcess[str]:
    script = script.replace(LOG_DIR, str(tmp_path / "log"))
    script = script.replace("/etc/apt/sources.list", str(tmp_path / "sources.list"))
    env = {**os.environ, "PATH": f"{path}:{os.environ['PATH']}"} if path else None
    return subprocess.run(
        ["/bin/sh", "-c", script], capture_output=True, text=True, timeout=30, env=env
    )


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
    assert isinstance(wait, JobWait)
    assert wait.started_by == "system.apt"
    assert sum(len(ids) for ids in placed.values()) == 2  # the venv and one wait


def fake_update(tmp_path: Path, body: str) -> str:
    """A folder with an `update-ca-certificates` that runs `body`."""
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    tool = folder / "update-ca-certificates"
    tool.write_text(f"#!/bin/sh\n{body}\n")
    tool.chmod(0o755)
    return str(folder)


def test_the_trust_store_updates_in_the_background_and_apt_lets_it_end_first(
    tmp_path: Path,
) -> None:
    # An https source (deb822): apt may go through the proxy whose CA the update adds.
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: https://deb.debian.org/debian\nSuites: trixie\n"
    )
    ca = tmp_path / "gpurig-ca.crt"
    ca.write_text("a bundle")
    path = fake_update(tmp_path, f"sleep 1; echo updated; touch {tmp_path}/updated")
    began = time.monotonic()
    started = sh(trust.update_script(str(ca)), tmp_path, path)
    assert started.returncode == 0, started.stderr
    assert time.monotonic() - began < 0.9  # returned before the update finished
    assert "gpurig: changed: the trust store updates in the background" in started.stdout
    # apt's job starts meanwhile: it runs its install only once the update has ended.
    install = f"test -e {tmp_path}/updated && echo saw the update"
    assert sh(apt_background.start_script(install), tmp_path).returncode == 0
    waited = sh(trust.JOB.wait(), tmp_path)
    assert (waited.returncode, waited.stdout.strip()) == (0, "updated")
    assert "saw the update" in sh(apt_background.wait_script(), tmp_path).stdout
    assert ca.exists()


def test_apt_with_http_sources_does_not_wait_for_the_trust_store(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text(
        "# deb https://commented.example/debian bookworm main\n"
        "deb http://deb.debian.org/debian bookworm main\n"
    )
    path = fake_update(tmp_path, f"sleep 2; touch {tmp_path}/updated")
    assert sh(trust.update_script(str(tmp_path / "ca.crt")), tmp_path, path).returncode == 0
    install = f"test -e {tmp_path}/updated || echo ran beside the update"
    assert sh(apt_background.start_script(install), tmp_path).returncode == 0
    assert "ran beside the update" in sh(apt_background.wait_script(), tmp_path).stdout
    assert sh(trust.JOB.wait(), tmp_path).returncode == 0


def test_a_failed_update_fails_its_wait_and_removes_the_bundle_for_a_retry(
    tmp_path: Path,
) -> None:
    ca = tmp_path / "gpurig-ca.crt"
    ca.write_text("a bundle")
    path = fake_update(tmp_path, "echo 'cannot write the bundle' >&2; exit 3")
    assert sh(trust.update_script(str(ca)), tmp_path, path).returncode == 0
    waited = sh(trust.JOB.wait(), tmp_path)
    assert waited.returncode == 3
    assert "cannot write the bundle" in waited.stdout
    assert not ca.exists()  # the next run's probe finds it missing: copied again, updated again


def test_apt_does_not_wait_on_a_trust_job_that_died_without_a_status(tmp_path: Path) -> None:
    # An earlier deploy was cut off and the host rebooted: the job's record stays, it does not.
    (tmp_path / "sources.list").write_text("deb https://deb.debian.org/debian bookworm main\n")
    (tmp_path / "log").mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    running = trust.JOB.running.replace(LOG_DIR, str(tmp_path / "log"))
    Path(running).write_text(f"4242 {dead.pid}\n")
    began = time.monotonic()
    assert sh(apt_background.start_script("echo installed"), tmp_path).returncode == 0
    assert "installed" in sh(apt_background.wait_script(), tmp_path).stdout
    assert time.monotonic() - began < 5


@pytest.mark.parametrize(
    ("early", "stage", "after"),
    [(False, "llm_env", "llm_env.wheels"), (True, "python", "python.uv")],
)
def test_the_trust_wait_comes_before_the_first_download(
    early: bool, stage: str, after: str
) -> None:
    stages = [
        Stage("system"),
        Stage("python", [Venv("python.uv", "Install uv"), Venv("python.profile", "PATH")]),
        Stage("llm_env", [Venv("llm_env.wheels", "Push"), Venv("llm_env.venv", "Install")]),
    ]
    trust.place_wait(stages, "system.ca", early=early)
    ids = [step.id for s in stages if s.name == stage for step in s.steps]
    assert ids[ids.index(after) + 1] == f"{stage}.trust_wait"
    wait = next(step for s in stages for step in s.steps if step.id.endswith("trust_wait"))
    assert isinstance(wait, JobWait)
    assert wait.started_by == "system.ca"
    assert sum(len(s.steps) for s in stages) == 5
