"""Training clusters: which inventory hosts form one, and what each member gets.

Pure logic, shared by the pyinfra deploy (gpurig.deploys.cluster), the Ansible role
(roles/gpurig_cluster, through its filter plugin) and `gpurig cluster` on the controller, so the
three agree on every byte.

A cluster is marked in the inventory, in this order of precedence:

    GPURIG_CLUSTER=NAME      every inventory host (sandbox fleets, GPURIG_HOSTS lists)
    group cluster_NAME       its hosts
    gpurig_cluster: NAME     host data: the hosts that carry it

Members are in inventory order (pyinfra's host order, Ansible's groups['all']; pyinfra itself
keeps no other order for a group). The first is node 0 and hosts the rendezvous. torchrun's
static rendezvous takes each node's rank from /etc/gpurig/cluster.env, so a node's rank is its
place in that order on every run (c10d's dynamic rendezvous numbers nodes as they happen to
join).

Cluster-wide knobs (group data; they must agree across members) and per-host ones:

    gpurig_rdzv_host               node 0's address on the cluster network (default: its
                                   inventory address, ssh_hostname / ansible_host)
    gpurig_rdzv_port               its port (29400)
    gpurig_rdzv_timeout_s          how long a node waits for all the others to join (60)
    gpurig_dist_timeout_s          how long a collective waits for a peer (120)
    gpurig_cluster_ifname          per host: NCCL/gloo's interface (default: the one on the
                                   route to the rendezvous host)
    gpurig_cluster_nproc_per_node  per host: processes (default: its GPU count, or 1)
    gpurig_cluster_nofile          per host: the service user's open-file limit (1048576)
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gpurig.errors import UsageError

ENV_CLUSTER = "GPURIG_CLUSTER"
GROUP_PREFIX = "cluster_"
CLUSTER_KEY = "gpurig_cluster"
CLUSTER_ENV = "/etc/gpurig/cluster.env"
LAUNCHER = "/usr/local/bin/gpurig-launch"
LIMITS_FILE = "/etc/security/limits.d/90-gpurig-cluster.conf"
REPORTS_DIR = "/var/lib/gpurig/cluster"  # per-rank smoke reports on each member

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


# --- what a member gets ----------------------------------------------------------------------


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


def env_values(config: NodeConfig) -> dict[str, str]:
    cluster = config.cluster
    return {
        "GPURIG_CLUSTER": cluster.name,
        "GPURIG_VENV": config.venv,
        "NNODES": str(len(cluster.members)),
        "NODE_RANK": str(config.node_rank),
        "NPROC_PER_NODE": str(config.nproc_per_node),
        "RDZV_ENDPOINT": cluster.endpoint,
        "RDZV_ID": cluster.name,
        "RDZV_TIMEOUT_S": str(cluster.rdzv_timeout_s),
        "DIST_TIMEOUT_S": str(cluster.dist_timeout_s),
        "NCCL_SOCKET_IFNAME": config.ifname,
        "GLOO_SOCKET_IFNAME": config.ifname,
        # A failed or timed-out NCCL collective tears the process down instead of hanging.
        "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",
    }


def cluster_env(config: NodeConfig) -> str:
    cluster = config.cluster
    lines = [
        f"# Written by gpurig: node {config.node_rank} of {len(cluster.members)} in training "
        f"cluster {cluster.name} ({', '.join(cluster.names)}).",
        "# gpurig-launch reads it; KEY=value lines (sh, systemd EnvironmentFile).",
        *(f"{key}={shlex.quote(value)}" for key, value in env_values(config).items()),
    ]
    return "\n".join(lines) + "\n"


def parse_env(text: str) -> dict[str, str]:
    """KEY=value lines as cluster_env writes them."""
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#") and key.strip():
            parsed = shlex.split(value) or [""]
            values[key.strip()] = parsed[0]
    return values


LAUNCHER_SCRIPT = f"""\
#!/bin/sh
# Written by gpurig: run a bloomkit command on this node of its training cluster, under
# torchrun. Start it on every member (`gpurig cluster run` does, in parallel):
#   gpurig-launch smoke --distributed --json {REPORTS_DIR}/{{rank}}.json
#   gpurig-launch finetune --data train.jsonl --output out
# Static rendezvous at RDZV_ENDPOINT: node ranks come from {CLUSTER_ENV}; a node waits at most
# RDZV_TIMEOUT_S for all NNODES nodes, then fails (no restarts: a lost node fails the run).
set -eu
set -a
if [ -r /etc/gpurig/environment ]; then . /etc/gpurig/environment; fi
. {CLUSTER_ENV}
set +a
# NCCL and gloo open sockets per peer and channel: the soft open-file limit up to the hard one.
ulimit -S -n "$(ulimit -H -n)" 2>/dev/null || true
exec "$GPURIG_VENV/bin/torchrun" \\
  --nnodes "$NNODES" --node-rank "$NODE_RANK" --nproc-per-node "$NPROC_PER_NODE" \\
  --rdzv-backend static --rdzv-endpoint "$RDZV_ENDPOINT" --rdzv-id "$RDZV_ID" \\
  --rdzv-conf "timeout=$RDZV_TIMEOUT_S" --max-restarts 0 \\
  -m bloomkit "$@"
