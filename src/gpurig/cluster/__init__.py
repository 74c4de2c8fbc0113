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

The package, by job:

    model      clusters and their members, each member's settings (NodeConfig)
    files      what a member gets (cluster.env, the launcher, limits) and the route fact
    inventory  members and groups from pyinfra's and Ansible's inventories
    transport  reaching a member from the controller (SSH), for `gpurig cluster`
    launch     the command lines run on the members: launch, end, fetch the reports
    run        one run across the cluster: reach, check, launch, end the rest on a failure
    report     the fleet verdict: cluster.json, the saved reports, the printed table

Only the pure modules are imported here (the filter plugin and the deploy need no paramiko);
`gpurig cluster` imports transport, launch, run and report itself.
"""

from __future__ import annotations

from gpurig.cluster.files import (
    LAUNCHER_SCRIPT,
    ROUTE_SCRIPT,
    cluster_env,
    env_values,
    limits_file,
    node_files,
    parse_env,
    parse_route,
    route_command,
)
from gpurig.cluster.inventory import CONNECTION_KEYS, from_ansible, from_pyinfra
from gpurig.cluster.model import (
    CLUSTER_KEY,
    CLUSTER_WIDE,
    DEFAULTS,
    ENV_CLUSTER,
    GROUP_PREFIX,
    Cluster,
    Member,
    NodeConfig,
    choose,
    cluster_of,
    find_clusters,
    node_config,
)
from gpurig.hostlayout import CLUSTER_ENV, LAUNCHER, LIMITS_FILE
from gpurig.hostlayout import CLUSTER_REPORTS_DIR as REPORTS_DIR

__all__ = [
    "CLUSTER_ENV",
    "CLUSTER_KEY",
    "CLUSTER_WIDE",
    "CONNECTION_KEYS",
    "DEFAULTS",
    "ENV_CLUSTER",
    "GROUP_PREFIX",
    "LAUNCHER",
    "LAUNCHER_SCRIPT",
    "LIMITS_FILE",
    "REPORTS_DIR",
    "ROUTE_SCRIPT",
    "Cluster",
    "Member",
    "NodeConfig",
    "choose",
    "cluster_env",
    "cluster_of",
    "env_values",
    "find_clusters",
    "from_ansible",
    "from_pyinfra",
    "limits_file",
    "node_config",
    "node_files",
    "parse_env",
    "parse_route",
    "route_command",
]
