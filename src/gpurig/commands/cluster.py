"""`gpurig cluster`: the training clusters of an inventory, and runs across all their nodes.

    gpurig cluster list  [-i INVENTORY] [--group NAME]
    gpurig cluster smoke [-i INVENTORY] [--group NAME] [--quick] [--timeout S] [-- OPTIONS]
    gpurig cluster run   [-i INVENTORY] [--group NAME] [--timeout S] -- finetune --data ...

`smoke` and `run` start /usr/local/bin/gpurig-launch on every member at once, over SSH
(paramiko; host keys strictly from known_hosts, as the deploy checks them), as the service user.
Nothing waits on a lost node: members are reached first (an unreachable one is named and
nothing starts), each one's cluster.env is checked against the inventory, and once a node fails
or drops its connection the others get a short grace, then their launch is ended by its process
id. A deadline bounds the whole run. `smoke` then fetches every rank's report to
reports/cluster/<group>/ and prints the fleet verdict (reports/cluster/<group>/cluster.json).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import paramiko
from rich.console import Console
from rich.table import Table

from gpurig import cluster
from gpurig.deploys import ENV_REPORTS, reports_dir
from gpurig.errors import GpurigError, UsageError

INVENTORY = "inventory.py"
CONNECT_TIMEOUT_S = 10.0
GRACE_S = 10.0  # after a node failed: time for the others to fail (or pass) on their own
KILL_WAIT_S = 10.0  # after SIGTERM, before SIGKILL
DEFAULT_TIMEOUT_S = 900
PID_LINE = "gpurig-launch-pid="
FILE_MARK = "@@gpurig-file "

console = Console(highlight=False, soft_wrap=True)

# Ends exactly the processes a launch started: the tree under its pid (torchrun puts each
# worker in a session of its own, so a process-group signal would miss them).
KILL_TREE = r"""
import os, sys
root, sig = int(sys.argv[1]), int(sys.argv[2])
children = {}
for entry in os.listdir("/proc"):
    if entry.isdigit():
        try:
            with open(f"/proc/{entry}/stat") as stat:
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
todo, tree = [root], []
while todo:
    pid = todo.pop()
    tree.append(pid)
    todo += children.get(pid, [])
for pid in tree:
    try:
        os.kill(pid, sig)
    except OSError:
        pass
