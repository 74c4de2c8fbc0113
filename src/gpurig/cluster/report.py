"""The fleet verdict of a run: cluster.json (the nodes, bloomkit's fleet verdict from node 0 and
the controller's), the reports saved to reports/cluster/<group>/, and the printed table."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from gpurig import atomic
from gpurig.cluster.model import Cluster
from gpurig.cluster.run import RunOutcome


def fleet_record(
    node_cluster: Cluster,
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
    """reports/cluster/<group>/: <rank>.json, fleet.json, <node>.log, cluster.json, written
    beside the previous run's folder and swapped in whole."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        for node in outcome.nodes:
            (staging / f"{node.name}.log").write_text(node.output)
            for name, text in node.files.items():
                (staging / Path(name).name).write_text(text)
        (staging / "cluster.json").write_text(json.dumps(record, indent=2) + "\n")
        staging.chmod(0o755)
        atomic.replace_dir(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


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
