"""Who gets the stack: hosts from GPURIG_HOSTS, else the running sandbox hosts.

The repo's inventory.py hands `pyinfra_groups()` to pyinfra; `ansible_inventory()` gives the
same hosts and groups to Ansible. Host-key checking is strict for every host: a host missing
from known_hosts is refused, never trusted on first use.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpurig.errors import UsageError
from gpurig.sandbox.paths import sandbox_dir
from gpurig.sandbox.state import SANDBOX_GROUP, SandboxHost, StateDir

HOSTS_VAR = "GPURIG_HOSTS"
KEY_VAR = "GPURIG_SSH_KEY"
KNOWN_HOSTS_VAR = "GPURIG_KNOWN_HOSTS"
HOSTS_GROUP = "hosts"
NO_HOSTS = "no hosts: set GPURIG_HOSTS=user@host[:port],... or run `gpurig sandbox up`"
_FORMAT = "expected user@host[:port] (IPv6 as user@[addr]:port)"
# User and host names in their own character sets: these land in Ansible inventory variables
# and on ssh command lines, so nothing there may read as a template or a shell word.
_ENTRY = re.compile(
    r"""^(?P<user>[A-Za-z0-9_][A-Za-z0-9_.-]*)@
    (?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9_][A-Za-z0-9_.-]*))
    (?::(?P<port>[^:]*))?$""",
    re.VERBOSE,
)

PyinfraHost = tuple[str, dict[str, Any]]
# pyinfra's own default is accept-new (trust on first use). Every pyinfra run gpurig starts
# passes this, so an inline inventory (`gpurig preflight user@host`) or any inventory file is
# held to known_hosts as strictly as the hosts listed here.
STRICT_HOST_KEYS = ["--data", "ssh_strict_host_key_checking=yes"]


def aead_first(*args: Any, **kwargs: Any) -> Any:
    """gpurig.ssh.aead_first, imported when pyinfra connects: `gpurig deploy` reads this module
    without connecting, and paramiko is a tenth of a second to import."""
    from gpurig.ssh import aead_first as factory

    return factory(*args, **kwargs)


# pyinfra's paramiko connections ask for AES-GCM first (a push of the wheels in half the CPU)
PARAMIKO_CONNECT = {"transport_factory": aead_first}


@dataclass(frozen=True)
class HostSpec:
    """One GPURIG_HOSTS entry."""

    user: str
    host: str
    port: int = 22

    @property
    def name(self) -> str:
        """The name reports use: the host, plus the port when it is not 22."""
        if self.port == 22:
            return self.host
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_host(entry: str) -> HostSpec:
    match = _ENTRY.match(entry.strip())
    if match is None:
        raise UsageError(f"{HOSTS_VAR} entry {entry.strip()!r}: {_FORMAT}")
    port_text = match["port"]
    port = 22
    if port_text is not None:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise UsageError(f"{HOSTS_VAR} entry {entry.strip()!r}: port must be 1-65535")
        port = int(port_text)
    return HostSpec(match["user"], match["ipv6"] or match["host"], port)


def parse_hosts(value: str) -> list[HostSpec]:
    """Parse `user@host[:port],...`; every entry must be well formed and appear once."""
    entries = [entry for entry in value.split(",") if entry.strip()]
    if not entries:
        raise UsageError(f"{HOSTS_VAR} is empty: {_FORMAT}, comma-separated")
    specs = [parse_host(entry) for entry in entries]
    names = [spec.name for spec in specs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise UsageError(f"{HOSTS_VAR} lists {', '.join(duplicates)} more than once")
    return specs


def pyinfra_groups() -> dict[str, list[PyinfraHost]]:
    """Group name -> [(pyinfra host name, host data)], as a pyinfra inventory file defines."""
    if os.environ.get(HOSTS_VAR, "").strip():
        return {HOSTS_GROUP: [_listed_host(spec) for spec in parse_hosts(os.environ[HOSTS_VAR])]}
    state, hosts = _sandbox()
    groups: dict[str, list[PyinfraHost]] = {
        SANDBOX_GROUP: [_sandbox_host(state, host) for host in hosts]
    }
    for suite in sorted({host.os for host in hosts}):
        groups[suite] = [
            entry for entry in groups[SANDBOX_GROUP] if entry[1]["sandbox_os"] == suite
        ]
    return groups


def ansible_inventory() -> dict[str, Any]:
    """The same hosts as an Ansible YAML inventory (group `hosts`, or `sandbox` and suites)."""
    if os.environ.get(HOSTS_VAR, "").strip():
        specs = parse_hosts(os.environ[HOSTS_VAR])
        ssh_args = f"-o UserKnownHostsFile={_known_hosts()} -o StrictHostKeyChecking=yes"
        group_vars: dict[str, Any] = {"ansible_ssh_common_args": ssh_args}
        if os.environ.get(KEY_VAR):
            group_vars["ansible_ssh_private_key_file"] = str(_expand(os.environ[KEY_VAR]))
        listed = {
            spec.name: {
                "ansible_host": spec.host,
                "ansible_port": spec.port,
                "ansible_user": spec.user,
            }
            for spec in specs
        }
        return {"all": {"children": {HOSTS_GROUP: {"hosts": listed, "vars": group_vars}}}}
    state, hosts = _sandbox()
    return state.ansible_inventory(hosts)


def _sandbox() -> tuple[StateDir, list[SandboxHost]]:
    state = StateDir(sandbox_dir())
    hosts = state.load_hosts()
    if not hosts:
        raise UsageError(NO_HOSTS)
    return state, hosts


def _listed_host(spec: HostSpec) -> PyinfraHost:
    key = os.environ.get(KEY_VAR)
    return spec.name, {
        "ssh_hostname": spec.host,
        "ssh_user": spec.user,
        "ssh_port": spec.port,
        # None: pyinfra falls back to the SSH agent and ~/.ssh keys, as `ssh` does.
        "ssh_key": str(_expand(key)) if key else None,
        "ssh_known_hosts_file": str(_known_hosts()),
        "ssh_strict_host_key_checking": "yes",
        "ssh_paramiko_connect_kwargs": PARAMIKO_CONNECT,
    }


def _sandbox_host(state: StateDir, host: SandboxHost) -> PyinfraHost:
    return host.name, {
        "ssh_hostname": host.hostname,
        "ssh_user": host.user,
        "ssh_port": host.port,
        "ssh_key": str(state.key_file),
        "ssh_known_hosts_file": str(state.known_hosts_file),
        "ssh_strict_host_key_checking": "yes",
        "ssh_paramiko_connect_kwargs": PARAMIKO_CONNECT,
        # Only the fleet's key: an agent's keys could exhaust sshd's MaxAuthTries first.
        "ssh_allow_agent": False,
        "ssh_look_for_keys": False,
        # sandbox_* rather than gpurig_*: that prefix belongs to the stack.yml fields.
        "sandbox_host": True,
        "sandbox_os": host.os,
        "sandbox_pretend_gpu": host.pretend_gpu,
        "sandbox_pretend_secure_boot": host.pretend_secure_boot,
    }


def _known_hosts() -> Path:
    return _expand(os.environ.get(KNOWN_HOSTS_VAR) or "~/.ssh/known_hosts")


def _expand(path: str) -> Path:
    return Path(path).expanduser().absolute()
