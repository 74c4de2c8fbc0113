"""Multi-node training on three sandbox hosts (gloo over 127.0.0.1, distinct ports): the deploy
makes two of them a cluster, the distributed smoke passes on two nodes and bloomkit finetune runs
under the same launcher; the cluster is re-formed on all three and passes again; Ansible writes
the same bytes; then one node stops (mid-run, then before a run) and the run fails fast naming it.

One fleet for every case (CI: 2 cores), deployed once without its per-host smoke test.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from gpurig import cluster
from gpurig.sandbox.testing import SandboxFleet
from helpers.front_ends import Run, run_logged

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY_TIMEOUT_S = 1500
FAIL_FAST_S = 90  # a lost or stopped node: the whole run ends within this
RUN_TIMEOUT_S = 300
INVENTORY = """\
from gpurig.inventory import pyinfra_groups

globals().update(pyinfra_groups())  # the fleet's `sandbox` group
cluster_{name} = [(n, {{**d, "gpurig_rdzv_port": {port}}}) for n, d in sandbox[:{count}]]  # noqa
"""


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for probe in sockets:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in sockets]
    finally:
        for probe in sockets:
            probe.close()


@dataclass
class Cluster:
    fleet: SandboxFleet
    work: Path
    pair: Path  # inventory: cluster_pair = the first two hosts
    trio: Path  # inventory: cluster_trio = all three
    deploy: Run

    @property
    def names(self) -> list[str]:
        return [h.name for h in self.fleet.hosts]

    def env(self) -> dict[str, str]:
        env = {**self.fleet.env, "GPURIG_REPORTS_DIR": str(self.work / "reports")}
        env.pop(cluster.ENV_CLUSTER, None)
        return env

    def run(self, *argv: str, timeout: float = RUN_TIMEOUT_S) -> Run:
        return run_logged(" ".join(argv[1:4]) + "...", list(argv), self.env(), timeout)

    def gpurig(self, *argv: str, timeout: float = RUN_TIMEOUT_S) -> Run:
        return self.run(sys.executable, "-m", "gpurig.cli", *argv, timeout=timeout)

    def ssh(self, host: str, command: str) -> str:
        code, out = self.fleet.ssh(host, command)
        assert code == 0, f"{command!r} on {host}: exit {code}: {out}"
        return out

    def cluster_env(self, host: str) -> dict[str, str]:
        return cluster.parse_env(self.ssh(host, f"cat {cluster.CLUSTER_ENV}"))

    def reports(self, group: str) -> Path:
        return self.work / "reports" / "cluster" / group


@pytest.fixture(scope="module")
def three(sandbox_fleet: Callable[..., SandboxFleet], tmp_path_factory: pytest.TempPathFactory):
    fleet = sandbox_fleet(os="bookworm", count=3, name="multinode")
    work = tmp_path_factory.mktemp("multinode")
    pair_port, trio_port = free_ports(2)
    pair, trio = work / "pair.py", work / "trio.py"
    pair.write_text(INVENTORY.format(name="pair", port=pair_port, count=2))
    trio.write_text(INVENTORY.format(name="trio", port=trio_port, count=3))
    setup = Cluster(fleet, work, pair, trio, Run("", 0, "", 0))
    # The full deploy (deploy/gpu.py, its cluster stage included), without the per-host smoke.
    setup.deploy = setup.gpurig(
        "deploy", "--inventory", str(pair), "--skip-smoke", timeout=DEPLOY_TIMEOUT_S
    )
    return setup


def test_the_deploy_makes_the_first_two_hosts_a_cluster(three: Cluster) -> None:
    assert three.deploy.code == 0
    first, second, third = three.names
    assert three.cluster_env(first)["NODE_RANK"] == "0"
    values = three.cluster_env(second)
    assert {k: values[k] for k in ("GPURIG_CLUSTER", "NNODES", "NODE_RANK", "NPROC_PER_NODE")} == {
        "GPURIG_CLUSTER": "pair",
        "NNODES": "2",
        "NODE_RANK": "1",
        "NPROC_PER_NODE": "1",
    }
    assert values["GLOO_SOCKET_IFNAME"] == values["NCCL_SOCKET_IFNAME"] == "lo"  # route to 127.*
    assert three.ssh(first, f"stat -c '%a %U' {cluster.LAUNCHER}").strip() == "755 root"
    limits = three.ssh(first, f"cat {cluster.LIMITS_FILE}")
    assert "gpurig hard nofile 1048576" in limits
    assert three.fleet.ssh(third, f"test -e {cluster.CLUSTER_ENV}")[0] != 0  # in no cluster


def test_two_nodes_pass_the_distributed_smoke(three: Cluster) -> None:
    run = three.gpurig("cluster", "smoke", "-i", str(three.pair), "--quick")
    assert run.code == 0
    assert re.search(r"cluster pair: PASS in \d+ s, 2 node\(s\), 2 rank report", run.output)
    folder = three.reports("pair")
    record = json.loads((folder / "cluster.json").read_text())
    assert record["verdict"] == "pass"
    assert [n["status"] for n in record["nodes"]] == ["pass", "pass"]
    assert record["bloomkit_fleet"]["verdict"] == "pass"
    digests = set()
    for rank, host in enumerate(three.names[:2]):
        report = json.loads((folder / f"{rank}.json").read_text())
        assert report["host"] == host
        stages = {s["name"]: s for s in report["stages"]}
        assert {stages[n]["status"] for n in ("dist", "allreduce", "busbw", "ddp")} == {"pass"}
        assert stages["dist"]["figures"]["nodes"] == 2
        digests.add(stages["ddp"]["figures"]["weights_sha256"])
    assert len(digests) == 1  # every rank holds the same weights
    print(f"figure: 2-node fleet smoke {run.seconds:.1f} s, busbw {record['busbw_gbs']} GB/s")


def test_finetune_runs_unchanged_under_the_launcher(three: Cluster) -> None:
    data = (REPO_ROOT / "bloomkit" / "tests" / "data" / "train.jsonl").read_text()
    first, second = three.names[:2]
    for host in (first, second):  # every node reads its own copy, as on separate machines
        three.ssh(host, f"cat > /tmp/train.jsonl <<'EOF'\n{data}EOF\nrm -rf /tmp/tiny-out*")
    run = three.gpurig(
        "cluster", "run", "-i", str(three.pair), "--",
        "finetune", "--data", "/tmp/train.jsonl", "--output", "/tmp/tiny-out", "--model", "tiny",
        "--max-steps", "2", "--seq-len", "32", "--batch-size", "2", "--no-progress",
    )  # fmt: skip
    assert run.code == 0
    config = json.loads(three.ssh(first, "cat /tmp/tiny-out/bloomkit_config.json"))
    assert config["resolved"]["world_size"] == 2
    assert three.fleet.ssh(second, "test -e /tmp/tiny-out")[0] != 0  # only rank 0 writes


def test_three_nodes_pass_after_the_cluster_is_reformed(three: Cluster) -> None:
    pyinfra = str(Path(sys.executable).with_name("pyinfra"))
    reform = three.run(pyinfra, "-y", str(three.trio), "deploy/cluster.py")
    assert reform.code == 0
    again = three.run(pyinfra, "-y", str(three.trio), "deploy/cluster.py")
    assert again.code == 0
    total = next(ln for ln in again.output.splitlines() if "Grand total" in ln).split()
    assert total[3] == "-", "a second run of the cluster stage changed something"
    assert [three.cluster_env(h)["NODE_RANK"] for h in three.names] == ["0", "1", "2"]
    run = three.gpurig("cluster", "smoke", "-i", str(three.trio), "--quick")
    assert run.code == 0
    record = json.loads((three.reports("trio") / "cluster.json").read_text())
    assert record["verdict"] == "pass"
    assert record["ranks"] == 3
    print(f"figure: 3-node fleet smoke {run.seconds:.1f} s, busbw {record['busbw_gbs']} GB/s")


def test_ansible_writes_the_same_bytes(three: Cluster) -> None:
    """The gpurig_cluster role on hosts pyinfra configured: nothing to change."""
    inventory = yaml.safe_load(three.fleet.ansible_inventory.read_text())
    port = cluster.parse_env(three.ssh(three.names[0], f"cat {cluster.CLUSTER_ENV}"))
    inventory["all"]["children"]["cluster_trio"] = {
        "hosts": dict.fromkeys(three.names),
        "vars": {"gpurig_rdzv_port": int(port["RDZV_ENDPOINT"].rsplit(":", 1)[1])},
    }
    (three.work / "ansible.yml").write_text(yaml.safe_dump(inventory))
    (three.work / "play.yml").write_text(
        "- name: Preflight, then the cluster stage\n  hosts: all\n  become: true\n"
        "  gather_facts: true\n  gather_subset: ['!all', min]\n"
        "  roles: [gpurig_preflight, gpurig_cluster]\n"
    )
    run = three.run(
        str(Path(sys.executable).with_name("ansible-playbook")),
        "-i", str(three.work / "ansible.yml"), str(three.work / "play.yml"),
        "-e", f"gpurig_preflight_stack_file={REPO_ROOT / 'stack.yml'}",
        "-e", f"gpurig_preflight_lock_dir={REPO_ROOT / 'lock'}",
    )  # fmt: skip
    assert run.code == 0
    for host in three.names:
        assert re.search(rf"{host}\s+: ok=\d+\s+changed=0\s+unreachable=0\s+failed=0", run.output)
    assert "cluster trio: node 2 of 3" in run.output


def test_a_node_lost_mid_run_is_named_and_nothing_hangs(three: Cluster) -> None:
    lost = three.names[1]
    log = (three.work / "midrun.log").open("w+")
    began = time.monotonic()
    running = subprocess.Popen(
        [sys.executable, "-m", "gpurig.cli", "cluster", "smoke", "-i", str(three.trio), "--quick"],
        cwd=REPO_ROOT,
        env={**three.env(), "PYTHONUNBUFFERED": "1"},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while "launching on" not in (three.work / "midrun.log").read_text():
            assert time.monotonic() < deadline
            assert running.poll() is None
            time.sleep(0.5)
        time.sleep(5)  # the nodes are importing torch, or joining
        three.fleet.stop(lost)
        stopped = time.monotonic()
        code = running.wait(timeout=FAIL_FAST_S + 60)
    finally:
        if running.poll() is None:
            running.kill()
    output = (three.work / "midrun.log").read_text()
    print(output[-4000:])
    assert code == 1
    assert time.monotonic() - stopped < FAIL_FAST_S
    assert re.search(rf"- {lost} \(node 1\): the connection dropped mid-run", output)
    print(f"figure: node lost mid-run, run ended {time.monotonic() - stopped:.1f} s later")
    for host in (three.names[0], three.names[2]):  # nothing of the run is left behind
        left = three.ssh(host, "sudo -n find /proc -maxdepth 1 -user gpurig -name '[0-9]*'")
        assert left.strip() == "", f"processes of the service user still run on {host}: {left}"
    assert time.monotonic() - began < 240


def test_a_stopped_node_fails_the_run_fast_and_is_named(three: Cluster) -> None:
    stopped = three.names[1]
    if three.fleet.fleet.container_states().get(stopped) == "running":
        three.fleet.stop(stopped)
    run = three.gpurig("cluster", "smoke", "-i", str(three.trio), "--quick")
    assert run.code == 1
    assert run.seconds < FAIL_FAST_S
    assert re.search(rf"- {stopped} \(node 1\): unreachable", run.output)
    record = json.loads((three.reports("trio") / "cluster.json").read_text())
    assert {n["name"]: n["status"] for n in record["nodes"]} == {
        three.names[0]: "aborted",
        stopped: "unreachable",
        three.names[2]: "aborted",
    }
    print(f"figure: stopped node named in {run.seconds:.1f} s")
