"""The Ansible front end on real sandbox hosts: fresh hosts to a green smoke test, a second run
that changes nothing, check mode, and the parity suite against Ansible and pyinfra hosts.

Economical by design (CI: 2 cores): one fleet of three fresh hosts. Ansible provisions a
bookworm and a trixie host while pyinfra provisions a second bookworm host, at the same time;
Ansible then re-runs on its two hosts, check mode runs on them, and the parity suite
(tests/parity) describes all three. A pretend-H100 host checks the GPU plan in check mode.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from gpurig import hostlayout
from gpurig.sandbox import Fleet
from gpurig.sandbox.testing import SandboxFleet
from helpers.front_ends import BIN, REPO_ROOT, Run, ansible_env, run_logged

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TIMEOUT_S = 1800
ANSIBLE_HOSTS = "sandbox-1,sandbox-2"  # bookworm, trixie
PYINFRA_HOST = "sandbox-3"  # bookworm


@dataclass
class Provisioned:
    fleet: Fleet
    reports: Path
    env: dict[str, str]
    ansible: Run
    pyinfra: Run

    @property
    def inventory(self) -> Path:
        return self.fleet.state.ansible_inventory_file


def _env(fleet: Fleet, reports: Path) -> dict[str, str]:
    sandbox = SandboxFleet(fleet, REPO_ROOT / "inventory.py")
    return ansible_env({**sandbox.env, "GPURIG_REPORTS_DIR": str(reports)})


def _run(name: str, argv: list[str], env: dict[str, str]) -> Run:
    return run_logged(name, argv, env, TIMEOUT_S)


def playbook(env: dict[str, str], *args: str) -> list[str]:
    return [str(BIN / "ansible-playbook"), "-i", env["_INVENTORY"], "playbooks/gpu.yml", *args]


def ansible(env: dict[str, str], *args: str) -> Run:
    return _run(f"ansible-playbook {' '.join(args)}", playbook(env, *args), env)


@pytest.fixture(scope="module")
def provisioned(
    engine: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Provisioned]:
    fleet = Fleet(tmp_path_factory.mktemp("sandbox-ansible"))
    try:
        fleet.up(1, os="bookworm")
        fleet.up(1, os="trixie")
        fleet.up(1, os="bookworm")
        reports = tmp_path_factory.mktemp("reports")
        env = _env(fleet, reports)
        env["_INVENTORY"] = str(fleet.state.ansible_inventory_file)
        # Both front ends at once, each on its own fresh hosts.
        pyinfra = [str(BIN / "pyinfra"), "-y", "inventory.py", "deploy/gpu.py"]
        with ThreadPoolExecutor(2) as pool:
            ansible_run = pool.submit(
                _run, "ansible-playbook (fresh)", playbook(env, "--limit", ANSIBLE_HOSTS), env
            )
            pyinfra_run = pool.submit(
                _run, "pyinfra (fresh)", [*pyinfra, "--limit", PYINFRA_HOST], env
            )
            runs = ansible_run.result(), pyinfra_run.result()
        yield Provisioned(fleet, reports, env, *runs)
    finally:
        fleet.down()


def test_fresh_hosts_converge_and_pass(provisioned: Provisioned) -> None:
    run = provisioned.ansible
    assert run.code == 0
    recap = run.recap()
    for host in ANSIBLE_HOSTS.split(","):
        assert recap[host]["failed"] == 0
        assert recap[host]["changed"] > 0
        report = json.loads((provisioned.reports / f"{host}.json").read_text())
        assert report["verdict"] == "pass", report.get("failures")
    torch = {
        host: json.loads((provisioned.reports / f"{host}.json").read_text())["env"]["torch"]
        for host in ANSIBLE_HOSTS.split(",")
    }
    assert torch["sandbox-1"]["version"] == "2.13.0+cpu"
    assert torch["sandbox-2"]["version"].startswith("2.13.0")  # trixie: PyPI's CUDA build
    assert "gpurig fleet summary" in run.output
    assert "2 of 2 host(s) passed" in run.output
    # The run file `gpurig report` reads names this run's hosts.
    summary = subprocess.run(
        [str(BIN / "gpurig"), "report"],
        cwd=REPO_ROOT,
        env=provisioned.env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert "sandbox-1" in summary.stdout


def test_pyinfra_host_converges_too(provisioned: Provisioned) -> None:
    assert provisioned.pyinfra.code == 0, provisioned.pyinfra.output[-3000:]


def test_second_run_changes_nothing(provisioned: Provisioned) -> None:
    assert provisioned.ansible.code == 0
    again = ansible(provisioned.env, "--limit", ANSIBLE_HOSTS)
    assert again.code == 0
    recap = again.recap()
    for host in ANSIBLE_HOSTS.split(","):
        assert recap[host]["changed"] == 0, f"{host} changed on a second run"
        assert recap[host]["failed"] == 0
    assert "2 of 2 host(s) passed" in again.output  # smoke ran again, unchanged


def test_check_mode_on_converged_hosts_is_clean(provisioned: Provisioned) -> None:
    assert provisioned.ansible.code == 0
    check = ansible(provisioned.env, "--limit", ANSIBLE_HOSTS, "--check", "--diff")
    assert check.code == 0
    assert all(r["changed"] == 0 for r in check.recap().values())
    assert "2 skipped" in check.output  # no smoke test in check mode


def test_drift_is_found_and_repaired(provisioned: Provisioned) -> None:
    """The roles skip what the one-round-trip probe shows in place (gpurig.plan.converged):
    a file with other bytes, a file with another mode and a folder with another owner are each
    found and put back, and the run after that changes nothing."""
    assert provisioned.ansible.code == 0
    host = provisioned.fleet.host("sandbox-1")
    tamper = (
        f"sudo chmod 0644 {hostlayout.ENV_FILE} && "
        f"echo '# edited by hand' | sudo tee -a {hostlayout.PROFILE_SCRIPT} >/dev/null && "
        f"sudo chown root:root {hostlayout.STATE_DIR}"
    )
    code, out = provisioned.fleet.ssh(host, tamper)
    assert code == 0, out
    no_smoke = ("--limit", "sandbox-1", "-e", '{"gpurig_skip_smoke": true}')
    repaired = ansible(provisioned.env, *no_smoke)
    assert repaired.code == 0
    assert repaired.recap()["sandbox-1"]["changed"] >= 3
    code, out = provisioned.fleet.ssh(
        host,
        f"sudo stat -c '%a %U' {hostlayout.ENV_FILE} {hostlayout.STATE_DIR}; "
        f"grep -c 'edited by hand' {hostlayout.PROFILE_SCRIPT}",
    )
    assert out.split() == ["640", "root", "755", "gpurig", "0"], out
    assert ansible(provisioned.env, *no_smoke).recap()["sandbox-1"]["changed"] == 0


def test_parity_suite_passes_on_both_front_ends(provisioned: Provisioned) -> None:
    assert provisioned.ansible.code == 0
    assert provisioned.pyinfra.code == 0
    suite = [sys.executable, "-m", "pytest", "tests/parity", "-p", "no:cacheprovider", "-q"]
    hosts = ["--hosts=ansible://all", f"--ansible-inventory={provisioned.inventory}"]
    run = subprocess.run(
        [*suite, *hosts, f"--reports-dir={provisioned.reports}"],
        cwd=REPO_ROOT,
        env=provisioned.env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    print(run.stdout[-5000:], run.stderr[-2000:])
    assert run.returncode == 0
    assert "30 passed" in run.stdout  # 10 checks on each of the three hosts


def test_preflight_refusal_names_the_reason(provisioned: Provisioned, tmp_path: Path) -> None:
    """Last: it rewrites sandbox-1's report with the refusal."""
    assert provisioned.ansible.code == 0
    env = {**provisioned.env, "GPURIG_REPORTS_DIR": str(tmp_path)}
    refused = ansible(env, "--limit", "sandbox-1", "-e", "gpurig_nvidia_require_gpu=true")
    assert refused.code != 0
    assert "preflight refused this host" in refused.output
    report = json.loads((tmp_path / "sandbox-1.json").read_text())
    assert report["verdict"] == "fail"
    assert "require_gpu" in report["failures"][0]


def test_gpu_host_plan_in_check_mode(provisioned: Provisioned, tmp_path: Path) -> None:
    """A pretend H100 on bookworm: the GPU layer's plan (CUDA repository driver 580, cu130)."""
    fleet = provisioned.fleet
    fleet.up(1, os="bookworm", pretend_gpu="H100")
    env = {**provisioned.env, "GPURIG_REPORTS_DIR": str(tmp_path)}
    check = ansible(env, "--limit", "sandbox-4", "--check", "--diff")
    assert check.code == 0
    assert "cu130-cp311" in check.output
    assert "NVIDIA driver 580 from NVIDIA's CUDA repository" in check.output
    assert "cuda-drivers-580" in check.output
