"""Clusters and their members: how the inventory marks them, which one a command acts on, and
each member's settings (the source of its files, gpurig.cluster.files)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gpurig.errors import UsageError

ENV_CLUSTER = "GPURIG_CLUSTER"
GROUP_PREFIX = "cluster_"
CLUSTER_KEY = "gpurig_cluster"

DEFAULTS: dict[str, Any] = {
    CLUSTER_KEY: None,
    "gpurig_rdzv_host": None,
    "gpurig_rdzv_port": 29400,
    "gpurig_rdzv_timeout_s": 60,
    "gpurig_dist_timeout_s": 120,
    "gpurig_cluster_ifname": None,
    "gpurig_cluster_nproc_per_node": None,
    "gpurig_cluster_nofile": 1048576,
}
CLUSTER_WIDE = (
    "gpurig_rdzv_host",
    "gpurig_rdzv_port",
    "gpurig_rdzv_timeout_s",
    "gpurig_dist_timeout_s",
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_IFNAME = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")  # what the kernel allows, without spaces


@dataclass(frozen=True)
class Member:
    """One host of the inventory, as the controller reaches it."""

    name: str  # the inventory name (reports, messages)
    address: str  # ssh_hostname / ansible_host, else the name
    data: Mapping[str, Any]  # the gpurig_* (and connection) data of the host

    def value(self, key: str) -> Any:
        found = self.data.get(key)
        return DEFAULTS.get(key) if found is None else found


@dataclass(frozen=True)
class Cluster:
    name: str
    members: tuple[Member, ...]
    source: str  # how the inventory marked it
    rdzv_host: str
    rdzv_port: int
    rdzv_timeout_s: int
    dist_timeout_s: int

    @property
    def endpoint(self) -> str:
        host = f"[{self.rdzv_host}]" if ":" in self.rdzv_host else self.rdzv_host
        return f"{host}:{self.rdzv_port}"

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.members]

    def node_rank(self, host: str) -> int:
        return self.names.index(host)

    def member(self, host: str) -> Member:
        return self.members[self.node_rank(host)]


def _check_name(name: str, where: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise UsageError(
            f"cluster name {name!r} ({where}): use letters, digits, '.', '_' or '-' "
            "(it names the rendezvous and the reports folder)"
        )
    return name


def _int(member: Member, key: str, low: int, high: int) -> int:
    value = member.value(key)
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = low - 1
    if isinstance(value, bool) or not low <= number <= high:
        raise UsageError(f"{member.name}: {key} is {value!r}: expected {low}-{high}")
    return number


def _build(name: str, members: list[Member], source: str) -> Cluster:
    first = members[0]
    for key in CLUSTER_WIDE:
        values = {m.name: m.value(key) for m in members}
        if len({repr(v) for v in values.values()}) > 1:
            shown = ", ".join(f"{host}={value!r}" for host, value in values.items())
            raise UsageError(
                f"cluster {name}: {key} differs between members ({shown}): set it once, as "
                "group data of the cluster"
            )
    return Cluster(
        name=name,
        members=tuple(members),
        source=source,
        rdzv_host=str(first.value("gpurig_rdzv_host") or first.address),
        rdzv_port=_int(first, "gpurig_rdzv_port", 1, 65535),
        rdzv_timeout_s=_int(first, "gpurig_rdzv_timeout_s", 1, 86400),
        dist_timeout_s=_int(first, "gpurig_dist_timeout_s", 1, 86400),
    )


def find_clusters(
    hosts: Sequence[Member],
    groups: Mapping[str, Sequence[str]],
    env_cluster: str | None = None,
) -> dict[str, Cluster]:
    """Cluster name -> Cluster. `hosts` in inventory order (node ranks follow it); `groups`:
    group -> host names."""
    if env_cluster:
        name = _check_name(env_cluster, ENV_CLUSTER)
        return {name: _build(name, list(hosts), ENV_CLUSTER)} if hosts else {}
    found: dict[str, tuple[list[Member], str]] = {}
    placed: dict[str, str] = {}  # host -> its cluster

    def place(host: str, cluster: str) -> None:
        if placed.setdefault(host, cluster) != cluster:
            raise UsageError(
                f"{host} is in two clusters ({placed[host]}, {cluster}): one cluster.env per "
                "host, so one cluster per host"
            )

    for group, names in groups.items():
        if not group.startswith(GROUP_PREFIX) or group == GROUP_PREFIX:
            continue
        name = _check_name(group.removeprefix(GROUP_PREFIX), f"group {group}")
        listed = set(names)
        members = [m for m in hosts if m.name in listed]  # inventory order
        for member in members:
            place(member.name, name)
        if members:
            found[name] = (members, f"group {group}")
    for member in hosts:
        marked = member.data.get(CLUSTER_KEY)
        if marked in (None, ""):
            continue
        name = _check_name(str(marked), f"{member.name}'s {CLUSTER_KEY}")
        place(member.name, name)
        members = found.setdefault(name, ([], f"host data {CLUSTER_KEY}"))[0]
        if member not in members:
            members.append(member)
    order = {m.name: index for index, m in enumerate(hosts)}
    return {
        name: _build(name, sorted(members, key=lambda m: order[m.name]), source)
        for name, (members, source) in found.items()
    }


def cluster_of(clusters: Mapping[str, Cluster], host: str) -> Cluster | None:
    return next((c for c in clusters.values() if host in c.names), None)


def choose(clusters: Mapping[str, Cluster], group: str | None) -> Cluster:
    """The cluster a command acts on: --group NAME (or cluster_NAME), or the only one."""
    if not clusters:
        raise UsageError(
            "no cluster in the inventory: list hosts in a group cluster_NAME, give them host "
            f"data {CLUSTER_KEY}: NAME, or set {ENV_CLUSTER}=NAME (docs/multinode.md)"
        )
    if group is None:
        if len(clusters) > 1:
            raise UsageError(f"the inventory has clusters {', '.join(sorted(clusters))}: --group")
        return next(iter(clusters.values()))
    name = group.removeprefix(GROUP_PREFIX)
    if name not in clusters:
        raise UsageError(f"no cluster {group!r} in the inventory: {', '.join(sorted(clusters))}")
    return clusters[name]


# --- each member's settings ------------------------------------------------------------------


@dataclass(frozen=True)
class NodeConfig:
    """One member's settings: the source of its cluster.env."""

    cluster: Cluster
    host: str
    nproc_per_node: int
    ifname: str
    nofile: int
    venv: str
    user: str

    @property
    def node_rank(self) -> int:
        return self.cluster.node_rank(self.host)


def node_config(
    cluster: Cluster, host: str, gpus: int, route_ifname: str | None, venv: str, user: str
) -> NodeConfig:
    """Host data first, then the facts: GPU count, the interface routing to the rendezvous."""
    member = cluster.member(host)
    nproc = member.value("gpurig_cluster_nproc_per_node")
    nproc = _int(member, "gpurig_cluster_nproc_per_node", 1, 1024) if nproc else max(1, gpus)
    ifname = member.value("gpurig_cluster_ifname") or route_ifname
    if not ifname:
        raise UsageError(
            f"{host}: no route to the rendezvous host {cluster.rdzv_host} of cluster "
            f"{cluster.name} (set gpurig_cluster_ifname, or fix the route)"
        )
    if not _IFNAME.match(str(ifname)):
        raise UsageError(f"{host}: gpurig_cluster_ifname {ifname!r} is not an interface name")
    return NodeConfig(
        cluster=cluster,
        host=host,
        nproc_per_node=nproc,
        ifname=str(ifname),
        nofile=_int(member, "gpurig_cluster_nofile", 1024, 1 << 30),
        venv=venv,
        user=user,
    )