"""


# --- reaching the members --------------------------------------------------------------------


class Running(Protocol):
    """A command started on a node."""

    def done(self) -> bool: ...

    def exit_status(self) -> int | None:  # None: the connection dropped before it ended
        ...

    def output(self) -> str: ...


class Remote(Protocol):
    """One member, as the runner uses it (paramiko below; fakes in the unit tests)."""

    @property
    def name(self) -> str: ...

    def connect(self) -> None: ...

    def run(self, command: str, timeout: float) -> tuple[int, str]: ...

    def start(self, command: str) -> Running: ...

    def close(self) -> None: ...


class _Channel:
    def __init__(self, channel: paramiko.Channel) -> None:
        self._channel = channel
        self._chunks: list[bytes] = []
        self._status: int | None = None
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            while chunk := self._channel.recv(65536):
                self._chunks.append(chunk)
            status = self._channel.recv_exit_status()
            self._status = None if status == -1 else status  # -1: no status, connection lost
        except (OSError, EOFError, paramiko.SSHException):
            self._status = None

    def done(self) -> bool:
        return not self._thread.is_alive()

    def exit_status(self) -> int | None:
        return self._status

    def output(self) -> str:
        return b"".join(self._chunks).decode(errors="replace")


@dataclass
class SshRemote:
    """A member over SSH: its inventory data's address, port, user and key; host keys only
    from known_hosts (ssh_known_hosts_file, else ~/.ssh/known_hosts), never added."""

    member: cluster.Member
    connect_timeout: float = CONNECT_TIMEOUT_S
    _client: paramiko.SSHClient | None = None

    @property
    def name(self) -> str:
        return self.member.name

    @property
    def where(self) -> str:
        data = self.member.data
        return f"{data.get('ssh_user') or getpass.getuser()}@{self.member.address}:" + str(
            data.get("ssh_port") or 22
        )

    def connect(self) -> None:
        data = self.member.data
        client = paramiko.SSHClient()
        known = Path(str(data.get("ssh_known_hosts_file") or "~/.ssh/known_hosts")).expanduser()
        try:
            client.get_host_keys().load(str(known))
        except OSError as error:
            raise GpurigError(f"cannot read known_hosts {known}: {error}") from None
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        key = data.get("ssh_key")
        client.connect(
            hostname=self.member.address,
            port=int(data.get("ssh_port") or 22),
            username=str(data.get("ssh_user") or getpass.getuser()),
            key_filename=str(Path(str(key)).expanduser()) if key else None,
            allow_agent=bool(data.get("ssh_allow_agent", True)),
            look_for_keys=bool(data.get("ssh_look_for_keys", True)),
            timeout=self.connect_timeout,
            banner_timeout=self.connect_timeout,
            auth_timeout=self.connect_timeout,
        )
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(5)
        self._client = client

    def _session(self) -> paramiko.Channel:
        transport = self._client.get_transport() if self._client else None
        if transport is None or not transport.is_active():
            raise GpurigError(f"{self.name}: not connected")
        channel = transport.open_session(timeout=self.connect_timeout)
        channel.set_combine_stderr(True)
        return channel

    def run(self, command: str, timeout: float) -> tuple[int, str]:
        channel = self._session()
        channel.settimeout(timeout)
        channel.exec_command(command)
        output = channel.makefile("rb").read().decode(errors="replace")
        return channel.recv_exit_status(), output

    def start(self, command: str) -> Running:
        channel = self._session()
        channel.exec_command(command)
        return _Channel(channel)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


# --- one run across the cluster ---------------------------------------------------------------


@dataclass
class NodeResult:
    name: str
    node_rank: int
    status: str = "pending"  # pass, fail, lost, aborted, timeout, unreachable, misconfigured
    reason: str = ""
    exit_code: int | None = None
    seconds: float | None = None
    output: str = ""
    pid: int | None = None
    files: dict[str, str] = field(default_factory=dict)  # report name -> text

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "node_rank": self.node_rank,
            "status": self.status,
            "reason": self.reason,
            "exit_code": self.exit_code,
            "seconds": self.seconds,
        }


def _sudo(user: str | None) -> str:
    """Root needs no sudo; every other SSH user has password-less sudo (preflight checks it)."""
    return "" if (user or getpass.getuser()) == "root" else "sudo -n "


def launch_command(
    bloomkit_args: Sequence[str], user: str, reports: str | None, deadline_s: int, sudo: str
) -> str:
    """As root: a fresh reports folder for the service user, then the launcher as that user
    (a login shell: its PATH and limits), bounded by timeout(1); the pid first, to end it."""
    launch = shlex.join(["gpurig-launch", *bloomkit_args])
    steps = []
    if reports:
        folder = shlex.quote(reports)
        steps.append(f"rm -rf {folder} && install -d -o {user} -m 755 {folder}")
    steps.append(f"echo {PID_LINE}$$")
    steps.append(
        f"exec timeout -k {int(KILL_WAIT_S)} {int(deadline_s)} runuser -l {shlex.quote(user)} "
        f"-c {shlex.quote(launch)}"
    )
    return f"{sudo}sh -c {shlex.quote(' && '.join(steps))} 2>&1"


def _pid(output: str) -> int | None:
    for line in output.splitlines()[:5]:
        if line.startswith(PID_LINE) and line[len(PID_LINE) :].strip().isdigit():
            return int(line[len(PID_LINE) :])
    return None


def _last_line(output: str) -> str:
    """The line that says why: bloomkit's error, torchrun's, or the last one."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    for marker in ("bloomkit smoke: error", "error:", "Error:", "Timed out", "timed out"):
        found = [ln for ln in lines if marker in ln]
        if found:
            return found[-1][:300]
    return lines[-1][:300] if lines else "no output"


@dataclass
class RunOutcome:
    cluster: str
    nodes: list[NodeResult]
    started: float
    seconds: float
    stage: str  # how far it got: reach, check, launch

    @property
    def ok(self) -> bool:
        return all(n.status == "pass" for n in self.nodes)

    @property
    def cause(self) -> list[NodeResult]:
        """The nodes that failed first or on their own (not the ones ended after them)."""
        own = [n for n in self.nodes if n.status not in ("pass", "aborted", "pending")]
        return own or [n for n in self.nodes if n.status != "pass"]


def _parallel(work: Callable[[Remote], Any], remotes: Sequence[Remote]) -> list[Any]:
    with ThreadPoolExecutor(max_workers=max(1, min(32, len(remotes)))) as pool:
        return list(pool.map(work, remotes))


