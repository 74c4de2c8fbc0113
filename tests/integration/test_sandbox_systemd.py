"""Sandbox hosts boot systemd like cloud VMs: units, loopback-only listeners, reboots."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from gpurig.errors import GpurigError
from gpurig.sandbox import Fleet, docker_env
from gpurig.sandbox.state import SandboxHost

pytestmark = pytest.mark.integration

GPURIG = str(Path(sys.executable).with_name("gpurig"))


def openssh(fleet: Fleet, host: SandboxHost, command: str) -> subprocess.CompletedProcess[str]:
    """The real OpenSSH client with strict host-key checking against the fleet's known_hosts."""
    argv = [
        "ssh",
        "-o", "BatchMode=yes",
        "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={fleet.state.known_hosts_file}",
        "-o", "IdentitiesOnly=yes",
        "-i", str(fleet.state.key_file),
        "-p", str(host.port),
        f"{host.user}@{host.hostname}",
        command,
    ]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(scope="module", params=["bookworm", "trixie"])
def cli_fleet(
    request: pytest.FixtureRequest,
    engine: docker.DockerClient,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Fleet]:
    """`gpurig sandbox up 2` as an operator types it (trixie's hosts pretend to have an L4)."""
    state_dir = tmp_path_factory.mktemp(f"systemd-{request.param}") / "fleet"
    env = {**os.environ, **docker_env(), "GPURIG_SANDBOX_DIR": str(state_dir)}
    extra = ["--pretend-gpu", "L4"] if request.param == "trixie" else []
    fleet = Fleet(state_dir)
    try:
        result = subprocess.run(
            [GPURIG, "sandbox", "up", "2", "--os", request.param, *extra],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "started 2 host(s)" in result.stdout
        yield fleet
    finally:
        fleet.down()


def test_hosts_boot_systemd_and_run_sshd_as_a_unit(cli_fleet: Fleet) -> None:
    for host in cli_fleet.hosts:
        assert host.init == "systemd"
        result = openssh(
            cli_fleet, host, "systemctl is-system-running --wait; systemctl is-active ssh.service"
        )
        state, ssh_unit = result.stdout.split()
        assert state in ("running", "degraded"), result.stdout + result.stderr
        assert ssh_unit == "active"
    assert len({h.host_key for h in cli_fleet.hosts}) == 2


def test_only_sshd_listens_and_only_on_loopback(cli_fleet: Fleet) -> None:
    """The hosts share the machine's network: nothing of theirs may listen anywhere else."""
    for host in cli_fleet.hosts:
        rc, out = cli_fleet.ssh(host, "sudo -n ss -ltnuHp")
        assert rc == 0, out
        ours = [line.split() for line in out.splitlines() if "users:(" in line]
        assert [(fields[4], fields[-1].split('"')[1]) for fields in ours] == [
            (f"127.0.0.1:{host.port}", "sshd")
        ], out


def test_network_units_are_masked_and_apt_timers_off(cli_fleet: Fleet) -> None:
    _, out = cli_fleet.ssh(  # is-enabled exits 1 for a disabled unit: read what it says
        cli_fleet.hosts[0],
        "systemctl is-enabled systemd-networkd.service getty.target apt-daily.timer",
    )
    assert out.split() == ["masked", "masked", "disabled"]


def test_pretend_gpu_doubles_on_systemd_hosts(cli_fleet: Fleet) -> None:
    host = cli_fleet.hosts[0]
    if host.pretend_gpu is None:
        assert cli_fleet.ssh(host, "test -e /etc/gpurig-pretend-gpu || echo none") == (0, "none\n")
        return
    rc, out = cli_fleet.ssh(host, "lspci -Dnmm -d 10de:")
    assert rc == 0
    assert out.splitlines() == ['0000:00:05.0 "0302" "10de" "27b8" -ra1 "10de" "16ca"']


def test_a_reboot_brings_the_same_host_back(cli_fleet: Fleet) -> None:
    host = cli_fleet.hosts[0]
    assert cli_fleet.ssh(host, "echo kept | sudo -n tee /var/tmp/disk") == (0, "kept\n")
    began = time.monotonic()
    cli_fleet.reboot(host)
    took = time.monotonic() - began
    rebooted = cli_fleet.host(host.name)
    assert (rebooted.port, rebooted.host_key, rebooted.container) == (
        host.port,
        host.host_key,
        host.container,
    )
    result = openssh(cli_fleet, host, "cat /var/tmp/disk; systemctl is-system-running --wait")
    assert result.returncode == 0, result.stderr  # strict known_hosts: the same host key
    assert result.stdout.split()[0] == "kept"
    assert result.stdout.split()[1] in ("running", "degraded")
    assert cli_fleet.client.containers.get(host.container).attrs["RestartCount"] == 1
    assert took < 60


def test_a_host_that_does_not_come_back_is_named(cli_fleet: Fleet) -> None:
    host = cli_fleet.hosts[1]
    cli_fleet.client.containers.get(host.container).update(restart_policy={"Name": "no"})
    began = time.monotonic()
    with pytest.raises(GpurigError, match=f"{host.name} did not come back within 5 s"):
        cli_fleet.reboot(host, timeout_s=5)
    assert time.monotonic() - began < 30
    cli_fleet.start(host)  # started by hand it boots again, same keys
    result = openssh(cli_fleet, host, "systemctl is-system-running --wait")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() in ("running", "degraded")
