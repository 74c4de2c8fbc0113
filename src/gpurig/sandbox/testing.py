"""What a test holds to reach a started fleet (tests/integration/conftest.py hands these out)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from gpurig.sandbox.engine import docker_env
from gpurig.sandbox.hosts import Fleet
from gpurig.sandbox.state import SandboxHost


@dataclass
class SandboxFleet:
    fleet: Fleet
    inventory_path: Path  # the repo's pyinfra inventory.py; it finds this fleet through `env`
    params: dict[str, object] = field(default_factory=dict)  # what the fleet was started with

    @property
    def state_dir(self) -> Path:
        return self.fleet.state_dir

    @property
    def hosts(self) -> list[SandboxHost]:
        return self.fleet.hosts

    @property
    def env(self) -> dict[str, str]:
        """os.environ pointed at this fleet, for pyinfra/Ansible/gpurig subprocesses."""
        env = {**os.environ, **docker_env(), **self.fleet.env()}
        env.pop("GPURIG_HOSTS", None)  # it would win over the sandbox in inventory.py
        return env

    @property
    def ansible_inventory(self) -> Path:
        return self.fleet.state.ansible_inventory_file

    @property
    def key_file(self) -> Path:
        return self.fleet.state.key_file

    @property
    def known_hosts(self) -> Path:
        return self.fleet.state.known_hosts_file

    def ssh(self, host: str | SandboxHost, command: str, timeout: float = 600.0) -> tuple[int, str]:
        """(exit status, stdout+stderr) of `command` run as the host's user over real SSH."""
        return self.fleet.ssh(host, command, timeout=timeout)

    def stop(self, host: str | SandboxHost) -> None:
        """Stop one host's container: a host that went down."""
        self.fleet.stop(host)

    def start(self, host: str | SandboxHost) -> None:
        """Start a stopped host again, like a reboot (same port and host keys)."""
        self.fleet.start(host)

    def reboot(self, host: str | SandboxHost) -> None:
        """`systemctl reboot` on a systemd host, and wait until it logs in again."""
        self.fleet.reboot(host)
