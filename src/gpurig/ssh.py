"""SSH from the controller over paramiko, as `gpurig cluster` (gpurig.cluster.transport) and the
sandbox (gpurig.sandbox.remote) both use it: host keys strictly from a known_hosts file (read,
never added), one command per channel with stdout and stderr together."""

from __future__ import annotations

from pathlib import Path

import paramiko

CONNECT_TIMEOUT_S = 10.0


def strict_client(known_hosts: Path) -> paramiko.SSHClient:
    """A client that accepts only the host keys in `known_hosts` (OSError: it cannot be read)."""
    client = paramiko.SSHClient()
    client.get_host_keys().load(str(known_hosts))  # read-only: nothing is ever added
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    return client


def connect(
    client: paramiko.SSHClient,
    hostname: str,
    port: int,
    username: str,
    key_filename: str | None,
    *,
    allow_agent: bool,
    look_for_keys: bool,
    timeout: float,
) -> None:
    """Connect and authenticate, each step (TCP, banner, auth) bounded by `timeout`."""
    client.connect(
        hostname=hostname,
        port=port,
        username=username,
        key_filename=key_filename,
        allow_agent=allow_agent,
        look_for_keys=look_for_keys,
        timeout=timeout,
        banner_timeout=timeout,
        auth_timeout=timeout,
    )


def open_channel(transport: paramiko.Transport, timeout: float) -> paramiko.Channel:
    """A session channel whose stderr comes with its stdout."""
    channel = transport.open_session(timeout=timeout)
    channel.set_combine_stderr(True)
    return channel


def execute(channel: paramiko.Channel, command: str, timeout: float) -> tuple[int, str]:
    """Run `command` on a fresh channel to its end: (exit status, output)."""
    channel.settimeout(timeout)
    channel.exec_command(command)
    output = channel.makefile("rb").read().decode(errors="replace")
    return channel.recv_exit_status(), output