def check_env(node: cluster.Cluster, name: str, text: str) -> str | None:
    """Why this member's cluster.env is not what the inventory says; None when it is."""
    found = cluster.parse_env(text)
    want = {
        "GPURIG_CLUSTER": node.name,
        "NNODES": str(len(node.members)),
        "NODE_RANK": str(node.node_rank(name)),
        "RDZV_ENDPOINT": node.endpoint,
    }
    wrong = {k: found.get(k) for k, v in want.items() if found.get(k) != v}
    if not wrong:
        return None
    said = ", ".join(f"{k}={v}" for k, v in wrong.items())
    return (
        f"its cluster.env ({said}) is not node {want['NODE_RANK']} of {want['NNODES']} in "
        f"{node.name} at {node.endpoint}: run the deploy (pyinfra INVENTORY deploy/cluster.py)"
    )


def run_on_cluster(
    node_cluster: cluster.Cluster,
    remotes: Sequence[Remote],
    bloomkit_args: Sequence[str],
    *,
    user: str,
    deadline_s: float,
    reports: str | None = None,
    ssh_users: Mapping[str, str | None] | None = None,
    grace_s: float = GRACE_S,
    say: Callable[[str], None] = lambda line: None,
) -> RunOutcome:
    """Reach every member, check its cluster.env, launch everywhere, end the rest on the first
    failure; fetch `reports` (a folder on the members) when given."""
    began = time.monotonic()
    started = time.time()
    users = ssh_users or {}
    results = [NodeResult(r.name, node_cluster.node_rank(r.name)) for r in remotes]
    by_name = {r.name: r for r in results}

    def outcome(stage: str) -> RunOutcome:
        return RunOutcome(node_cluster.name, results, started, time.monotonic() - began, stage)

    def reach(remote: Remote) -> str | None:
        try:
            remote.connect()
        except (OSError, EOFError, paramiko.SSHException, GpurigError) as error:
            return str(error) or type(error).__name__
        return None

    errors = _parallel(reach, remotes)
    for remote, error in zip(remotes, errors, strict=True):
        if error is not None:
            by_name[remote.name].status = "unreachable"
            by_name[remote.name].reason = f"unreachable: {error}"
    if any(e is not None for e in errors):
        for result in results:
            if result.status == "pending":
                result.status, result.reason = "aborted", "not started: a member is unreachable"
        for remote in remotes:
            remote.close()
        return outcome("reach")

    def read_env(remote: Remote) -> str | None:
        try:
            code, text = remote.run(f"cat {cluster.CLUSTER_ENV}", timeout=CONNECT_TIMEOUT_S)
        except (OSError, paramiko.SSHException, GpurigError) as error:
            return f"cannot read {cluster.CLUSTER_ENV}: {error}"
        if code != 0:
            return f"no {cluster.CLUSTER_ENV}: not deployed as a member (run the deploy)"
        return check_env(node_cluster, remote.name, text)

    problems = _parallel(read_env, remotes)
    if any(problems):
        for result, problem in zip(results, problems, strict=True):
            result.status, result.reason = (
                ("misconfigured", problem) if problem else ("aborted", "not started")
            )
        for remote in remotes:
            remote.close()
        return outcome("check")

    say(
        f"cluster {node_cluster.name}: launching on {len(remotes)} node(s), rendezvous "
        f"{node_cluster.endpoint}"
    )
    running: dict[str, Running] = {}
    launch_began = time.monotonic()
    first_failure_at: float | None = None
    for remote in remotes:
        command = launch_command(
            bloomkit_args, user, reports, int(deadline_s) + 5, _sudo(users.get(remote.name))
        )
        try:
            running[remote.name] = remote.start(command)
        except (OSError, paramiko.SSHException, GpurigError) as error:
            by_name[remote.name].status = "lost"
            by_name[remote.name].reason = f"could not start: {error}"
            first_failure_at = time.monotonic()
    deadline = launch_began + deadline_s
    while True:
        now = time.monotonic()
        for name, handle in running.items():
            result = by_name[name]
            if result.status != "pending" or not handle.done():
                continue
            result.seconds = round(now - launch_began, 1)
            result.output = handle.output()
            result.pid = _pid(result.output)
            result.exit_code = handle.exit_status()
            if result.exit_code == 0:
                result.status = "pass"
                say(f"  {name} (node {result.node_rank}): exit 0 in {result.seconds:.0f} s")
                continue
            if result.exit_code is None:
                result.status = "lost"
                result.reason = "the connection dropped mid-run (host down or unreachable?)"
            else:
                result.status = "fail"
                result.reason = f"exit {result.exit_code}: {_last_line(result.output)}"
            say(f"  {name} (node {result.node_rank}): {result.reason}")
            if first_failure_at is None:
                first_failure_at = now
        pending = [n for n in running if by_name[n].status == "pending"]
        if not pending:
            break
        if now > deadline:
            for name in pending:
                by_name[name].status = "timeout"
                by_name[name].reason = f"still running after {deadline_s:.0f} s (--timeout)"
            break
        if first_failure_at is not None and now > first_failure_at + grace_s:
            for name in pending:
                by_name[name].status = "aborted"
                by_name[name].reason = "ended after another node failed"
            break
        time.sleep(0.2)

    # End what is still running, by the pid each launch printed (a lost node cannot be reached).
    to_end = [
        r
        for r in remotes
        if r.name in running
        and by_name[r.name].status in ("timeout", "aborted")
        and not running[r.name].done()
    ]

    def end(remote: Remote) -> None:
        handle = running[remote.name]
        result = by_name[remote.name]
        pid = _pid(handle.output())
        sudo = _sudo(users.get(remote.name))
        if pid is not None:
            kill = f"{sudo}python3 -c {shlex.quote(KILL_TREE)} {pid}"
            try:
                remote.run(f"{kill} 15", timeout=CONNECT_TIMEOUT_S)
                stop = time.monotonic() + KILL_WAIT_S
                while not handle.done() and time.monotonic() < stop:
                    time.sleep(0.2)
                if not handle.done():
                    remote.run(f"{kill} 9", timeout=CONNECT_TIMEOUT_S)
            except (OSError, paramiko.SSHException, GpurigError):
                pass
        result.output = handle.output()
        result.pid = pid

    _parallel(end, to_end)

    if reports:

        def fetch(remote: Remote) -> dict[str, str]:
            if by_name[remote.name].status in ("lost", "unreachable"):
                return {}
            script = (
                f"cd {shlex.quote(reports)} 2>/dev/null || exit 0; for f in *.json; do "
                f'[ -f "$f" ] || continue; echo "{FILE_MARK}$f"; cat "$f"; echo; done'
            )
            sudo = _sudo(users.get(remote.name))
            try:
                code, text = remote.run(
                    f"{sudo}sh -c {shlex.quote(script)}", timeout=CONNECT_TIMEOUT_S * 3
                )
            except (OSError, paramiko.SSHException, GpurigError):
                return {}
            return split_files(text) if code == 0 else {}

        for remote, found in zip(remotes, _parallel(fetch, remotes), strict=True):
            by_name[remote.name].files = found
    for remote in remotes:
        remote.close()
    return outcome("launch")


