"""One run across a cluster: reach every member, check its cluster.env against the inventory,
launch everywhere at once, and once a node fails or drops its connection give the others a
short grace, then end their launch by its process id. A deadline bounds the whole run."""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import paramiko

from gpurig.cluster import launch
from gpurig.cluster.files import parse_env
from gpurig.cluster.launch import (
    KILL_TREE,
    _pid,
    _sudo,
    collect_command,
    launch_command,
    split_files,
)
from gpurig.cluster.model import Cluster
from gpurig.cluster.transport import CONNECT_TIMEOUT_S, Remote, Running
from gpurig.errors import GpurigError
from gpurig.hostlayout import CLUSTER_ENV

GRACE_S = 10.0  # after a node failed: time for the others to fail (or pass) on their own


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


def check_env(node: Cluster, name: str, text: str) -> str | None:
    """Why this member's cluster.env is not what the inventory says; None when it is."""
    found = parse_env(text)
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
    node_cluster: Cluster,
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
            code, text = remote.run(f"cat {CLUSTER_ENV}", timeout=CONNECT_TIMEOUT_S)
        except (OSError, paramiko.SSHException, GpurigError) as error:
            return f"cannot read {CLUSTER_ENV}: {error}"
        if code != 0:
            return f"no {CLUSTER_ENV}: not deployed as a member (run the deploy)"
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
                stop = time.monotonic() + launch.KILL_WAIT_S
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
            command = collect_command(reports, user, _sudo(users.get(remote.name)))
            try:
                code, text = remote.run(command, timeout=CONNECT_TIMEOUT_S * 3)
            except (OSError, paramiko.SSHException, GpurigError):
                return {}
            return split_files(text) if code == 0 else {}

        for remote, found in zip(remotes, _parallel(fetch, remotes), strict=True):
            by_name[remote.name].files = found
    for remote in remotes:
        remote.close()
    return outcome("launch")
