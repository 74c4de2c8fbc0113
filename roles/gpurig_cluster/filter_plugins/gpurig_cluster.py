"""Filters of the gpurig_cluster role: gpurig.cluster's decisions, for Ansible's inventory.

The pyinfra deploy (gpurig.deploys.cluster) calls the same functions, so both front ends find
the same clusters and write the same bytes. They run on the controller and need gpurig
importable by the Python that runs Ansible (as the gpurig_preflight action does).
"""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleFilterError


def _cluster() -> Any:
    try:
        from gpurig import cluster
    except ImportError as error:
        raise AnsibleFilterError(
            f"gpurig is not importable by the Python running Ansible ({error}): run "
            "ansible-playbook from the environment gpurig is installed in"
        ) from None
    return cluster


def _find(host: str, groups: Any, hostvars: Any, all_hosts: str | None) -> Any:
    cluster = _cluster()
    from gpurig.errors import GpurigError

    try:
        members, group_map = cluster.from_ansible(groups, hostvars)
        found = cluster.find_clusters(members, group_map, all_hosts or None)
    except GpurigError as error:
        raise AnsibleFilterError(f"gpurig_cluster: {error}") from None
    return cluster.cluster_of(found, host)


def membership(host: str, groups: Any, hostvars: Any, all_hosts: str | None = None) -> Any:
    """This host's cluster as plain data, or None when it is in none."""
    found = _find(host, groups, hostvars, all_hosts)
    if found is None:
        return None
    return {
        "name": found.name,
        "source": found.source,
        "members": found.names,
        "node_rank": found.node_rank(host),
        "nnodes": len(found.members),
        "rdzv_host": found.rdzv_host,
        "endpoint": found.endpoint,
    }


def route_command(address: str) -> str:
    """The shell script that prints `dev=IFNAME` for the route to `address`."""
    return str(_cluster().route_command(address))


def node_files(
    host: str,
    groups: Any,
    hostvars: Any,
    all_hosts: str | None = None,
    *,
    route: list[str],
    gpus: int,
    venv: str,
    user: str,
) -> list[dict[str, str]]:
    """[{path, content, mode}] of this member's files, as the pyinfra deploy writes them."""
    cluster = _cluster()
    from gpurig.errors import GpurigError

    found = _find(host, groups, hostvars, all_hosts)
    if found is None:
        raise AnsibleFilterError(f"gpurig_cluster: {host} is in no cluster")
    try:
        config = cluster.node_config(
            found, host, int(gpus), cluster.parse_route(route), venv, user
        )
    except GpurigError as error:
        raise AnsibleFilterError(f"gpurig_cluster: {error}") from None
    return [
        {"path": path, "content": content, "mode": "0" + mode}
        for path, (content, mode) in cluster.node_files(config).items()
    ]


def paths(_: Any = None) -> list[str]:
    """Every file the role manages (removed from hosts in no cluster)."""
    cluster = _cluster()
    return [cluster.CLUSTER_ENV, cluster.LAUNCHER, cluster.LIMITS_FILE]


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "gpurig_cluster_membership": membership,
            "gpurig_cluster_route_command": route_command,
            "gpurig_cluster_files": node_files,
            "gpurig_cluster_paths": paths,
        }
