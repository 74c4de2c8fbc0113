"""The GPU layer on real sandbox hosts (no GPU here: `--pretend-gpu` puts one on the PCI bus).

- plans (`--dry`) on Debian 12 and 13, Secure Boot off and on, and the skip on GPU-less hosts;
- `gpurig preflight` against the same inventory the deploy uses, also on a pretend HGX board
  with a loaded 535 driver; on that systemd host, the fabric manager's service step meeting a
  unit that fails as it does without GPUs;
- for real: Debian's driver packages installed on a bookworm host, whose DKMS build cannot
  work (the container runs this machine's kernel; no archive has its headers): the run must end
  in the named diagnosis, not in dpkg's output.
- on a systemd host (a VM stand-in) with a pretend driver upgraded under its loaded module and
  Debian's real nvidia-persistenced: both front ends reboot it for real and reconnect, then end
  in the named persistenced diagnosis (the daemon finds no driver); a host that does not come
  back from the reboot is named within the bound.

Ubuntu has no sandbox host (no Ubuntu archive here): its plans are operation tests with injected
facts (tests/unit/test_nvidia_deploy.py), as are a loaded driver that is too old or right.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gpurig import diagnose, spec
from gpurig.lock import LOCK_VERSION, MANIFEST, target_name
from gpurig.plan import fabric
from gpurig.plan.driver import ENV_REBOOT_TIMEOUT as ENV_REBOOT
from gpurig.sandbox import doubles
from gpurig.sandbox.state import SandboxHost
from gpurig.sandbox.testing import SandboxFleet

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
STAGE = REPO / "tests/integration/deploys/nvidia_stage.py"
Fleet = Callable[..., SandboxFleet]
DEBIAN_535 = """\
version: 1
python: ["3.11", "3.13"]
torch: {version: "2.13.0", variants: [cu126, cpu]}
nvidia: {driver_branch: 535}
"""


def stack_file(tmp_path: Path, text: str | None) -> Path:
    if text is None:
        return REPO / "stack.yml"
    path = tmp_path / "stack.yml"
    path.write_text(text)
    return path


def pyinfra(
    fleet: SandboxFleet,
    stack: Path,
    *args: str,
    timeout: float = 600,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "pyinfra", str(fleet.inventory_path), str(STAGE), *args]
    env = {**fleet.env, "GPURIG_STACK": str(stack), **(env or {})}
    return subprocess.run(
        argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )


def failing_playbook(
    fleet: SandboxFleet, reports: Path, playbook: str = "playbooks/gpu.yml", **env: str
) -> str:
    """The Ansible front end on the fleet (or the test playbook of one stage), which must
    fail; its output."""
    argv = [
        str(Path(sys.executable).with_name("ansible-playbook")),
        "-i",
        str(fleet.ansible_inventory),
        playbook,
    ]
    env = {
        **fleet.env,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_FORCE_COLOR": "0",
        "GPURIG_REPORTS_DIR": str(reports),
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        **env,
    }
    run = subprocess.run(
        argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=900, check=False
    )
    output = run.stdout + run.stderr
    assert run.returncode != 0, output[-3000:]
    return output


def plan(fleet: SandboxFleet, stack: Path) -> dict[str, list[str]]:
    """Operation name -> the hosts it would change, from `pyinfra --dry --json`."""
    run = pyinfra(fleet, stack, "--dry", "--json")
    assert run.returncode == 0, run.stderr[-2000:]
    payload: dict[str, Any] = json.loads(run.stdout)
    return {
        op["name"].removeprefix("NVIDIA driver | "): op["hosts_with_change"]
        for op in payload["plan"]
    }


@pytest.mark.parametrize(
    ("os", "sku", "stack", "expected"),
    [
        ("bookworm", "H100", None, [
            "Add NVIDIA's CUDA repository (key 3BF863CC checked)",
            "Install NVIDIA driver 580 from NVIDIA's CUDA repository, DKMS modules",
        ]),
        ("bookworm", "H100", DEBIAN_535, [
            "Install NVIDIA driver 535 from Debian's non-free archive, DKMS modules",
        ]),
        ("trixie", "L4", None, [
            "Add NVIDIA's CUDA repository (key 3BF863CC checked)",
            "Install NVIDIA driver 580 from NVIDIA's CUDA repository, DKMS modules",
        ]),
    ],
)  # fmt: skip
def test_dry_plan_installs_the_driver_for_a_pretend_gpu(
    sandbox_fleet: Fleet,
    tmp_path: Path,
    os: str,
    sku: str,
    stack: str | None,
    expected: list[str],
) -> None:
    fleet = sandbox_fleet(os=os, count=1, pretend_gpu=sku, name=f"nvidia-dry-{os}")
    name = fleet.hosts[0].name
    changes = plan(fleet, stack_file(tmp_path, stack))
    for op in [*expected, "Blacklist nouveau", "Load the NVIDIA driver"]:
        assert changes.get(op) == [name], (op, changes)
    kernel = next(op for op in changes if op.startswith("Build the NVIDIA module for kernel "))
    assert changes[kernel] == [name]
    assert changes["Hold the NVIDIA driver packages"] == [name]
    assert changes["Keep unattended-upgrades off the driver"] == [name]
    assert changes["Enable persistence mode (nvidia-persistenced)"] == []  # no systemd here
    assert "Check the DKMS signing key is enrolled" not in changes
    # --dry changed nothing.
    _status, out = fleet.ssh(name, "dpkg -l 'nvidia-*' 2>&1 | grep -c '^ii' || true")
    assert out.strip() == "0", out


def test_dry_plan_with_secure_boot_stops_at_the_unenrolled_key(
    sandbox_fleet: Fleet, tmp_path: Path
) -> None:
    fleet = sandbox_fleet(
        os="bookworm", count=1, pretend_gpu="H100", pretend_secure_boot=True, name="nvidia-sb"
    )
    name = fleet.hosts[0].name
    changes = plan(fleet, stack_file(tmp_path, DEBIAN_535))
    assert changes["Check the DKMS signing key is enrolled"] == [name]
    run = pyinfra(fleet, stack_file(tmp_path, DEBIAN_535), "--dry")
    assert "preflight: Secure Boot is on: DKMS signs the module with /var/lib/dkms/mok.pub" in (
        run.stdout + run.stderr
    )


def test_an_unreachable_cuda_repository_is_named(sandbox_fleet: Fleet, tmp_path: Path) -> None:
    """For real: driver 580 on Debian needs NVIDIA's repository, which this machine cannot reach."""
    fleet = sandbox_fleet(
        os="bookworm", count=1, pretend_gpu="H100", pretend_secure_boot=True, name="nvidia-sb"
    )
    run = pyinfra(fleet, stack_file(tmp_path, None), "-y")
    output = run.stdout + run.stderr
    assert run.returncode != 0
    failure = [ln for ln in output.splitlines() if "CUDA repository unreachable" in ln]
    assert len(failure) == 1, output[-3000:]
    assert "the host cannot download from NVIDIA's CUDA repository (curl error" in failure[0]
    assert "Fix: let it reach developer.download.nvidia.com" in failure[0]
    _status, out = fleet.ssh(fleet.hosts[0].name, "dpkg -l cuda-keyring 2>&1 | grep -c '^ii'")
    assert out.strip() == "0"  # nothing trusted, nothing installed


