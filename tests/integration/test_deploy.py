"""The pyinfra deploy on real sandbox hosts: fresh hosts to a green smoke test, re-runs that
change nothing, faults, interruption and offline installs.

Economical by design (CI: 2 cores): one bookworm host carries the chain fresh deploy ->
no-change re-run -> preflight stop -> interrupted install -> offline install; one trixie host
(its CUDA torch is ~3 GB); three hosts for the fault test, without smoke tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpurig.sandbox.testing import SandboxFleet

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
LINK = "/opt/gpurig/venv"
DEPLOY_TIMEOUT_S = 1500
# The ids of running venv installs (uv itself, not the script that starts it). A shell loop, as
# minimal hosts have no procps; the pattern is assembled at run time so that this shell's own
# command line does not match it.
FIND_INSTALL = (
    "pat='/usr/local/bin/uv pip syn''c'; for p in /proc/[0-9]*; do "
    "c=$(tr '\\0' ' ' 2>/dev/null < $p/cmdline); "
    'case "$c" in "$pat"*) echo ${p#/proc/};; esac; done 2>/dev/null'
)


def installs(fleet: SandboxFleet, host: str) -> list[str]:
    """Process ids of the venv installs running on a host."""
    return [pid for pid in fleet.ssh(host, FIND_INSTALL)[1].split() if pid.isdigit()]


@dataclass
class Deploy:
    code: int
    output: str
    seconds: float
    run: dict[str, Any]  # reports/.gpurig-run.json
    reports: Path

    def report(self, host: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.reports / f"{host}.json").read_text())
        return data

    def changed(self, host: str) -> list[str]:
        return list(self.run["hosts"][host]["changed"])


def deploy_env(fleet: SandboxFleet, reports: Path, **extra: str) -> dict[str, str]:
    return {**fleet.env, "GPURIG_REPORTS_DIR": str(reports), **extra}


def gpurig_deploy(fleet: SandboxFleet, reports: Path, *args: str, **env: str) -> Deploy:
    began = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "gpurig.cli", "deploy", *args],
        cwd=REPO_ROOT,
        env=deploy_env(fleet, reports, **env),
        capture_output=True,
        text=True,
        timeout=DEPLOY_TIMEOUT_S,
        check=False,
    )
    seconds = time.monotonic() - began
    output = result.stdout + result.stderr
    run_file = reports / ".gpurig-run.json"
    run = json.loads(run_file.read_text()) if run_file.exists() else {}
    print(f"\n--- gpurig deploy {' '.join(args)}: exit {result.returncode} in {seconds:.1f} s")
    print(output[-6000:])
    return Deploy(result.returncode, output, seconds, run, reports)


def ssh_ok(fleet: SandboxFleet, host: str, command: str) -> str:
    code, out = fleet.ssh(host, command)
    assert code == 0, f"{command!r} on {host}: exit {code}: {out}"
    return out


def relocked(tmp_path: Path, target: str = "cpu-cp311") -> Path:
    """A copy of lock/ whose target pins the same packages under a new identity (a new venv)."""
    copy = tmp_path / "lock"
    copy.mkdir()
    manifest = json.loads((REPO_ROOT / "lock" / "manifest.json").read_text())
    for name, entry in manifest["targets"].items():
        text = (REPO_ROOT / "lock" / entry["file"]).read_text()
        if name == target:
            text = "# re-locked by the interruption test\n" + text
            entry["sha256"] = hashlib.sha256(text.encode()).hexdigest()
        (copy / entry["file"]).write_text(text)
    (copy / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return copy


# --- one bookworm host, from fresh to offline -------------------------------------------------


@pytest.fixture(scope="module")
def bookworm(sandbox_fleet: Callable[..., SandboxFleet]) -> SandboxFleet:
    return sandbox_fleet(os="bookworm", count=1, name="deploy-bookworm")


@pytest.fixture(scope="module")
def dry_on_fresh(
    bookworm: SandboxFleet, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Deploy, int]:
    """`gpurig deploy --dry` on the fresh host, and whether /opt/gpurig exists after it."""
    dry = gpurig_deploy(bookworm, tmp_path_factory.mktemp("dry-reports"), "--dry")
    # Nothing installed, and no wheel pushed ahead of its step (a dry run executes nothing).
    code, _ = bookworm.ssh(
        bookworm.hosts[0].name, "test -e /opt/gpurig || test -e /var/cache/gpurig"
    )
    return dry, code


@pytest.fixture(scope="module")
def fresh_bookworm(
    bookworm: SandboxFleet,
    dry_on_fresh: tuple[Deploy, int],
    tmp_path_factory: pytest.TempPathFactory,
) -> Deploy:
    """The first deploy of a fresh host (after a dry run), while something holds the dpkg lock
    for a while (as unattended-upgrades does on a fresh cloud VM)."""
    host = bookworm.hosts[0].name
    hold = (
        'sudo -n setsid -f python3 -c "import fcntl, time; '
        "f = open('/var/lib/dpkg/lock-frontend', 'w'); fcntl.lockf(f, fcntl.LOCK_EX); "
        'time.sleep(20)" </dev/null >/dev/null 2>&1'
    )
    ssh_ok(bookworm, host, hold)
    held = 'grep -q ":$(stat -c %i /var/lib/dpkg/lock-frontend) " /proc/locks'
    deadline = time.monotonic() + 30
    while bookworm.ssh(host, held)[0] != 0:
        assert time.monotonic() < deadline, "the dpkg lock was never taken"
        time.sleep(0.2)
    return gpurig_deploy(bookworm, tmp_path_factory.mktemp("reports"))


def test_dry_run_on_a_fresh_host_shows_changes_and_makes_none(
    dry_on_fresh: tuple[Deploy, int],
) -> None:
    dry, opt_exists = dry_on_fresh
    assert dry.code == 0
    changes = {
        ln.strip().split("  ")[0]
        for ln in dry.output.splitlines()
        if re.search(r"\s1 \(sandbox-\d+\)", ln)
    }
    for name in (
        "System | Install apt packages",
        "System | Create the service user",
        "LLM environment | Install the locked venv (cpu-cp311)",
    ):
        assert name in changes
    assert opt_exists != 0  # nothing was installed


def test_fresh_bookworm_deploy_passes(bookworm: SandboxFleet, fresh_bookworm: Deploy) -> None:
    host = bookworm.hosts[0].name
    assert fresh_bookworm.code == 0
    report = fresh_bookworm.report(host)
    assert report["verdict"] == "pass"
    assert report["env"]["torch"]["version"] == "2.13.0+cpu"
    assert "dpkg lock is held by" in fresh_bookworm.output  # preflight saw it; apt waited
    assert re.search(r"host\s.*verdict", fresh_bookworm.output)  # the fleet summary
    assert "1 of 1 host(s) passed" in fresh_bookworm.output
    # The wheels went out in the background from preflight, each hash checked on the host.
    pushed = r"wheel push: [0-9]+ file\(s\), [0-9.,]+ MB, hashes checked, [0-9.]+ s in the back"
    assert re.search(pushed, fresh_bookworm.output)
    # Not a terminal: one timed line per stage transition; each stage's seconds in the run file
    # and the summary's stage table (docs/deploy.md).
    stages = ["preflight", "system", "python", "llm_env", "cluster", "verify"]
    for stage in stages:
        done = rf"\[\+ *[0-9.]+s\] {host} {stage}: done in [0-9.]+ s"
        assert re.search(done, fresh_bookworm.output), stage
    seconds = fresh_bookworm.run["hosts"][host]["stages"]
    assert list(seconds) == stages
    # apt (in the background from the system stage) waited for the dpkg lock held 20 s, and the
    # llm_env stage's wait step ended only after it.
    assert seconds["system"] + seconds["python"] + seconds["llm_env"] > 15
    assert seconds["llm_env"] > seconds["python"]
    assert "seconds per stage" in fresh_bookworm.output
    # The end state (docs/host-end-state.md).
    target = ssh_ok(bookworm, host, f"readlink {LINK}").strip()
    assert re.fullmatch(r"/opt/gpurig/venvs/cpu-cp311-[0-9a-f]{12}", target)
    marker = json.loads(ssh_ok(bookworm, host, f"cat {target}/gpurig-venv.json"))
    assert marker["target"] == "cpu-cp311"
    assert marker["python"] == "3.11"
    who = ssh_ok(bookworm, host, "sudo -n runuser -l gpurig -c 'command -v python bloomkit'")
    assert who.split() == [f"{LINK}/bin/python", f"{LINK}/bin/bloomkit"]
    denied = bookworm.ssh(host, f"sudo -n -u gpurig touch {target}/bin/x")
    assert denied[0] != 0  # the venv is root's, read-only to the service user
    # Root wrote the bytecode of most of what the smoke imports (bloomkit.warm) beside the
    # import check, before the venv went live; readable by the service user.
    pyc = "find {}/lib -path '*/sympy/core/__pycache__/*.pyc' -user root -perm -0444"
    assert ssh_ok(bookworm, host, pyc.format(target)).strip()
    dynamo, marker_file = "*/torch/_dynamo/__pycache__/*.pyc", f"{target}/gpurig-venv.json"
    early = f"find {target}/lib -path '{dynamo}' ! -newer {marker_file}"
    assert ssh_ok(bookworm, host, early).strip()
    left = ssh_ok(bookworm, host, "sudo -n find /tmp -maxdepth 1 -user root -name 'tmp.*'")
    assert left.strip() == ""
    ssh_ok(bookworm, host, "test -s /usr/local/share/ca-certificates/gpurig-ca.crt")
    # Root and the service user read the environment file; the SSH user may not (0640).
    ssh_ok(bookworm, host, "sudo grep -q '^SSL_CERT_FILE=' /etc/gpurig/environment")
    code, _ = bookworm.ssh(host, "cat /etc/gpurig/environment")
    assert code != 0


def test_second_run_changes_nothing(
    bookworm: SandboxFleet, fresh_bookworm: Deploy, tmp_path: Path
) -> None:
    assert fresh_bookworm.code == 0
    again = gpurig_deploy(bookworm, fresh_bookworm.reports, "--skip-smoke")
    host = bookworm.hosts[0].name
    assert again.code == 0
    assert again.changed(host) == []
    assert "SKIPPED" in again.output
    dry = gpurig_deploy(bookworm, fresh_bookworm.reports, "--dry")
    assert dry.code == 0
    # --dry names what would change: only the smoke test, which runs by design.
    changes = [ln for ln in dry.output.splitlines() if re.search(r"\s1 \(sandbox-\d+\)", ln)]
    assert [ln.strip().split("  ")[0] for ln in changes] == ["Verify | Run bloomkit smoke"]


def test_a_large_file_changed_in_place_is_found_despite_the_digest_memo(
    bookworm: SandboxFleet, fresh_bookworm: Deploy, tmp_path: Path
) -> None:
    """Root remembers large files' digests by inode, size, mtime and ctime: one byte of uv's
    binary rewritten in place (same inode, same size) is still found and put back."""
    host = bookworm.hosts[0].name
    assert gpurig_deploy(bookworm, tmp_path / "a", "--skip-smoke").code == 0  # memo written
    memo = ssh_ok(bookworm, host, "sudo -n stat -c '%a %U' /var/cache/gpurig/sha256-memo")
    assert memo.split() == ["600", "root"]
    size = ssh_ok(bookworm, host, "stat -c %s /usr/local/bin/uv").strip()
    assert size in ssh_ok(bookworm, host, "sudo -n cat /var/cache/gpurig/sha256-memo")
    flip = "printf x | dd of=/usr/local/bin/uv bs=1 seek=4096 conv=notrunc status=none"
    ssh_ok(bookworm, host, f"sudo -n sh -c '{flip}'")
    repaired = gpurig_deploy(bookworm, tmp_path / "b", "--skip-smoke")
    assert repaired.code == 0
    assert repaired.changed(host) == ["Python | Install uv"]
    again = gpurig_deploy(bookworm, tmp_path / "c", "--skip-smoke")
    assert again.changed(host) == []


def test_a_host_failing_preflight_stops_with_its_reason(
    bookworm: SandboxFleet, fresh_bookworm: Deploy
) -> None:
    host = bookworm.hosts[0].name
    stopped = gpurig_deploy(
        bookworm, fresh_bookworm.reports, "--", "--data", "gpurig_torch_version=2.9.1"
    )
    assert stopped.code != 0
    assert stopped.run["hosts"][host]["status"] == "failed"
    assert stopped.changed(host) == []
    (failure,) = stopped.report(host)["failures"]
    assert failure.startswith("preflight: host data gpurig_torch_version changes what lock/")
    assert f"{host} fail: preflight:" in stopped.output
    failed = rf"\] {host} preflight: FAILED after [0-9.]+ s: preflight: host data gpurig_torch"
    assert re.search(failed, stopped.output)  # the progress line names the stage and why
    assert "system: started" not in stopped.output


def test_interrupted_venv_install_converges(
    bookworm: SandboxFleet, fresh_bookworm: Deploy, tmp_path: Path
) -> None:
    host = bookworm.hosts[0].name
    old = ssh_ok(bookworm, host, f"readlink {LINK}").strip()
    lock_dir = relocked(tmp_path)
    # An empty uv cache makes the install long enough to cut off.
    ssh_ok(bookworm, host, "sudo -n rm -rf /root/.cache/uv")
    env = deploy_env(bookworm, fresh_bookworm.reports, GPURIG_LOCK=str(lock_dir))
    log = (tmp_path / "cut.log").open("w")
    cut = subprocess.Popen(
        [sys.executable, "-m", "gpurig.cli", "deploy", "--skip-smoke"],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 600
        pids: list[str] = []
        while not pids and time.monotonic() < deadline and cut.poll() is None:
            pids = installs(bookworm, host)
            time.sleep(0.3)
        assert pids, f"the venv install never started: {(tmp_path / 'cut.log').read_text()[-3000:]}"
        time.sleep(2)
    finally:
        os.killpg(cut.pid, signal.SIGKILL)  # the controller dies mid-install...
        cut.wait()
    # ...and so does the host side (a lost connection may leave it running; end it by its ids).
    for pid in installs(bookworm, host):
        bookworm.ssh(host, f"sudo -n kill -9 {pid}")
    assert ssh_ok(bookworm, host, f"readlink {LINK}").strip() == old
    ssh_ok(bookworm, host, f"{LINK}/bin/python -c 'import torch, transformers, bloomkit'")
    # The cut-off build is beside the venvs, hidden, without a marker: never a venv to use.
    venvs = ssh_ok(bookworm, host, "ls -d /opt/gpurig/venvs/*/").split()
    assert [d.rstrip("/") for d in venvs] == [old]
    cut_off = "/opt/gpurig/venvs/.gpurig-build"
    ssh_ok(bookworm, host, f"test -d {cut_off}")
    assert bookworm.ssh(host, f"test -e {cut_off}/gpurig-venv.json")[0] != 0  # incomplete

    rerun = gpurig_deploy(
        bookworm, fresh_bookworm.reports, "--skip-smoke", GPURIG_LOCK=str(lock_dir)
    )
    assert rerun.code == 0
    live = ssh_ok(bookworm, host, f"readlink {LINK}").strip()
    # `new`, rebuilt; or, if the bloomkit sources changed meanwhile, a newer id in its place.
    assert live != old
    ssh_ok(bookworm, host, f"test -s {live}/gpurig-venv.json && test -d {old}")  # old kept
    ssh_ok(bookworm, host, f"{LINK}/bin/python -c 'import torch, transformers, bloomkit'")
    remaining = ssh_ok(bookworm, host, "ls -d /opt/gpurig/venvs/*/").split()
    assert sorted(d.rstrip("/") for d in remaining) == sorted([old, live])
    assert bookworm.ssh(host, f"test -e {cut_off}")[0] != 0  # the rebuild started afresh


def test_offline_install_from_the_wheelhouse(
    bookworm: SandboxFleet, fresh_bookworm: Deploy, tmp_path: Path
) -> None:
    host = bookworm.hosts[0].name
    stack = yaml.safe_load((REPO_ROOT / "stack.yml").read_text())
    stack["install"] = {"offline": True, "wheelhouse": str(tmp_path / "wheelhouse")}
    stack["network"]["proxy"] = "http://127.0.0.1:9"  # the route to PyPI points nowhere
    offline_stack = tmp_path / "stack.yml"
    offline_stack.write_text(yaml.safe_dump(stack))
    # A host without its venvs, its wheels or a uv cache: everything comes from the bundle.
    ssh_ok(
        bookworm,
        host,
        "sudo -n rm -rf /opt/gpurig/venv /opt/gpurig/venvs /var/cache/gpurig/wheels "
        "/root/.cache/uv",
    )
    offline = gpurig_deploy(
        bookworm, fresh_bookworm.reports, "--skip-smoke", GPURIG_STACK=str(offline_stack)
    )
    assert offline.code == 0
    # The proxy is real on the host: an index would be unreachable.
    code, out = bookworm.ssh(
        host,
        "sudo sh -c 'set -a; . /etc/gpurig/environment; echo six | /usr/local/bin/uv pip compile "
        "--no-cache - 2>&1'",
    )
    assert code != 0, out
    assert "environment" not in out  # the file was read: it is the proxy that failed
    wheels = ssh_ok(bookworm, host, "ls /var/cache/gpurig/wheels").split()
    assert any(w.startswith("transformers-") for w in wheels)
    ssh_ok(bookworm, host, f"{LINK}/bin/python -c 'import torch, transformers, bloomkit'")


# --- trixie: Python 3.13, the PyPI CUDA build on a CPU ---------------------------------------


def test_fresh_trixie_deploy_passes(
    sandbox_fleet: Callable[..., SandboxFleet], tmp_path: Path
) -> None:
    fleet = sandbox_fleet(os="trixie", count=1, name="deploy-trixie")
    host = fleet.hosts[0].name
    result = gpurig_deploy(fleet, tmp_path)
    assert result.code == 0
    report = result.report(host)
    assert report["verdict"] == "pass"
    assert report["env"]["torch"]["cuda"] == "13.0"  # cu130-cp313: runs on the CPU
    assert "installs cu130-cp313" in result.output


# --- three hosts, one stopped mid-run ---------------------------------------------------------


def test_a_host_lost_mid_run_fails_alone(
    sandbox_fleet: Callable[..., SandboxFleet], tmp_path: Path
) -> None:
    fleet = sandbox_fleet(os="bookworm", count=3, name="deploy-three")
    names = [h.name for h in fleet.hosts]
    lost = names[2]
    log_path = tmp_path / "run.log"
    with log_path.open("w") as log:
        run = subprocess.Popen(
            [sys.executable, "-m", "gpurig.cli", "deploy", "--skip-smoke"],
            cwd=REPO_ROOT,
            env=deploy_env(fleet, tmp_path),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and run.poll() is None:
            if installs(fleet, lost):
                break
            time.sleep(0.5)
        fleet.stop(lost)  # the host goes down in the middle of its venv install
        code = run.wait(timeout=DEPLOY_TIMEOUT_S)
    output = log_path.read_text()
    print(output[-6000:])
    assert code != 0
    record = json.loads((tmp_path / ".gpurig-run.json").read_text())
    statuses = {name: info["status"] for name, info in record["hosts"].items()}
    assert statuses == {names[0]: "skipped", names[1]: "skipped", lost: "failed"}
    failure = json.loads((tmp_path / f"{lost}.json").read_text())["failures"][0]
    assert failure.startswith("failed at 'LLM environment")
    assert re.search(rf"{lost} fail: failed at", output)
    for name in names[:2]:
        ssh_ok(fleet, name, f"{LINK}/bin/python -c 'import torch, bloomkit'")
