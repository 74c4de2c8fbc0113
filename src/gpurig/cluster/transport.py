"""Reaching the members of a cluster from the controller: what the runner needs of one (Remote,
Running) and SshRemote, that over paramiko (gpurig.ssh: host keys strictly from known_hosts, as
the deploy checks them)."""

from __future__ import annotations

import getpass
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import paramiko

from gpurig import ssh
from gpurig.cluster.model import Member
from gpurig.errors import GpurigError
from gpurig.ssh import CONNECT_TIMEOUT_S

__all__ = ["CONNECT_TIMEOUT_S", "Remote", "Running", "SshRemote"]


class Running(Protocol):
    """A command started on a node."""

    def done(self) -> bool: ...

    def exit_status(self) -> int | None:  # None: the connection dropped before it ended
        ...

    def output(self) -> str: ...


class Remote(Protocol):
    """One member, as the runner uses it (paramiko below; fakes in the unit tests)."""

    @property
    def name(self) -> str: ...

    def connect(self) -> None: ...

    def run(self, command: str, timeout: float) -> tuple[int, str]: ...

    def start(self, command: str) -> Running: ...

    def close(self) -> None: ...


class _Channel:
    def __init__(self, channel: paramiko.Channel) -> None:
        self._channel = channel
        self._chunks: list[bytes] = []
        self._status: int | None = None
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            while chunk := self._channel.recv(65536):
                self._chunks.append(chunk)
            status = self._channel.recv_exit_status()
            self._status = None if status == -1 else status  # -1: no status, connection lost
        except (OSError, EOFError, paramiko.SSHException):
            self._status = None

    def done(self) -> bool:
        return not self._thread.is_alive()

    def exit_status(self) -> int | None:
        return self._status

    def output(self) -> str:
        return b"".join(self._chunks).decode(errors="replace")


@dataclass
class SshRemote:
    """A member over SSH: its inventory data's address, port, user and key; host keys only
    from known_hosts (ssh_known_hosts_file, else ~/.ssh/known_hosts), never added."""

    member: Member
    connect_timeout: float = CONNECT_TIMEOUT_S
    _client: paramiko.SSHClient | None = None

    @property
    def name(self) -> str:
        return self.member.name

    @property
    def where(self) -> str:
        data = self.member.data
        return f"{data.get('ssh_user') or getpass.getuser()}@{self.member.address}:" + str(
            data.get("ssh_port") or 22
        )

    def connect(self) -> None:
        data = self.member.data
        known = Path(str(data.get("ssh_known_hosts_file") or "~/.ssh/known_hosts")).expanduser()
        try:
            client = ssh.strict_client(known)
        except OSError as error:
            raise GpurigError(f"cannot read known_hosts {known}: {error}") from None
        key = data.get("ssh_key")
        ssh.connect(
            client,
            self.member.address,
            int(data.get("ssh_port") or 22),
            str(data.get("ssh_user") or getpass.getuser()),
            str(Path(str(key)).expanduser()) if key else None,
            allow_agent=bool(data.get("ssh_allow_agent", True)),
            look_for_keys=bool(data.get("ssh_look_for_keys", True)),
            timeout=self.connect_timeout,
        )
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(5)
        self._client = client

    def _session(self) -> paramiko.Channel:
        transport = self._client.get_transport() if self._client else None
        if transport is None or not transport.is_active():
            raise GpurigError(f"{self.name}: not connected")
        return ssh.open_channel(transport, self.connect_timeout)

    def run(self, command: str, timeout: float) -> tuple[int, str]:
        return ssh.execute(self._session(), command, timeout)

    def start(self, command: str) -> Running:
        channel = self._session()
        channel.exec_command(command)
        return _Channel(channel)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
