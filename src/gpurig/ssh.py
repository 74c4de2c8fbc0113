"""SSH from the controller over paramiko, as `gpurig cluster` (gpurig.cluster.transport) and the
sandbox (gpurig.sandbox.remote) both use it: host keys strictly from a known_hosts file (read,
never added), one command per channel with stdout and stderr together. The pyinfra deploy's
connections take `aead_first` through host data (gpurig.inventory)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import paramiko

CONNECT_TIMEOUT_S = 10.0
# AES-GCM: encryption and integrity in one pass, in the cryptography library. paramiko lists
# it after CTR and CBC, which pair with an HMAC that it checks on every packet received in a
# pure-Python loop; every OpenSSH since 6.2 (2013) offers GCM, and sshd spends less on it too.
AEAD_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


def aead_first(*args: Any, **kwargs: Any) -> paramiko.Transport:
    """paramiko's Transport asking for AES-GCM first, every other cipher it offers after it (a
    server without GCM still connects); SSHClient.connect's `transport_factory`. The order is
    set through Transport.get_security_options, paramiko's public way to change it."""
    transport = paramiko.Transport(*args, **kwargs)
    options = transport.get_security_options()
    offered = tuple(options.ciphers)
    options.ciphers = tuple(c for c in AEAD_CIPHERS if c in offered) + tuple(
        c for c in offered if c not in AEAD_CIPHERS
    )
    return transport


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
        transport_factory=aead_first,
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
