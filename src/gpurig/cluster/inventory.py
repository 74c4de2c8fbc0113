"""Members and groups from an inventory: pyinfra's (the deploy, `gpurig cluster`) or Ansible's
(the role's filter plugin), in inventory order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gpurig.cluster.model import DEFAULTS, Member

# Host data the controller needs to reach a member (`gpurig cluster`), beside the gpurig_* keys.
CONNECTION_KEYS = (
    "ssh_hostname",
    "ssh_port",
    "ssh_user",
    "ssh_key",
    "ssh_known_hosts_file",
    "ssh_strict_host_key_checking",
    "ssh_allow_agent",
    "ssh_look_for_keys",
)


def from_pyinfra(inventory: Any) -> tuple[list[Member], dict[str, list[str]]]:
    """Members in inventory order, and group -> host names, from a pyinfra Inventory."""
    members = []
    for host in inventory:
        data = {
            key: value
            for key in (*DEFAULTS, *CONNECTION_KEYS)
            if (value := host.data.get(key)) is not None
        }
        members.append(Member(host.name, str(data.get("ssh_hostname") or host.name), data))
    groups = {name: [h.name for h in hosts] for name, hosts in inventory.groups.items()}
    return members, groups


def from_ansible(
    groups: Mapping[str, Sequence[str]], hostvars: Mapping[str, Any]
) -> tuple[list[Member], dict[str, list[str]]]:
    """The same, from Ansible's `groups` and `hostvars` (inventory order: groups['all'])."""
    members = []
    for name in groups.get("all", []):
        variables = hostvars[name]
        data = {
            key: value
            for key in DEFAULTS
            if (value := variables.get(key)) is not None and value != ""
        }
        members.append(Member(name, str(variables.get("ansible_host") or name), data))
    return members, {group: list(names) for group, names in groups.items()}
