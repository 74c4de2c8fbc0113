"""Sandbox hosts behave like fresh cloud VMs: real OpenSSH, strict host keys, sudo, doubles."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import paramiko
import pytest

from gpurig.sandbox import Fleet, SandboxHost, docker_env, ensure_engine
from gpurig.sandbox.hosts import LABEL
from gpurig.sandbox.remote import ssh_run
from gpurig.sandbox.testing import SandboxFleet

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["bookworm", "trixie"])
def three_hosts(
    request: pytest.FixtureRequest, sandbox_fleet: Callable[..., SandboxFleet]
) -> SandboxFleet:
    return sandbox_fleet(os=request.param, count=3, name=f"three-{request.param}")


def openssh(
    fleet: SandboxFleet, host: SandboxHost, command: str, known_hosts: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """The real OpenSSH client, as an operator would type it: strict host-key checking."""
    assert shutil.which("ssh"), "install openssh-client"
    argv = [
        "ssh",
        "-o", "BatchMode=yes",
        "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={known_hosts or fleet.fleet.state.known_hosts_file}",
        "-o", "IdentitiesOnly=yes",
        "-i", str(fleet.fleet.state.key_file),
        "-p", str(host.port),
        f"{host.user}@{host.hostname}",
        command,
    ]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def test_each_host_accepts_openssh_and_sudo(three_hosts: SandboxFleet) -> None:
    for host in three_hosts.hosts:
        result = openssh(
            three_hosts, host, "sudo -n true && . /etc/os-release && echo $VERSION_CODENAME"
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == host.os


def test_hosts_are_named_and_recorded(three_hosts: SandboxFleet) -> None:
    hosts = three_hosts.hosts
    assert [h.name for h in hosts] == ["sandbox-1", "sandbox-2", "sandbox-3"]
    assert len({h.port for h in hosts}) == 3
    assert all(h.hostname == "127.0.0.1" and h.user == "debian" for h in hosts)
    rc, out = three_hosts.ssh(hosts[1], "hostname; command -v python3")
    assert (rc, out.split()) == (0, ["sandbox-2", "/usr/bin/python3"])


def test_host_keys_differ_between_hosts(three_hosts: SandboxFleet) -> None:
    assert len({h.host_key for h in three_hosts.hosts}) == 3


def test_a_wrong_known_hosts_entry_is_rejected(three_hosts: SandboxFleet, tmp_path: Path) -> None:
    first, second = three_hosts.hosts[:2]
    forged = tmp_path / "known_hosts"
    forged.write_text(f"[{first.hostname}]:{first.port} {second.host_key}\n")
    result = openssh(three_hosts, first, "true", known_hosts=forged)
    assert result.returncode == 255
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in result.stderr
    with pytest.raises(paramiko.BadHostKeyException):
        ssh_run(first, three_hosts.fleet.state.key_file, forged, "true")


def test_an_unknown_host_is_rejected_not_trusted(three_hosts: SandboxFleet, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    result = openssh(three_hosts, three_hosts.hosts[0], "true", known_hosts=empty)
    assert result.returncode == 255
    assert "Host key verification failed" in result.stderr
    assert empty.read_text() == ""


def test_sshd_is_hardened_like_a_cloud_image(three_hosts: SandboxFleet) -> None:
    host = three_hosts.hosts[0]
    rc, out = three_hosts.ssh(host, "sudo -n /usr/sbin/sshd -T -p 1 2>/dev/null")
    settings = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    assert rc == 0
    assert settings["permitrootlogin"] == "no"
    assert settings["passwordauthentication"] == "no"
    as_root = openssh(three_hosts, replace(host, user="root"), "true")
    assert as_root.returncode == 255


def test_pyinfra_reaches_the_fleet_through_inventory_py(three_hosts: SandboxFleet) -> None:
    pyinfra = Path(sys.executable).with_name("pyinfra")  # the controller venv's
    result = subprocess.run(
        [str(pyinfra), "-y", str(three_hosts.inventory_path), "exec", "--", "hostname"],
        env=three_hosts.env,
        cwd=three_hosts.inventory_path.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr  # pyinfra reports on stderr
    assert result.returncode == 0, output
    for host in three_hosts.hosts:
        assert f"[{host.name}] {host.name}" in output


def test_pyinfra_follows_a_jump_host_strictly(three_hosts: SandboxFleet, tmp_path: Path) -> None:
    """The mechanism inventory/cloud_via_bastion.py relies on: ProxyJump from ssh_config."""
    jump, target = three_hosts.hosts[:2]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(
        f"[127.0.0.1]:{jump.port} {jump.host_key}\n[localhost]:{target.port} {target.host_key}\n"
    )
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host jump\n  HostName 127.0.0.1\n  Port {jump.port}\n  User debian\n"
        f"  IdentityFile {three_hosts.key_file}\n  StrictHostKeyChecking yes\n"
        f"  UserKnownHostsFile {known_hosts}\n"
        "Host localhost\n  ProxyJump jump\n"
    )
    data = {
        "ssh_hostname": "localhost",  # reached from inside the jump host
        "ssh_port": target.port,
        "ssh_user": "debian",
        "ssh_key": str(three_hosts.key_file),
        "ssh_known_hosts_file": str(known_hosts),
        "ssh_strict_host_key_checking": "yes",
        "ssh_config_file": str(config),
    }
    inventory = tmp_path / "behind_jump.py"
    inventory.write_text(f"hosts = [('behind-jump', {data!r})]\n")
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("pyinfra")),
            "-y",
            str(inventory),
            "exec",
            "--",
            "hostname",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"[behind-jump] {target.name}" in output


def test_pretend_gpu_and_secure_boot_doubles(sandbox_fleet: Callable[..., SandboxFleet]) -> None:
    fleet = sandbox_fleet(count=1, pretend_gpu="L4", pretend_secure_boot=True)
    rc, out = fleet.ssh(fleet.hosts[0], "lspci -Dnmm -d 10de:; mokutil --sb-state")
    assert rc == 0
    assert out.splitlines() == [
        '0000:00:05.0 "0302" "10de" "27b8" -ra1 "10de" "16ca"',
        "SecureBoot enabled",
    ]
    rc, marker = fleet.ssh(fleet.hosts[0], "cat /etc/gpurig-pretend-gpu")
    assert "pci_id=10de:27b8" in marker


def test_plain_hosts_have_no_doubles(three_hosts: SandboxFleet) -> None:
    rc, out = three_hosts.ssh(
        three_hosts.hosts[0],
        "ls /usr/local/bin; test -e /etc/gpurig-pretend-gpu || echo no-marker",
    )
    assert (rc, out.strip()) == (0, "no-marker")


def test_stop_and_start_keep_the_host_keys(sandbox_fleet: Callable[..., SandboxFleet]) -> None:
    fleet = sandbox_fleet(count=1)
    host = fleet.hosts[0]
    fleet.stop(host)
    with pytest.raises((paramiko.SSHException, OSError)):
        fleet.ssh(host, "true")
    fleet.start(host)
    assert fleet.ssh(host, "true") == (0, "")
    assert openssh(fleet, host, "true").returncode == 0


@pytest.mark.slow
def test_apt_installs_inside_a_host(sandbox_fleet: Callable[..., SandboxFleet]) -> None:
    fleet = sandbox_fleet(os="bookworm", count=3, name="three-bookworm")
    rc, out = fleet.ssh(
        fleet.hosts[2],
        "sudo -n apt-get update -q && sudo -n apt-get install -y -q --no-install-recommends jq"
        " && jq --version && apt-cache policy nvidia-driver | grep -q 'Candidate: [0-9]'",
    )
    assert rc == 0, out[-2000:]


def test_up_adds_hosts_and_down_leaves_nothing(engine: object, tmp_path: Path) -> None:
    fleet = Fleet(tmp_path / "fleet")
    assert [h.name for h in fleet.up(1)] == ["sandbox-1"]
    assert [h.name for h in fleet.up(1)] == ["sandbox-2"]
    assert [h.name for h in fleet.hosts] == ["sandbox-1", "sandbox-2"]
    client = fleet.client
    labelled = {"label": f"{LABEL}={fleet.state.fleet_id}"}
    assert len(client.containers.list(all=True, filters=labelled)) == 2
    assert fleet.down() == 2
    assert client.containers.list(all=True, filters=labelled) == []
    assert not (tmp_path / "fleet").exists()


def test_the_engine_is_idempotent_and_shared(engine: object) -> None:
    first, second = ensure_engine(), ensure_engine()
    assert (first.url, first.pid) == (second.url, second.pid)
    assert second.started_in_s is None
    assert docker_env() == {"DOCKER_HOST": first.url} or not first.ours
