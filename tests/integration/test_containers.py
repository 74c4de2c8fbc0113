"""The containers stage on a systemd sandbox host: Debian's docker.io installed for real, its
unit enabled, and the engine check reaching the daemon, or naming why it cannot.

Checked on this machine: dockerd inside an unprivileged container cannot create its NAT chain
(iptables: Permission denied), so the first deploy ends in the named diagnosis with its fix;
with that fix applied (an engine that needs only host networking: no iptables, no bridge), the
next deploy starts the daemon and `docker version` reaches it, and the one after changes
nothing, and the Ansible roles on the same host find every step in place. The NVIDIA parts
need nvidia.github.io, which nothing here reaches: plan tests cover them
(tests/unit/test_plan_parity.py, tests/unit/test_container_scripts.py).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from gpurig.sandbox.testing import SandboxFleet
from helpers.front_ends import BIN, Run, ansible_env, run_logged

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
STAGE = REPO / "tests/integration/deploys/containers_stage.py"
PLAYBOOK = REPO / "tests/integration/playbooks/containers.yml"
HOST_NETWORK_ONLY = '{"iptables": false, "bridge": "none"}'


def deploy(fleet: SandboxFleet, stack: Path) -> Run:
    argv = [sys.executable, "-m", "pyinfra", "-y", str(fleet.inventory_path), str(STAGE)]
    return run_logged("containers stage", argv, {**fleet.env, "GPURIG_STACK": str(stack)}, 300)


def ansible(fleet: SandboxFleet, stack: Path) -> Run:
    """The Ansible preflight and containers roles (the same plan, the other front end)."""
    argv = [str(BIN / "ansible-playbook"), "-i", str(fleet.ansible_inventory), str(PLAYBOOK)]
    env = {
        **ansible_env(fleet.env),
        "GPURIG_STACK": str(stack),
        "GPURIG_LOCK": str(REPO / "lock"),
    }
    return run_logged("containers roles", argv, env, 300)


def test_the_engine_installs_and_answers_or_is_named(
    sandbox_fleet: Callable[..., SandboxFleet], tmp_path: Path
) -> None:
    data = yaml.safe_load((REPO / "stack.yml").read_text())
    data["containers"] = {"enabled": True}
    stack = tmp_path / "stack.yml"
    stack.write_text(yaml.safe_dump(data))
    fleet = sandbox_fleet(os="bookworm", count=1, init="systemd", name="containers")
    host = fleet.hosts[0].name

    first = deploy(fleet, stack)
    output = first.output
    assert first.code != 0, output[-3000:]
    assert "container engine not running: dockerd does not answer" in output, output[-3000:]
    assert "failed to create NAT chain DOCKER" in output, output[-3000:]
    assert '"iptables": false' in output  # the fix, named
    assert "Traceback" not in output
    rc, installed = fleet.ssh(host, "dpkg-query -W -f='${Status}' docker.io")
    assert installed.strip() == "install ok installed"
    rc, enabled = fleet.ssh(host, "systemctl is-enabled docker")
    assert enabled.strip() == "enabled"

    # The fix the diagnosis gives, as an operator applies it.
    config = f"echo '{HOST_NETWORK_ONLY}' | sudo tee /etc/docker/daemon.json >/dev/null"
    assert fleet.ssh(host, config)[0] == 0
    second = deploy(fleet, stack)
    assert second.code == 0, second.output[-3000:]
    rc, version = fleet.ssh(host, "sudo docker version --format '{{.Server.Version}}'")
    assert rc == 0, version
    assert version.strip().startswith("20.10."), version

    third = deploy(fleet, stack)
    again = third.output
    assert third.code == 0, again[-3000:]
    for step in ("Install the container engine (docker.io)", "Run the container engine"):
        assert "No changes" in again.split(step, 1)[1].split("-->", 1)[0], again[-3000:]

    # The Ansible roles on the same host: the same steps, found in place, nothing changed.
    played = ansible(fleet, stack)
    recap = played.output
    assert played.code == 0, recap[-3000:]
    engine = recap.split("TASK [gpurig_containers : Run the container engine]", 1)[1]
    result = engine.split("\n", 1)[1].split("TASK [", 1)[0].strip()
    assert result.startswith("ok: ["), engine[:500]  # it ran, and found the engine in place
    assert " changed=0 " in recap.split("PLAY RECAP", 1)[1], recap[-2000:]