def split_files(text: str) -> dict[str, str]:
    files: dict[str, str] = {}
    current: str | None = None
    for line in text.splitlines(keepends=True):
        if line.startswith(FILE_MARK):
            current = line[len(FILE_MARK) :].strip()
            files[current] = ""
        elif current is not None:
            files[current] += line
    return files


# --- the fleet verdict -------------------------------------------------------------------------


def fleet_record(
    node_cluster: cluster.Cluster,
    outcome: RunOutcome,
    reports_by_rank: dict[int, Any],
    expect_fleet: bool = True,
) -> dict[str, Any]:
    """cluster.json: the nodes, bloomkit's fleet verdict (from node 0, when `expect_fleet`:
    a smoke run) and the controller's."""
    bloomkit_fleet = next(
        (
            json.loads(n.files["fleet.json"])
            for n in outcome.nodes
            if "fleet.json" in n.files and _is_json(n.files["fleet.json"])
        ),
        None,
    )
    failures = [f"{n.name} (node {n.node_rank}): {n.reason}" for n in outcome.cause]
    if bloomkit_fleet is not None and bloomkit_fleet.get("verdict") != "pass":
        failures += [str(f) for f in bloomkit_fleet.get("failures", [])]
    if expect_fleet and outcome.stage == "launch" and bloomkit_fleet is None and outcome.ok:
        failures.append("node 0 wrote no fleet report")
    busbw = None
    for report_data in reports_by_rank.values():
        for stage in report_data.get("stages", []):
            if stage.get("name") == "busbw":
                busbw = stage.get("figures", {}).get("busbw_gbs", busbw)
    return {
        "cluster": node_cluster.name,
        "verdict": "pass" if outcome.ok and not failures else "fail",
        "rendezvous": node_cluster.endpoint,
        "started": outcome.started,
        "seconds": round(outcome.seconds, 1),
        "reached": outcome.stage != "reach",
        "nodes": [n.as_dict() for n in outcome.nodes],
        "ranks": len(reports_by_rank),
        "busbw_gbs": busbw,
        "bloomkit_fleet": bloomkit_fleet,
        "failures": failures,
    }


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def save(directory: Path, outcome: RunOutcome, record: dict[str, Any]) -> None:
    """reports/cluster/<group>/: <rank>.json, fleet.json, <node>.log, cluster.json."""
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("*"):
        if old.is_file():
            old.unlink()
    for node in outcome.nodes:
        (directory / f"{node.name}.log").write_text(node.output)
        for name, text in node.files.items():
            (directory / Path(name).name).write_text(text)
    (directory / "cluster.json").write_text(json.dumps(record, indent=2) + "\n")


