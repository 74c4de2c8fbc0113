"""Cluster membership and each member's files (gpurig.cluster), as pyinfra and Ansible see them."""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpurig import cluster
from gpurig.errors import UsageError
from gpurig.facts.cluster import RouteInterface

REPO_ROOT = Path(__file__).resolve().parents[2]


def member(name: str, **data: Any) -> cluster.Member:
    return cluster.Member(name, f"10.0.0.{name[-1]}", data)


HOSTS = [member("gpu-1"), member("gpu-2"), member("gpu-3"), member("cpu-4")]


def config(found: cluster.Cluster, host: str, gpus: int = 8, route: str | None = "eth0"):
    return cluster.node_config(found, host, gpus, route, "/opt/gpurig/venv", "gpurig")


# --- membership -------------------------------------------------------------------------------


def test_a_cluster_group_in_inventory_order_with_node_0_as_rendezvous() -> None:
    found = cluster.find_clusters(HOSTS, {"cluster_llm": ["gpu-3", "gpu-1"], "gpu": ["gpu-2"]})
    (llm,) = found.values()
    assert llm.name == "llm"
    assert llm.names == ["gpu-1", "gpu-3"]  # as pyinfra orders a group: by the inventory
    assert llm.endpoint == "10.0.0.1:29400"
    assert llm.source == "group cluster_llm"
    assert cluster.cluster_of(found, "gpu-2") is None


def test_host_data_marks_clusters_in_inventory_order() -> None:
    hosts = [
        member("gpu-1", gpurig_cluster="a"),
        member("gpu-2"),
        member("gpu-3", gpurig_cluster="a"),
    ]
    (found,) = cluster.find_clusters(hosts, {}).values()
    assert found.names == ["gpu-1", "gpu-3"]
    assert found.source == "host data gpurig_cluster"


def test_the_environment_puts_every_host_in_one_cluster() -> None:
    found = cluster.find_clusters(HOSTS, {"cluster_other": ["gpu-1"]}, env_cluster="all-of-it")
    assert list(found) == ["all-of-it"]
    assert found["all-of-it"].names == ["gpu-1", "gpu-2", "gpu-3", "cpu-4"]


def test_cluster_wide_settings_come_from_group_data() -> None:
    shared = {
        "gpurig_rdzv_port": 29555,
        "gpurig_rdzv_host": "fabric-1",
        "gpurig_rdzv_timeout_s": 30,
    }
    hosts = [member("gpu-1", **shared), member("gpu-2", **shared)]
    found = cluster.find_clusters(hosts, {"cluster_x": ["gpu-1", "gpu-2"]})["x"]
    assert found.endpoint == "fabric-1:29555"
    assert (found.rdzv_timeout_s, found.dist_timeout_s) == (30, 120)
    ipv6 = cluster.find_clusters(
        [member("gpu-1", gpurig_rdzv_host="fd00::1")], {"cluster_y": ["gpu-1"]}
    )
    assert ipv6["y"].endpoint == "[fd00::1]:29400"


@pytest.mark.parametrize(
    ("hosts", "groups", "message"),
    [
        (HOSTS, {"cluster_a": ["gpu-1"], "cluster_b": ["gpu-1"]}, "gpu-1 is in two clusters"),
        ([member("gpu-1", gpurig_cluster="b")], {"cluster_a": ["gpu-1"]}, "gpu-1 is in two"),
        (HOSTS, {"cluster_a b": ["gpu-1"]}, "cluster name 'a b'"),
        (
            [member("gpu-1", gpurig_rdzv_port=1), member("gpu-2", gpurig_rdzv_port=2)],
            {"cluster_a": ["gpu-1", "gpu-2"]},
            "gpurig_rdzv_port differs between members (gpu-1=1, gpu-2=2)",
        ),
        ([member("gpu-1", gpurig_rdzv_port="x")], {"cluster_a": ["gpu-1"]}, "_port is 'x'"),
    ],
)  # fmt: skip
def test_inventories_that_cannot_be_right_are_refused(hosts, groups, message) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        cluster.find_clusters(hosts, groups)


def test_choosing_the_cluster_to_act_on() -> None:
    found = cluster.find_clusters(HOSTS, {"cluster_a": ["gpu-1"], "cluster_b": ["gpu-2"]})
    assert cluster.choose(found, "cluster_b").name == "b"
    assert cluster.choose(found, "a").name == "a"
    with pytest.raises(UsageError, match="--group"):
        cluster.choose(found, None)
    with pytest.raises(UsageError, match="no cluster 'c'"):
        cluster.choose(found, "c")
    with pytest.raises(UsageError, match="GPURIG_CLUSTER=NAME"):
        cluster.choose({}, None)


# --- what a member gets -----------------------------------------------------------------------