def test_ansible_names_the_unreachable_repository_as_pyinfra_does(
    sandbox_fleet: Fleet, tmp_path: Path
) -> None:
    """The same pretend-H100 host through the Ansible roles: the same one-line diagnosis."""
    fleet = sandbox_fleet(
        os="bookworm", count=1, pretend_gpu="H100", pretend_secure_boot=True, name="nvidia-sb"
    )
    output = failing_playbook(fleet, tmp_path)
    report = json.loads((tmp_path / f"{fleet.hosts[0].name}.json").read_text())
    (failure,) = report["failures"]
    assert "CUDA repository unreachable" in failure, failure
    assert "the host cannot download from NVIDIA's CUDA repository (curl error" in failure
    assert "Fix: let it reach developer.download.nvidia.com" in failure
    assert "Traceback" not in output
    _status, out = fleet.ssh(fleet.hosts[0].name, "dpkg -l cuda-keyring 2>&1 | grep -c '^ii'")
    assert out.strip() == "0"


def test_a_host_without_a_gpu_skips_the_layer_or_fails_when_gpus_are_required(
    sandbox_fleet: Fleet, tmp_path: Path
) -> None:
    fleet = sandbox_fleet(os="bookworm", count=2, name="nvidia-no-gpu")
    changes = plan(fleet, stack_file(tmp_path, None))
    assert changes == {}
    run = pyinfra(fleet, stack_file(tmp_path, None), "--dry")
    skipped = "preflight: no NVIDIA GPU on the PCI bus: GPU stage skipped"
    assert (run.stdout + run.stderr).count(skipped) == 2
    required = stack_file(tmp_path, (REPO / "stack.yml").read_text() + "\n")
    required.write_text(required.read_text().replace("require_gpu: false", "require_gpu: true", 1))
    stopped = plan(fleet, required)
    assert stopped == {"Preflight: stop this host": sorted(h.name for h in fleet.hosts)}