def rank_reports(outcome: RunOutcome) -> dict[int, Any]:
    found: dict[int, Any] = {}
    for node in outcome.nodes:
        for name, text in node.files.items():
            stem = Path(name).stem
            if stem.isdigit() and _is_json(text):
                found[int(stem)] = json.loads(text)
    return found


def print_outcome(record: dict[str, Any], reports_by_rank: dict[int, Any], out: Console) -> None:
    table = Table("node", "host", "status", "seconds", "ranks", box=None)
    ranks_on: dict[str, list[str]] = {}
    for rank, data in sorted(reports_by_rank.items()):
        ranks_on.setdefault(str(data.get("host")), []).append(
            f"{rank}:{str(data.get('verdict', '?')).upper()}"
        )
    for node in record["nodes"]:
        style = "green" if node["status"] == "pass" else "red"
        table.add_row(
            str(node["node_rank"]),
            node["name"],
            f"[{style}]{node['status'].upper()}[/]",
            "-" if node["seconds"] is None else f"{node['seconds']:.0f}",
            " ".join(ranks_on.get(node["name"], [])) or "-",
        )
    out.print(table)
    verdict = record["verdict"].upper()
    busbw = f", all-reduce bus bandwidth {record['busbw_gbs']} GB/s" if record["busbw_gbs"] else ""
    out.print(
        f"cluster {record['cluster']}: {verdict} in {record['seconds']:.0f} s, "
        f"{len(record['nodes'])} node(s), {record['ranks']} rank report(s){busbw}"
    )
    for failure in record["failures"]:
        out.print(f"  - {failure}")


# --- the command -------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="the inventory's clusters, nodes and rendezvous")
    smoke = actions.add_parser("smoke", help="bloomkit smoke --distributed on every member")
    run = actions.add_parser("run", help="any bloomkit command on every member (after --)")
    for sub in (listing, smoke, run):
        # An option, as for `gpurig deploy`: every positional goes to bloomkit.
        sub.add_argument(
            "-i", "--inventory", default=INVENTORY, help=f"pyinfra inventory ({INVENTORY})"
        )
        sub.add_argument("--group", help="the cluster (NAME or cluster_NAME) when there are many")
    for sub in (smoke, run):
        sub.add_argument(
            "--timeout",
            type=int,
            default=DEFAULT_TIMEOUT_S,
            help=f"seconds for the whole run (default {DEFAULT_TIMEOUT_S})",
        )
        sub.add_argument(
            "--user", help="service user the launch runs as (default: stack.yml host.user)"
        )
    smoke.add_argument("--quick", action="store_true", help="bloomkit smoke --quick")
    smoke.add_argument(
        "--reports", type=Path, help=f"report folder (default: ${ENV_REPORTS} or reports)"
    )
    smoke.add_argument("bloomkit_args", nargs="*", help="after --: more bloomkit smoke options")
    run.add_argument("bloomkit_args", nargs="*", help="-- COMMAND ARGS: the bloomkit command")


# pyinfra's CLI package gevent-patches the process that imports it: the inventory is loaded in a
# child process, so this command's SSH threads and deadlines stay real threads and clocks.
LOAD_INVENTORY = """
import json, os, sys
from pyinfra.api import State
from pyinfra.context import ctx_state
from pyinfra_cli.inventory import make_inventory
from gpurig import cluster
with ctx_state.use(State(check_for_changes=False)):  # inventory files may read the state
    loaded = make_inventory(sys.argv[1], cwd=os.getcwd())
members, groups = cluster.from_pyinfra(loaded)
print("@@gpurig-inventory " + json.dumps(
    {"members": [[m.name, m.address, m.data] for m in members], "groups": groups}, default=str
))
"""