def test_cluster_env_is_this_nodes_place() -> None:
    found = cluster.find_clusters(HOSTS, {"cluster_llm": ["gpu-1", "gpu-2", "gpu-3"]})["llm"]
    values = cluster.parse_env(cluster.cluster_env(config(found, "gpu-2")))
    assert values == {
        "GPURIG_CLUSTER": "llm",
        "GPURIG_VENV": "/opt/gpurig/venv",
        "NNODES": "3",
        "NODE_RANK": "1",
        "NPROC_PER_NODE": "8",
        "RDZV_ENDPOINT": "10.0.0.1:29400",
        "RDZV_ID": "llm",
        "RDZV_TIMEOUT_S": "60",
        "DIST_TIMEOUT_S": "120",
        "NCCL_SOCKET_IFNAME": "eth0",
        "GLOO_SOCKET_IFNAME": "eth0",
        "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",
    }


def test_processes_per_node_and_interface_from_facts_unless_host_data_says() -> None:
    hosts = [member("gpu-1", gpurig_cluster_ifname="ib0", gpurig_cluster_nproc_per_node=4)]
    found = cluster.find_clusters([*hosts, member("cpu-2")], {"cluster_a": ["gpu-1", "cpu-2"]})
    pinned = config(found["a"], "gpu-1", gpus=8, route="eth0")
    assert (pinned.nproc_per_node, pinned.ifname) == (4, "ib0")
    cpu = config(found["a"], "cpu-2", gpus=0, route="eth1")
    assert (cpu.nproc_per_node, cpu.ifname) == (1, "eth1")
    with pytest.raises(UsageError, match=r"no route to the rendezvous host 10\.0\.0\.1"):
        config(found["a"], "cpu-2", route=None)


def test_the_open_file_limit_is_the_service_users() -> None:
    found = cluster.find_clusters(
        [member("gpu-1", gpurig_cluster_nofile=65536)], {"cluster_a": ["gpu-1"]}
    )
    text = cluster.limits_file(config(found["a"], "gpu-1"))
    assert "gpurig soft nofile 65536\ngpurig hard nofile 65536\n" in text
    assert "LimitNOFILE=65536" in text  # the systemd way, said where it applies


def test_the_launcher_gives_torchrun_static_ranks(tmp_path: Path) -> None:
    """gpurig-launch, run for real against a fake torchrun; its arguments are parsed by the
    torchrun of this venv, so a flag torch renamed fails here."""
    from torch.distributed.run import config_from_args, get_args_parser

    found = cluster.find_clusters(HOSTS, {"cluster_llm": ["gpu-1", "gpu-2", "gpu-3"]})["llm"]
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    fake = venv / "bin" / "torchrun"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\necho "ifname=$NCCL_SOCKET_IFNAME"\n')
    fake.chmod(0o755)
    env_file = tmp_path / "cluster.env"
    node = cluster.node_config(found, "gpu-3", 0, "eth0", str(venv), "gpurig")
    env_file.write_text(cluster.cluster_env(node))
    launcher = tmp_path / "gpurig-launch"
    launcher.write_text(cluster.LAUNCHER_SCRIPT.replace(cluster.CLUSTER_ENV, str(env_file)))
    launcher.chmod(0o755)
    out = subprocess.run(
        [str(launcher), "smoke", "--distributed", "--json", "/x/{rank}.json"],
        capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin"},
    ).stdout.splitlines()  # fmt: skip
    assert out[-1] == "ifname=eth0"
    argv = out[:-1]
    assert argv[-5:] == ["bloomkit", "smoke", "--distributed", "--json", "/x/{rank}.json"]
    args = get_args_parser().parse_args(argv)
    assert (args.nnodes, args.node_rank, args.nproc_per_node) == ("3", 2, "1")
    assert (args.rdzv_backend, args.rdzv_endpoint, args.rdzv_id) == (
        "static",
        "10.0.0.1:29400",
        "llm",
    )
    assert args.max_restarts == 0
    assert args.module
    launch_config, _, _ = config_from_args(args)
    assert launch_config.rdzv_configs == {"timeout": "60", "rank": 2}  # the join is bounded


def test_node_files_paths_and_modes() -> None:
    found = cluster.find_clusters(HOSTS, {"cluster_a": ["gpu-1"]})["a"]
    files = cluster.node_files(config(found, "gpu-1"))
    assert {path: mode for path, (_, mode) in files.items()} == {
        "/etc/gpurig/cluster.env": "644",
        "/usr/local/bin/gpurig-launch": "755",
        "/etc/security/limits.d/90-gpurig-cluster.conf": "644",
    }


# --- the route fact ---------------------------------------------------------------------------