def gpurig(fleet: SandboxFleet, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gpurig.cli", "preflight", *args],
        env={**fleet.env, "COLUMNS": "200"},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_gpurig_preflight_reports_each_host_and_fails_on_any(sandbox_fleet: Fleet) -> None:
    gpu_host = sandbox_fleet(os="bookworm", count=1, pretend_gpu="H100", name="nvidia-dry-bookworm")
    run = gpurig(gpu_host, "--json")
    assert run.returncode == 0, run.stdout + run.stderr
    (result,) = json.loads(run.stdout)
    assert result["ok"]
    assert result["install_driver"] is True
    assert result["target"] == "cu130-cp311"
    assert result["facts"]["gpus"][0]["name"] == "NVIDIA H100 SXM5 80GB"
    assert "installs NVIDIA driver branch 580" in result["notes"]
    text = gpurig(gpu_host)
    assert text.returncode == 0
    assert "NVIDIA H100 SXM5 80GB (sm_90), no driver loaded, installs cu130-cp311" in text.stdout


HGX = {"os": "bookworm", "pretend_gpu": "HGX-H100-535", "init": "systemd", "name": "nvidia-hgx"}


def test_gpurig_preflight_on_a_pretend_hgx_board_with_driver_535(sandbox_fleet: Fleet) -> None:
    """The HGX-H100-535 shape: eight GPUs, four NVSwitches, 535 loaded. The driver is kept, the
    CUDA 12 build chosen, and the fabric manager planned at the loaded driver's branch."""
    hgx = sandbox_fleet(**HGX)
    run = gpurig(hgx, "--json")
    assert run.returncode == 0, run.stdout + run.stderr
    (result,) = json.loads(run.stdout)
    assert result["ok"]
    assert result["install_driver"] is False
    assert result["target"] == "cu128-cp311"
    facts = result["facts"]
    assert (len(facts["gpus"]), facts["nvswitches"], facts["driver_version"]) == (
        8,
        4,
        "535.261.03",
    )
    assert (
        "HGX board: installs nvidia-fabricmanager-535 from NVIDIA's CUDA repository for its 4 "
        "NVSwitches, at the driver's version"
    ) in result["notes"]
    text = gpurig(hgx)
    assert text.returncode == 0
    assert (
        "8x NVIDIA H100 SXM5 80GB (sm_90), 4 NVSwitch, driver 535.261.03, installs cu128-cp311"
    ) in text.stdout


# What nvidia-fabricmanager does on a board whose NVSwitches it cannot reach: it exits at start.
NO_SWITCH_UNIT = """\
[Unit]
Description=stand-in for NVIDIA fabric manager on a host without NVSwitch devices
[Service]
Type=forking
ExecStart=/bin/sh -c 'echo "request to query NVSwitch device information from NVSwitch driver failed" >&2; exit 1'
[Install]
WantedBy=multi-user.target
"""  # noqa: E501


def test_the_fabric_manager_failing_under_systemd_is_the_named_diagnosis(
    sandbox_fleet: Fleet,
) -> None:
    """The plan's service step on a systemd pretend-HGX host, real systemctl and journal, a unit
    that fails as the fabric manager does without GPUs: one named diagnosis, no traceback."""
    hgx = sandbox_fleet(**HGX)
    host = hgx.hosts[0]
    unit = "/etc/systemd/system/nvidia-fabricmanager.service"
    rc, out = hgx.ssh(host, f"printf '%s' {shlex.quote(NO_SWITCH_UNIT)} | sudo -n tee {unit}")
    assert rc == 0, out
    rc, out = hgx.ssh(host, f"sudo -n sh -c {shlex.quote(fabric.service_script())}", timeout=120)
    assert rc == 1, out
    (found,) = diagnose.from_output(out)
    assert found.name == "fabric manager not running"
    assert found.message.startswith("nvidia-fabricmanager did not start")
    assert "request to query NVSwitch device information" in out  # its journal, for the reader
    _, state = hgx.ssh(
        host, "systemctl is-enabled nvidia-fabricmanager; systemctl is-active nvidia-fabricmanager"
    )
    assert state.split() == ["enabled", "failed"]  # enabled for the next boot; failed now


def test_gpurig_preflight_names_the_unreachable_and_the_failing(
    sandbox_fleet: Fleet, tmp_path: Path
) -> None:
    fleet = sandbox_fleet(os="bookworm", count=2, name="nvidia-no-gpu")
    first, second = fleet.hosts
    fleet.stop(second)
    try:
        required = tmp_path / "stack.yml"
        required.write_text(
            (REPO / "stack.yml").read_text().replace("require_gpu: false", "require_gpu: true", 1)
        )
        run = gpurig(fleet, "--json", "--stack", str(required))
        assert run.returncode == 1
        results = {r["host"]: r for r in json.loads(run.stdout)}
        assert not results[first.name]["ok"]
        assert "nvidia.require_gpu is true" in results[first.name]["problems"][0]
        assert results[second.name]["problems"][0].startswith("cannot reach the host")
    finally:
        fleet.start(second)


@pytest.mark.slow
def test_debian_driver_install_for_real_ends_in_the_named_dkms_diagnosis(
    sandbox_fleet: Fleet, tmp_path: Path
) -> None:
    """Debian's nvidia-kernel-dkms really installs (~1 min here); its module cannot build."""
    fleet = sandbox_fleet(os="bookworm", count=1, pretend_gpu="H100", name="nvidia-real")
    name = fleet.hosts[0].name
    _, kernel = fleet.ssh(name, "uname -r")
    kernel = kernel.strip()
    began = time.monotonic()
    run = pyinfra(fleet, stack_file(tmp_path, DEBIAN_535), "-y", timeout=900)
    took = time.monotonic() - began
    print(f"real Debian driver install and diagnosis: {took:.0f} s")
    output = run.stdout + run.stderr
    assert run.returncode != 0, output[-3000:]
    assert f"DKMS build failed: no kernel headers for {kernel}" in output, output[-3000:]
    assert f"Fix: apt install linux-headers-{kernel}" in output
    assert "Unpacking" not in output  # not a wall of dpkg output
    assert "Traceback" not in output
    failure = [ln for ln in output.splitlines() if "DKMS build failed" in ln]
    assert len(failure) == 1, failure
    # The packages did install, for real, and the full log stayed on the host.
    _status, dpkg = fleet.ssh(name, "dpkg-query -W -f='${Status} ${Version}' nvidia-kernel-dkms")
    assert dpkg.startswith("install ok installed 535."), dpkg
    _status, log = fleet.ssh(name, "sudo grep -c 'Setting up' /var/log/gpurig/nvidia-driver.log")
    assert int(log.strip()) > 10, log
    assert took < 300, f"the real install took {took:.0f} s"
    # A re-run stops at the same place with the same one line: the install itself is a no-op.
    again = pyinfra(fleet, stack_file(tmp_path, DEBIAN_535), "-y", timeout=600)
    rerun = again.stdout + again.stderr
    assert f"DKMS build failed: no kernel headers for {kernel}" in rerun
    install = rerun.split("Install NVIDIA driver 535", 1)[1].split("-->", 1)[0]
    assert "No changes" in install


def made_up_lock(stack_path: Path, directory: Path) -> Path:
    """A lock on disk for a stack no machine here can resolve (cu126: PyTorch's index), as
    nvidia_stage.py makes in memory: the driver stage reads only the target's variant, and the
    run stops at the driver, before anything installs from it."""
    stack = spec.load(stack_path)
    targets = {}
    for variant in stack.torch.variants:
        for python in stack.python:
            name = target_name(variant, python)
            text = f"torch=={stack.torch.version}\n"
            (directory / f"{name}.txt").write_text(text)
            targets[name] = {
                "name": name, "variant": variant, "python": python, "file": f"{name}.txt",
                "sha256": hashlib.sha256(text.encode()).hexdigest(),
                "index": stack.sources.index, "extra_index": None,
                "find_links": [], "packages": {"torch": stack.torch.version},
            }  # fmt: skip
    manifest = {"lock_version": LOCK_VERSION, "spec_sha256": stack.digest(), "targets": targets}
    (directory / MANIFEST).write_text(json.dumps(manifest))
    return directory


def test_ansible_ends_in_the_same_dkms_diagnosis(sandbox_fleet: Fleet, tmp_path: Path) -> None:
    """The Ansible roles on a fresh pretend-H100 host with Debian's 535 driver: the real
    install, then the same one-line DKMS diagnosis as the pyinfra deploy (test above)."""
    fleet = sandbox_fleet(os="bookworm", count=1, pretend_gpu="H100", name="nvidia-real-ansible")
    name = fleet.hosts[0].name
    _, kernel = fleet.ssh(name, "uname -r")
    kernel = kernel.strip()
    stack = stack_file(tmp_path, DEBIAN_535)
    (tmp_path / "lock").mkdir()
    lock_dir = made_up_lock(stack, tmp_path / "lock")
    output = failing_playbook(
        fleet, tmp_path / "reports", GPURIG_STACK=str(stack), GPURIG_LOCK=str(lock_dir)
    )
    report = json.loads((tmp_path / "reports" / f"{name}.json").read_text())
    (failure,) = report["failures"]
    assert f"DKMS build failed: no kernel headers for {kernel}" in failure, failure
    assert f"Fix: apt install linux-headers-{kernel}" in failure
    assert "Traceback" not in output
    _status, dpkg = fleet.ssh(name, "dpkg-query -W -f='${Status} ${Version}' nvidia-kernel-dkms")
    assert dpkg.startswith("install ok installed 535."), dpkg


# A pretend driver on a systemd host (a VM stand-in): the module loaded at boot is OLD, and the
# driver is then upgraded under it to NEW, so the driver stage must reboot into NEW.
OLD_MODULE, NEW_MODULE = "535.247.01", "535.261.03"


def driver_upgraded_under_its_module(fleet: SandboxFleet) -> SandboxHost:
    """Debian's real nvidia-persistenced (a few seconds), the pretend driver upgraded to NEW,
    and OLD still loaded: what a host looks like after apt upgraded its driver."""
    host = fleet.hosts[0]
    status, out = fleet.ssh(
        host,
        "dpkg -s nvidia-persistenced >/dev/null 2>&1 || { sudo -n apt-get update -qq && "
        "sudo -n DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "
        "nvidia-persistenced >/dev/null; } && "
        f"echo {NEW_MODULE} | sudo -n tee {doubles.PRETEND_DRIVER_PATH} && "
        f"echo {OLD_MODULE} | sudo -n tee /sys/module/nvidia/version",
        timeout=300,
    )
    assert status == 0, out
    return host


def restarts(fleet: SandboxFleet, host: SandboxHost) -> int:
    count: int = fleet.fleet.client.containers.get(host.container).attrs["RestartCount"]
    return count


@pytest.mark.slow
def test_driver_change_reboots_a_vm_standin_and_a_failing_persistenced_is_named(
    sandbox_fleet: Fleet, tmp_path: Path
) -> None:
    """pyinfra: the reboot into the new module runs for real (the same container restarts:
    same port, host key, disk), the deploy reconnects with strict host keys and goes on; the
    real nvidia-persistenced then fails without a GPU, and the host stops with that name."""
    fleet = sandbox_fleet(
        count=1, pretend_gpu="H100", init="systemd", pretend_driver=OLD_MODULE, name="reboot"
    )
    host = driver_upgraded_under_its_module(fleet)
    before = restarts(fleet, host)
    run = pyinfra(fleet, stack_file(tmp_path, DEBIAN_535), "-y")
    output = run.stdout + run.stderr
    assert run.returncode != 0, output[-3000:]
    assert restarts(fleet, host) == before + 1
    assert fleet.ssh(host, "cat /sys/module/nvidia/version") == (0, f"{NEW_MODULE}\n")
    reboot = output.split("Reboot into the NVIDIA driver if an old module holds the GPU", 1)[1]
    assert "Success" in reboot.split("-->", 1)[0], output[-3000:]
    check = output.split("Check nvidia-smi sees every GPU", 1)[1].split("-->", 1)[0]
    assert "No changes" in check  # the new module is loaded: nvidia-smi sees the GPU
    failure = [ln for ln in output.splitlines() if "nvidia-persistenced failed" in ln]
    assert len(failure) == 1, output[-3000:]
    assert "the daemon did not start: Failed to open libnvidia-cfg.so.1" in failure[0]
    assert "Traceback" not in output
    # The unit was enabled for real, and is failed, not skipped.
    _, units = fleet.ssh(
        host, "systemctl is-enabled nvidia-persistenced; systemctl is-failed nvidia-persistenced"
    )
    assert units.split() == ["enabled", "failed"]


@pytest.mark.slow
def test_a_host_that_does_not_come_back_from_the_reboot_is_named(
    sandbox_fleet: Fleet, tmp_path: Path
) -> None:
    fleet = sandbox_fleet(
        count=1, pretend_gpu="H100", init="systemd", pretend_driver=OLD_MODULE, name="reboot"
    )
    host = driver_upgraded_under_its_module(fleet)
    container = fleet.fleet.client.containers.get(host.container)
    container.update(restart_policy={"Name": "no"})  # the reboot ends it for good
    try:
        began = time.monotonic()
        run = pyinfra(fleet, stack_file(tmp_path, DEBIAN_535), "-y", env={ENV_REBOOT: "5"})
        took = time.monotonic() - began
        output = run.stdout + run.stderr
        assert run.returncode != 0
        failure = [ln for ln in output.splitlines() if "host did not come back from reboot" in ln]
        assert len(failure) == 1, output[-3000:]
        assert f"{host.name} did not answer SSH from a new boot within 5 s" in failure[0]
        assert took < 60
    finally:
        container.update(restart_policy={"Name": "unless-stopped"})
        fleet.start(host)


@pytest.mark.slow
def test_ansible_reboots_and_names_persistenced_as_pyinfra_does(
    sandbox_fleet: Fleet, tmp_path: Path
) -> None:
    """The same host state (on the same host: the pyinfra test's changes are all undone or
    converged) through the Ansible roles: its reboot module restarts the same container (the
    plan's boot marker tells the new boot), then the same named failure."""
    fleet = sandbox_fleet(
        count=1, pretend_gpu="H100", init="systemd", pretend_driver=OLD_MODULE, name="reboot"
    )
    host = driver_upgraded_under_its_module(fleet)
    before = restarts(fleet, host)
    stack = stack_file(tmp_path, DEBIAN_535)
    (tmp_path / "lock").mkdir()
    lock_dir = made_up_lock(stack, tmp_path / "lock")
    output = failing_playbook(
        fleet,
        tmp_path / "reports",
        playbook=str(STAGE.with_suffix(".yml")),
        GPURIG_STACK=str(stack),
        GPURIG_LOCK=str(lock_dir),
    )
    assert restarts(fleet, host) == before + 1, output[-3000:]
    assert fleet.ssh(host, "cat /sys/module/nvidia/version") == (0, f"{NEW_MODULE}\n")
    failed = output.split("TASK [gpurig_nvidia : Start nvidia-persistenced at boot and now]", 1)[1]
    assert f"fatal: [{host.name}]: FAILED!" in failed, output[-3000:]
    assert (
        "nvidia-persistenced failed: the daemon did not start: Failed to open libnvidia-cfg.so.1"
        in " ".join(failed.split())
    ), failed[-3000:]
    assert "Traceback" not in output
    _, units = fleet.ssh(
        host,
        "systemctl is-enabled nvidia-persistenced; systemctl is-failed nvidia-persistenced",
    )
    assert units.split() == ["enabled", "failed"]
