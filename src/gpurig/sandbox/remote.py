"""Run a command on a sandbox host over real SSH, with strict host-key checking."""

from __future__ import annotations

from pathlib import Path

import paramiko

from gpurig.sandbox.state import SandboxHost

CONNECT_TIMEOUT_S = 10.0


def ssh_run(
    host: SandboxHost, key_file: Path, known_hosts: Path, command: str, timeout: float = 600.0
) -> tuple[int, str]:
    """(exit status, stdout and stderr together). A host key not in known_hosts is refused."""
    client = paramiko.SSHClient()
    client.get_host_keys().load(str(known_hosts))  # read-only: nothing is ever added
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(
            hostname=host.hostname,
            port=host.port,
            username=host.user,
            key_filename=str(key_file),
            allow_agent=False,
            look_for_keys=False,
            timeout=CONNECT_TIMEOUT_S,
            banner_timeout=CONNECT_TIMEOUT_S,
            auth_timeout=CONNECT_TIMEOUT_S,
        )
        transport = client.get_transport()
        if transport is None:
            raise paramiko.SSHException(f"no transport to {host.name}")
        channel = transport.open_session(timeout=CONNECT_TIMEOUT_S)
        channel.set_combine_stderr(True)
        channel.settimeout(timeout)
        channel.exec_command(command)
        output = channel.makefile("rb").read()
        return channel.recv_exit_status(), output.decode(errors="replace")
    finally:
        client.close()
