"""The cluster stage: what multi-node training needs on each member of an inventory cluster.

For a host in a cluster (gpurig.cluster: group cluster_NAME, host data gpurig_cluster, or
GPURIG_CLUSTER): /etc/gpurig/cluster.env (its node rank, the rendezvous endpoint, NCCL and
gloo's interface: the one routing to the rendezvous host), /usr/local/bin/gpurig-launch
(bloomkit under torchrun), and the service user's open-file limit. A host in no cluster has
these files removed, so a stale membership cannot be launched. The same file contents come from
gpurig.cluster for the Ansible role.

`deploy/gpu.py` runs it after the LLM environment; `pyinfra inventory.py deploy/cluster.py` runs
it alone (re-forming clusters after an inventory change).
"""

from __future__ import annotations

import os
from typing import Any
from weakref import WeakKeyDictionary

from pyinfra.api.deploy import deploy
from pyinfra.context import host, state
from pyinfra.operations import files as pyinfra_files

from gpurig import cluster
from gpurig.deploys import FACTS_KEY, host_in_place, host_stack, run_if
from gpurig.errors import GpurigError
from gpurig.facts.cluster import RouteInterface
from gpurig.facts.gpu import GpuHost
from gpurig.model.host import HostFacts
from gpurig.operations import control, files


def _gpu_count() -> int:
    """GPUs on the PCI bus: preflight's facts in a full deploy, else the GPU layer's fact."""
    facts = host.data.get(FACTS_KEY)
    if isinstance(facts, HostFacts):
        return len(facts.gpus)
    return len(host.get_fact(GpuHost, _sudo=False).gpus)


# The inventory's members, read once per run: every host's stage reads every host's data, so
# reading it per host made a fleet's run quadratic in its hosts (the keys are inventory data,
# which no deploy sets).
_MEMBERS: WeakKeyDictionary[Any, tuple[list[cluster.Member], dict[str, list[str]]]] = (
    WeakKeyDictionary()
)


def inventory_clusters() -> dict[str, cluster.Cluster]:
    inventory = state.inventory
    if inventory not in _MEMBERS:
        _MEMBERS[inventory] = cluster.from_pyinfra(inventory)
    members, groups = _MEMBERS[inventory]
    return cluster.find_clusters(members, groups, os.environ.get(cluster.ENV_CLUSTER))


@deploy("Cluster", data_defaults=cluster.DEFAULTS)
def cluster_node() -> None:
    try:
        mine = cluster.cluster_of(inventory_clusters(), host.name)
    except GpurigError as error:
        control.stop_host(name="Cluster: stop this host", reason=f"cluster: {error}")
        return
    if mine is None:
        known = host_in_place()  # preflight's probe, when it ran: no fact per file
        for path in (cluster.CLUSTER_ENV, cluster.LAUNCHER, cluster.LIMITS_FILE):
            pyinfra_files.file(
                name=f"Not in a cluster: no {path}",
                path=path,
                present=False,
                _if=run_if(not known.absent(path)),
            )
        return
    stack = host_stack()
    route = host.get_fact(RouteInterface, address=mine.rdzv_host, _sudo=False)
    try:
        config = cluster.node_config(
            mine, host.name, _gpu_count(), route, stack.host.venv, stack.host.user
        )
    except GpurigError as error:
        control.stop_host(name="Cluster: stop this host", reason=f"cluster: {error}")
        return
    host.log(
        f"cluster {mine.name}: node {config.node_rank} of {len(mine.members)}, "
        f"{config.nproc_per_node} process(es), rendezvous {mine.endpoint} via {config.ifname}"
    )
    names = {
        cluster.CLUSTER_ENV: "Write this node's cluster settings",
        cluster.LAUNCHER: "Install the cluster launcher",
        cluster.LIMITS_FILE: "Raise the service user's open-file limit",
    }
    for path, (content, mode) in cluster.node_files(config).items():
        files.installed(name=names[path], src=content.encode(), dest=path, mode=mode)
