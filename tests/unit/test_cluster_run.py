"""`gpurig cluster smoke/run` without hosts: the runner against fake members that pass, fail,
hang, drop their connection or cannot be reached. Nothing may wait longer than its bound."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gpurig import cluster
from gpurig.cli import main
from gpurig.cluster import launch as launcher
from gpurig.cluster import report as reporting
from gpurig.cluster import run as runner
from gpurig.cluster import transport
from gpurig.commands import cluster as command
from gpurig.errors import GpurigError

MEMBERS = [cluster.Member(f"node-{i}", f"10.0.0.{i}", {}) for i in range(3)]
TRIO = cluster.find_clusters(MEMBERS, {"cluster_trio": [m.name for m in MEMBERS]})["trio"]


def env_text(name: str, found: cluster.Cluster = TRIO) -> str:
    config = cluster.node_config(found, name, 0, "eth0", "/opt/gpurig/venv", "gpurig")
    return cluster.cluster_env(config)


@dataclass
class FakeRunning:
    pid: int
    ends_after: float | None  # None: runs until killed
    status: int | None  # exit status when it ends; None: the connection drops
    started: float = field(default_factory=time.monotonic)
    killed: int | None = None

    def done(self) -> bool:
        if self.killed is not None:
            return True
        return self.ends_after is not None and time.monotonic() - self.started >= self.ends_after

    def exit_status(self) -> int | None:
        return (128 + self.killed) if self.killed else self.status

    def output(self) -> str:
        lines = [f"{launcher.PID_LINE}{self.pid}"]
        if self.done() and self.status not in (0, None):
            lines.append("bloomkit smoke: error: allreduce: a collective failed")
        return "\n".join(lines) + "\n"


@dataclass
class FakeRemote:
    node: str
    ends_after: float | None = 0.05
    status: int | None = 0
    reachable: bool = True
    env: str | None = None
    ignores_term: bool = False
    files: dict[str, str] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)
    handle: FakeRunning | None = None

    @property
    def name(self) -> str:
        return self.node

    def connect(self) -> None:
        if not self.reachable:
            raise OSError(f"Unable to connect to port 22 on {self.node}")

    def run(self, line: str, timeout: float) -> tuple[int, str]:
        self.commands.append(line)
        if line == f"cat {cluster.CLUSTER_ENV}":
            text = env_text(self.node) if self.env is None else self.env
            return (0, text) if text else (1, "No such file or directory")
        if "KILL_TREE" in line or "os.kill" in line:
            signal = int(shlex.split(line)[-1])
            assert self.handle is not None
            assert shlex.split(line)[-2] == str(self.handle.pid)  # ends only what it started
            if signal == 9 or not self.ignores_term:
                self.handle.killed = signal
            return 0, ""
        if launcher.FILE_MARK in line:
            return 0, "".join(f"{launcher.FILE_MARK}{n}\n{t}\n" for n, t in self.files.items())
        raise AssertionError(f"unexpected command {line!r}")

    def start(self, line: str) -> transport.Running:
        self.commands.append(line)
        self.handle = FakeRunning(1000 + int(self.node[-1]), self.ends_after, self.status)
        return self.handle

    def close(self) -> None:
        pass


def run(remotes: list[FakeRemote], **kwargs: object) -> runner.RunOutcome:
    options: dict[str, object] = {"user": "gpurig", "deadline_s": 5.0, "grace_s": 0.3}
    options.update(kwargs)
    return runner.run_on_cluster(TRIO, remotes, ["smoke", "--distributed"], **options)  # type: ignore[arg-type]


def statuses(outcome: runner.RunOutcome) -> dict[str, str]:
    return {n.name: n.status for n in outcome.nodes}


def test_every_node_passes_and_the_reports_come_back() -> None:
    report = json.dumps({"verdict": "pass", "host": "node-0", "stages": []})
    remotes = [FakeRemote("node-0", files={"0.json": report, "fleet.json": '{"verdict": "pass"}'})]
    remotes += [FakeRemote(f"node-{i}", files={f"{i}.json": report}) for i in (1, 2)]
    outcome = run(remotes, reports="/var/lib/gpurig/cluster/trio")
    assert outcome.ok
    assert statuses(outcome) == dict.fromkeys(["node-0", "node-1", "node-2"], "pass")
    assert json.loads(outcome.nodes[0].files["fleet.json"]) == {"verdict": "pass"}
    assert outcome.nodes[0].pid == 1000
    record = reporting.fleet_record(TRIO, outcome, reporting.rank_reports(outcome))
    assert record["verdict"] == "pass"
    assert record["ranks"] == 3


def test_an_unreachable_node_is_named_and_nothing_starts() -> None:
    remotes = [FakeRemote("node-0"), FakeRemote("node-1", reachable=False), FakeRemote("node-2")]
    began = time.monotonic()
    outcome = run(remotes)
    assert time.monotonic() - began < 2
    assert statuses(outcome) == {"node-0": "aborted", "node-1": "unreachable", "node-2": "aborted"}
    assert [n.name for n in outcome.cause] == ["node-1"]
    assert "Unable to connect to port 22 on node-1" in outcome.cause[0].reason
    assert all(r.handle is None for r in remotes)  # no launch anywhere
    record = reporting.fleet_record(TRIO, outcome, {})
    assert record["verdict"] == "fail"
    assert record["failures"][0].startswith("node-1 (node 1): unreachable")


def test_a_stale_cluster_env_is_named_before_anything_starts() -> None:
    pair = cluster.find_clusters(MEMBERS[:2], {"cluster_pair": ["node-0", "node-1"]})["pair"]
    remotes = [
        FakeRemote("node-0"),
        FakeRemote("node-1", env=env_text("node-1", pair)),
        FakeRemote("node-2", env=""),
    ]
    outcome = run(remotes)
    assert statuses(outcome) == {
        "node-0": "aborted",
        "node-1": "misconfigured",
        "node-2": "misconfigured",
    }
    assert "GPURIG_CLUSTER=pair, NNODES=2" in outcome.nodes[1].reason
    assert "not node 1 of 3 in trio" in outcome.nodes[1].reason
    assert "not deployed as a member" in outcome.nodes[2].reason
    assert all(r.handle is None for r in remotes)


def test_a_failed_node_ends_the_others_by_their_pids_after_a_grace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(launcher, "KILL_WAIT_S", 0.5)  # SIGTERM ignored: SIGKILL after this
    remotes = [
        FakeRemote("node-0", ends_after=None),
        FakeRemote("node-1", ends_after=0.1, status=1),
        FakeRemote("node-2", ends_after=None, ignores_term=True),
    ]
    began = time.monotonic()
    outcome = run(remotes)
    seconds = time.monotonic() - began
    assert seconds < launcher.KILL_WAIT_S + 3
    assert statuses(outcome) == {"node-0": "aborted", "node-1": "fail", "node-2": "aborted"}
    assert [n.name for n in outcome.cause] == ["node-1"]
    assert "exit 1: bloomkit smoke: error: allreduce" in outcome.cause[0].reason
    kills = {r.node: [shlex.split(c)[-1] for c in r.commands if "os.kill" in c] for r in remotes}
    assert kills == {"node-0": ["15"], "node-1": [], "node-2": ["15", "9"]}


def test_a_node_that_drops_its_connection_is_named() -> None:
    remotes = [
        FakeRemote("node-0", ends_after=None),
        FakeRemote("node-1", ends_after=None),
        FakeRemote("node-2", ends_after=0.1, status=None),
    ]
    outcome = run(remotes)
    assert statuses(outcome)["node-2"] == "lost"
    assert outcome.cause[0].name == "node-2"
    assert "connection dropped" in outcome.cause[0].reason


def test_the_deadline_bounds_a_run_that_never_ends() -> None:
    remotes = [FakeRemote(f"node-{i}", ends_after=None) for i in range(3)]
    began = time.monotonic()
    outcome = run(remotes, deadline_s=0.5)
    assert time.monotonic() - began < 3
    assert set(statuses(outcome).values()) == {"timeout"}
    assert outcome.nodes[0].reason == "still running after 0 s (--timeout)"
    assert all(r.handle is not None and r.handle.killed == 15 for r in remotes)


def test_the_launch_command_runs_as_the_service_user_and_is_bounded() -> None:
    line = launcher.launch_command(
        ["smoke", "--distributed", "--json", "/var/lib/gpurig/cluster/trio/{rank}.json"],
        "gpurig",
        "/var/lib/gpurig/cluster/trio",
        300,
        "sudo -n ",
    )
    assert line.startswith("sudo -n sh -c ")
    assert line.endswith(" 2>&1")
    inner = shlex.split(line)[4]
    assert "rm -rf /var/lib/gpurig/cluster/trio && install -d -o gpurig -m 755" in inner
    assert f"echo {launcher.PID_LINE}$$" in inner
    assert "exec timeout -k 10 300 runuser -l gpurig -c " in inner
    launch = shlex.split(inner.split("-c ", 1)[1])[0]
    assert shlex.split(launch) == [
        "gpurig-launch", "smoke", "--distributed", "--json",
        "/var/lib/gpurig/cluster/trio/{rank}.json",
    ]  # fmt: skip
    assert launcher._sudo("root") == ""


def test_the_service_user_is_quoted_wherever_it_reaches_a_command_line() -> None:
    user = "svc user;touch /tmp/owned"  # `gpurig cluster --user` reaches the shell as one word
    line = launcher.launch_command(["smoke"], user, "/var/lib/gpurig/cluster/trio", 300, "")
    words = shlex.split(shlex.split(line)[2])
    assert words[words.index("-o") + 1] == user  # install -d -o USER
    assert words[words.index("-l") + 1] == user  # runuser -l USER


def test_bloomkits_fleet_verdict_counts() -> None:
    fleet = {"verdict": "fail", "failures": ["rank 2 on node-2 (node 2): busbw: too slow"]}
    remotes = [FakeRemote("node-0", files={"fleet.json": json.dumps(fleet)})]
    remotes += [FakeRemote("node-1"), FakeRemote("node-2")]
    outcome = run(remotes, reports="/r")
    record = reporting.fleet_record(TRIO, outcome, reporting.rank_reports(outcome))
    assert record["verdict"] == "fail"
    assert record["failures"] == fleet["failures"]


def test_split_files() -> None:
    text = f"{launcher.FILE_MARK}0.json\n{{}}\n{launcher.FILE_MARK}fleet.json\n[1]\n"
    assert launcher.split_files(text) == {"0.json": "{}\n", "fleet.json": "[1]\n"}


def test_the_command_lists_clusters_and_says_how_to_mark_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "fleet.py").write_text(
        "gpus = [('a', {'ssh_hostname': '10.1.0.1'}), ('b', {'ssh_hostname': '10.1.0.2'})]\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(cluster.ENV_CLUSTER, raising=False)
    assert main(["cluster", "list", "-i", "fleet.py"]) == 2
    assert "no cluster in the inventory" in capsys.readouterr().err
    monkeypatch.setenv(cluster.ENV_CLUSTER, "both")
    assert main(["cluster", "list", "-i", "fleet.py"]) == 0
    out = capsys.readouterr().out
    assert "cluster both (GPURIG_CLUSTER): 2 node(s), rendezvous 10.1.0.1:29400" in out
    assert "node 1: b (10.1.0.2)" in out
    assert main(["cluster", "run", "-i", "fleet.py"]) == 2
    assert "what to run" in capsys.readouterr().err
    assert main(["cluster", "smoke", "-i", "missing.py"]) == 2


def test_ssh_refuses_unknown_host_keys(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    remote = transport.SshRemote(
        cluster.Member("x", "127.0.0.1", {"ssh_port": 9, "ssh_known_hosts_file": str(known)}),
        connect_timeout=2,
    )
    with pytest.raises((OSError, GpurigError)):
        remote.connect()
    missing = transport.SshRemote(
        cluster.Member("y", "127.0.0.1", {"ssh_known_hosts_file": str(tmp_path / "none")})
    )
    with pytest.raises(GpurigError, match="cannot read known_hosts"):
        missing.connect()


def test_the_launch_runs_as_the_specs_service_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPURIG_STACK", str(Path(__file__).resolve().parents[2] / "stack.yml"))
    assert command.service_user() == "gpurig"
    monkeypatch.setenv("GPURIG_STACK", "/nonexistent/stack.yml")
    with pytest.raises(GpurigError, match="or pass --user"):
        command.service_user()


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("runuser") is None, reason="needs root")
def test_report_collection_reads_as_the_service_user_and_skips_links() -> None:
    """The exact command run() sends (collect_command), run here as root with `nobody` as
    the service user: a link planted at a report path towards a root-only file is not read."""
    with tempfile.TemporaryDirectory() as folder:  # in /tmp: pytest's own is root's alone
        tmp_path = Path(folder)
        tmp_path.chmod(0o755)  # nobody may enter, as the service user may its own folder
        _collect_as_nobody(tmp_path)


def _collect_as_nobody(tmp_path: Path) -> None:
    secret = tmp_path / "root-only"
    secret.write_text('{"shadow": "root:$y$secret"}\n')
    secret.chmod(0o600)
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "0.json").write_text('{"rank": 0}\n')
    (reports / "1.json").symlink_to(secret)
    (reports / "2.json").symlink_to("/etc/shadow")
    command = launcher.collect_command(str(reports), "nobody", sudo="")
    assert command.startswith("runuser -u nobody -- sh -c ")
    done = subprocess.run(
        ["sh", "-c", command], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert launcher.split_files(done.stdout) == {"0.json": '{"rank": 0}\n\n'}
    assert "secret" not in done.stdout + done.stderr
    # Even a link the check misses (swapped in afterwards) is read with nobody's rights only.
    reader = launcher.collect_command(str(reports), "nobody", sudo="").replace(
        '[ -f "$f" ] && [ ! -L "$f" ] || continue; ', ""
    )
    done = subprocess.run(["sh", "-c", reader], capture_output=True, text=True, timeout=30)
    assert "secret" not in done.stdout
    assert "Permission denied" in done.stderr