"""


def limits_file(config: NodeConfig) -> str:
    return (
        "# Written by gpurig: open files for training jobs of the service user (NCCL and gloo\n"
        "# open sockets per peer and channel; DataLoader workers pass tensors as descriptors).\n"
        "# pam_limits applies it to login sessions (ssh, runuser -l); a systemd unit needs\n"
        f"# LimitNOFILE={config.nofile} in its [Service] section instead.\n"
        f"{config.user} soft nofile {config.nofile}\n"
        f"{config.user} hard nofile {config.nofile}\n"
    )


def node_files(config: NodeConfig) -> dict[str, tuple[str, str]]:
    """Path -> (content, mode) of everything a member gets."""
    return {
        CLUSTER_ENV: (cluster_env(config), "644"),
        LAUNCHER: (LAUNCHER_SCRIPT, "755"),
        LIMITS_FILE: (limits_file(config), "644"),
    }


# --- the route to the rendezvous host (a fact on each member) ---------------------------------

# Prints `dev=IFNAME` for the interface that reaches ADDR: `ip route get`, or, on hosts without
# iproute2 (minimal images), the kernel's table read by python3. ADDR being this host's own
# address gives the interface that carries it (not `lo`, where the kernel routes it locally).
ROUTE_SCRIPT = r"""
addr=__ADDR__
case "$addr" in
  *[!0-9.]*) a=$(getent ahostsv4 "$addr" 2>/dev/null | awk 'NR==1 {print $1}')
             if [ -n "$a" ]; then addr=$a; fi;;
esac
dev=
if command -v ip >/dev/null 2>&1; then
  route=$(ip -o -4 route get "$addr" 2>/dev/null | head -n 1)
  case "$route" in
    local\ *) dev=$(ip -o -4 addr show to "$addr" 2>/dev/null | awk 'NR==1 {print $2}');;
  esac
  if [ -z "$dev" ]; then dev=$(printf '%s\n' "$route" | sed -n 's/.* dev \([^ ]*\).*/\1/p'); fi
elif command -v python3 >/dev/null 2>&1; then
  dev=$(python3 - "$addr" <<'PY' 2>/dev/null
import fcntl, socket, struct, sys
addr = sys.argv[1]
probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _, name in socket.if_nameindex():
    try:
        raw = fcntl.ioctl(probe.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))
    except OSError:
        continue
    if socket.inet_ntoa(raw[20:24]) == addr:
        print(name)
        sys.exit()
if addr.startswith("127."):
    print("lo")
    sys.exit()
wanted = struct.unpack("<I", socket.inet_aton(addr))[0]
best = None
with open("/proc/net/route") as table:
    for line in table.readlines()[1:]:
        fields = line.split()
        dest, mask = int(fields[1], 16), int(fields[7], 16)
        if wanted & mask == dest and (best is None or bin(mask).count("1") > best[0]):
            best = (bin(mask).count("1"), fields[0])
if best:
    print(best[1])
PY
)
fi
echo "dev=$dev"
"""


def route_command(address: str) -> str:
    return ROUTE_SCRIPT.replace("__ADDR__", shlex.quote(address))


def parse_route(lines: Sequence[str]) -> str | None:
    for line in lines:
        key, _, value = line.strip().partition("=")
        if key == "dev" and value:
            return value
    return None


# --- inventories -----------------------------------------------------------------------------

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