def test_the_route_fact_on_this_machine() -> None:
    script = RouteInterface().command("127.0.0.1")
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True)
    assert RouteInterface().process(out.stdout.splitlines()) == "lo"
    # Without iproute2 (minimal images): python3 reads the kernel's table.
    no_ip = script.replace("command -v ip ", "command -v no-such-ip ")
    out = subprocess.run(["sh", "-c", no_ip], capture_output=True, text=True, check=True)
    assert cluster.parse_route(out.stdout.splitlines()) == "lo"
    assert RouteInterface().process(["dev="]) is None


# --- the inventories --------------------------------------------------------------------------


def test_a_pyinfra_inventory_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gpurig.commands.cluster import load_clusters

    (tmp_path / "fleet.py").write_text(
        "gpus = [('a', {'ssh_hostname': '10.1.0.1'}), ('b', {'ssh_hostname': '10.1.0.2'}), 'c']\n"
        "cluster_train = [('b', {'gpurig_rdzv_port': 29555}), ('a', {'gpurig_rdzv_port': 29555})]\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(cluster.ENV_CLUSTER, raising=False)
    train = load_clusters("fleet.py")["train"]
    assert train.names == ["a", "b"]  # pyinfra keeps the inventory's order in every group
    assert train.endpoint == "10.1.0.1:29555"
    monkeypatch.setenv(cluster.ENV_CLUSTER, "every")
    with pytest.raises(UsageError, match="gpurig_rdzv_port differs"):
        load_clusters("fleet.py")


def _filters() -> dict[str, Any]:
    path = REPO_ROOT / "roles" / "gpurig_cluster" / "filter_plugins" / "gpurig_cluster.py"
    spec = importlib.util.spec_from_file_location("gpurig_cluster_filters", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module.FilterModule().filters())


def test_the_ansible_filters_agree_with_pyinfra() -> None:
    filters = _filters()
    groups = {"all": ["a", "b", "c"], "cluster_pair": ["a", "b"], "ungrouped": ["c"]}
    hostvars = {
        "a": {"ansible_host": "10.1.0.1", "gpurig_rdzv_port": 29555},
        "b": {"ansible_host": "10.1.0.2", "gpurig_rdzv_port": 29555},
        "c": {"ansible_host": "10.1.0.3"},
    }
    node = filters["gpurig_cluster_membership"]("b", groups, hostvars, "")
    assert node == {
        "name": "pair", "source": "group cluster_pair", "members": ["a", "b"], "node_rank": 1,
        "nnodes": 2, "rdzv_host": "10.1.0.1", "endpoint": "10.1.0.1:29555",
    }  # fmt: skip
    assert filters["gpurig_cluster_membership"]("c", groups, hostvars, "") is None
    written = filters["gpurig_cluster_files"](
        "b",
        groups,
        hostvars,
        "",
        route=["dev=eth0"],
        gpus=2,
        venv="/opt/gpurig/venv",
        user="gpurig",
    )
    members, group_map = cluster.from_ansible(groups, hostvars)
    found = cluster.find_clusters(members, group_map)["pair"]
    expected = cluster.node_files(
        cluster.node_config(found, "b", 2, "eth0", "/opt/gpurig/venv", "gpurig")
    )
    assert {f["path"]: (f["content"], f["mode"]) for f in written} == {
        path: (content, "0" + mode) for path, (content, mode) in expected.items()
    }
    assert filters["gpurig_cluster_paths"]("b") == list(expected)
    assert filters["gpurig_cluster_route_command"]("10.1.0.1") == cluster.route_command("10.1.0.1")
    everyone = filters["gpurig_cluster_membership"](
        "c", groups, {**hostvars, "a": {}, "b": {}}, "all"
    )
    assert everyone["members"] == ["a", "b", "c"]


def test_the_role_documents_the_inventory_keys_pyinfra_reads() -> None:
    defaults = (REPO_ROOT / "roles" / "gpurig_cluster" / "defaults" / "main.yml").read_text()
    for key, value in cluster.DEFAULTS.items():
        if key != cluster.CLUSTER_KEY:
            assert key in defaults, key
            assert value is None or f"({value})" in defaults, key
    specs = yaml.safe_load(
        (REPO_ROOT / "roles" / "gpurig_cluster" / "meta" / "argument_specs.yml").read_text()
    )
    options = specs["argument_specs"]["main"]["options"]
    assert set(options) == set(yaml.safe_load(defaults))


def test_the_cluster_stage_runs_after_the_llm_environment_in_both_front_ends() -> None:
    deploy = (REPO_ROOT / "deploy" / "gpu.py").read_text()
    assert deploy.index("llm_env()") < deploy.index("cluster_node()") < deploy.index("verify()")
    play = (REPO_ROOT / "playbooks" / "gpu.yml").read_text()
    assert play.index("name: gpurig_llm_env") < play.index("name: gpurig_cluster")
    assert play.index("name: gpurig_cluster") < play.index("name: gpurig_smoke")
    assert os.access(REPO_ROOT / "deploy" / "cluster.py", os.R_OK)
