"""Run a command on a sandbox host over real SSH, with strict host-key checking."""

from __future__ import annotations

from pathlib import Path

import paramiko

from gpurig import ssh
from gpurig.sandbox.state import SandboxHost
from gpurig.ssh import CONNECT_TIMEOUT_S


def ssh_run(
    host: SandboxHost, key_file: Path, known_hosts: Path, command: str, timeout: float = 600.0
) -> tuple[int, str]:
    """(exit status, stdout and stderr together). A host key not in known_hosts is refused."""
    client = ssh.strict_client(known_hosts)
    try:
        ssh.connect(
            client,
            host.hostname,
            host.port,
            host.user,
            str(key_file),
            allow_agent=False,
            look_for_keys=False,
            timeout=CONNECT_TIMEOUT_S,
        )
        transport = client.get_transport()
        if transport is None:
            raise paramiko.SSHException(f"no transport to {host.name}")
        return ssh.execute(ssh.open_channel(transport, CONNECT_TIMEOUT_S), command, timeout)
    finally:
        client.close()