def load_members(inventory: str) -> tuple[list[cluster.Member], dict[str, list[str]]]:
    """The hosts and groups of a pyinfra inventory file, as `pyinfra INVENTORY ...` loads it
    (group_data folders and --data-free host data included)."""
    if not Path(inventory).exists():
        raise UsageError(f"no inventory file {inventory}")
    done = subprocess.run(
        [sys.executable, "-c", LOAD_INVENTORY, inventory],
        capture_output=True,
        text=True,
        timeout=120,
    )
    marker = "@@gpurig-inventory "
    found = [ln for ln in done.stdout.splitlines() if ln.startswith(marker)]
    if done.returncode != 0 or not found:
        lines = [ln for ln in (done.stderr or done.stdout).strip().splitlines() if ln.strip()]
        raise UsageError(f"cannot load inventory {inventory}: {lines[-1] if lines else '?'}")
    loaded = json.loads(found[-1][len(marker) :])
    members = [cluster.Member(name, address, data) for name, address, data in loaded["members"]]
    return members, {str(k): list(v) for k, v in loaded["groups"].items()}


def load_clusters(inventory: str) -> dict[str, cluster.Cluster]:
    members, groups = load_members(inventory)
    return cluster.find_clusters(members, groups, os.environ.get(cluster.ENV_CLUSTER))


def service_user() -> str:
    """stack.yml's host.user (GPURIG_STACK, else ./stack.yml): who runs training on the hosts."""
    from gpurig import spec
    from gpurig.deploys import stack_path

    try:
        return spec.load(stack_path()).host.user
    except GpurigError as error:
        raise UsageError(f"the service user: {error} (or pass --user)") from None


def run(args: argparse.Namespace) -> int:
    clusters = load_clusters(args.inventory)
    if args.action == "list":
        return _list(clusters, args.group)
    chosen = cluster.choose(clusters, args.group)
    extra = list(args.bloomkit_args or [])
    remotes = [SshRemote(m) for m in chosen.members]
    users = {m.name: m.data.get("ssh_user") for m in chosen.members}
    if args.action == "run" and not extra:
        raise UsageError("what to run: gpurig cluster run -- finetune --data FILE ...")
    args.user = args.user or service_user()
    if args.action == "run":
        outcome = run_on_cluster(
            chosen, remotes, extra, user=args.user, deadline_s=args.timeout,
            ssh_users=users, say=console.print,
        )  # fmt: skip
        record = fleet_record(chosen, outcome, {}, expect_fleet=False)
        print_outcome(record, {}, console)
        return 0 if outcome.ok else 1
    folder = f"{cluster.REPORTS_DIR}/{chosen.name}"
    smoke_args = [
        "smoke", "--distributed", "--json", f"{folder}/{{rank}}.json",
        "--dist-timeout", str(chosen.dist_timeout_s),
        *(["--quick"] if args.quick else []), *extra,
    ]  # fmt: skip
    outcome = run_on_cluster(
        chosen, remotes, smoke_args, user=args.user, deadline_s=args.timeout,
        reports=folder, ssh_users=users, say=console.print,
    )  # fmt: skip
    by_rank = rank_reports(outcome)
    record = fleet_record(chosen, outcome, by_rank)
    directory = (args.reports or reports_dir()) / "cluster" / chosen.name
    save(directory, outcome, record)
    print_outcome(record, by_rank, console)
    console.print(f"reports: {directory}")
    return 0 if record["verdict"] == "pass" else 1


def _list(clusters: Mapping[str, cluster.Cluster], group: str | None) -> int:
    shown = [cluster.choose(clusters, group)] if group else list(clusters.values())
    if not shown:
        cluster.choose(clusters, None)  # raises: how to mark one
    for found in shown:
        console.print(
            f"cluster {found.name} ({found.source}): {len(found.members)} node(s), rendezvous "
            f"{found.endpoint}, join {found.rdzv_timeout_s} s, collectives {found.dist_timeout_s} s"
        )
        for rank, member in enumerate(found.members):
            console.print(f"  node {rank}: {member.name} ({member.address})")
    return 0
