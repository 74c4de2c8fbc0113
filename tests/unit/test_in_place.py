"""Preflight's one probe of what a host already has (gpurig.facts.in_place): its script runs
here with /bin/sh against real files, and the stages skip exactly the steps it shows in place,
reading no fact of their own for them."""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pyinfra.api import Config, Inventory, State
from pyinfra.api.deploy import add_deploy
from pyinfra.context import ctx_host

from gpurig import spec
from gpurig.deploys import IN_PLACE_KEY, PLAN_KEY, stages
from gpurig.facts.in_place import HostInPlace, InPlace, probe_script
from gpurig.facts.system import Venvs
from gpurig.model.host import HostFacts
from gpurig.operations import background
from gpurig.operations import venv as venv_op
from gpurig.plan import HostPlan, converged
from gpurig.plan.steps import File, JobWait, Stage, Venv
from gpurig.preflight import Verdict

REPO_ROOT = Path(__file__).resolve().parents[2]
ME = pwd.getpwuid(os.getuid())
GROUP = ME.pw_name if ME.pw_name == "root" else str(os.getgid())
MARKER = '{"venv_id":"a"}'


def run(script: str) -> list[str]:
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def venv_step(root: Path) -> Venv:
    return Venv(
        "llm_env.venv",
        "Install the locked venv (cpu-cp311)",
        link=str(root / "venv"),
        venvs_dir=str(root / "venvs"),
        venv_dir=str(root / "venvs" / "a"),
        marker_file="gpurig-venv.json",
        marker=MARKER,
        script="echo build",
    )


def steps(root: Path) -> list[Any]:
    placed = File.text(
        "s.env", "Write the environment", str(root / "env"), "a=1\n", owner=ME.pw_name, group=GROUP
    )
    other = File.text(
        "s.profile", "Write the profile", str(root / "profile"), "b=2\n", owner=ME.pw_name
    )
    return [placed, other, venv_step(root)]


def test_one_script_reads_steps_venvs_and_paths(tmp_path: Path) -> None:
    (tmp_path / "env").write_text("a=1\n")
    (tmp_path / "env").chmod(0o644)
    (tmp_path / "profile").write_text("something else\n")
    (tmp_path / "venvs" / "a").mkdir(parents=True)
    (tmp_path / "venvs" / "a" / "gpurig-venv.json").write_text(MARKER + "\n")
    (tmp_path / "venv").symlink_to(tmp_path / "venvs" / "a")
    (tmp_path / "stale.env").write_text("x")
    planned = steps(tmp_path)
    paths = [str(tmp_path / "stale.env"), str(tmp_path / "never.env")]
    script = probe_script(converged.probe_command(planned, []), planned[2], paths)

    probed = InPlace().process(run(script))

    found = converged.converged(planned, [], probed.steps)
    assert found == ["s.env", converged.FOLDERS]  # not the other bytes; no folder to make
    assert probed.venvs is not None
    assert probed.venvs.live == str(tmp_path / "venvs" / "a")
    assert probed.venvs.markers == {str(tmp_path / "venvs" / "a"): MARKER}
    assert probed.present == {str(tmp_path / "stale.env")}
    known = HostInPlace(asked=frozenset(paths), present=probed.present)
    assert known.absent(str(tmp_path / "never.env"))
    assert not known.absent(str(tmp_path / "stale.env"))
    assert not HostInPlace().absent(str(tmp_path / "never.env"))  # not asked: not known


def test_without_a_venv_step_the_venvs_are_not_read(tmp_path: Path) -> None:
    probed = InPlace().process(run(probe_script(converged.probe_command([], []), None, [])))
    assert probed.venvs is None
    assert probed.present == frozenset()


def _rendered_ifs(plan: HostPlan, known: HostInPlace | None) -> dict[str, bool]:
    """Each operation the stages add -> what its `_if` says when the run executes it."""
    inventory = Inventory((["host-1"], {}))
    state = State(inventory, Config(), check_for_changes=False)  # as `pyinfra -y`
    host = inventory.get_host("host-1")
    setattr(host.data, PLAN_KEY, plan)
    if known is not None:
        setattr(host.data, IN_PLACE_KEY, known)
    state.activate_host(host)
    add_deploy(state, stages.system)
    out = {}
    for op_hash in state.get_op_order():
        name = sorted(state.op_meta[op_hash].names)[0].split(" | ", 1)[1]
        condition = state.ops[host][op_hash].global_arguments.get("_if")
        out[name] = condition() if callable(condition) else all(c() for c in condition or [])
    return out


@pytest.fixture
def plan(tmp_path: Path) -> HostPlan:
    facts = HostFacts("debian", "12", "x86_64", "3.11", "2.36", 100.0, 8.0, True, False)
    stack = spec.load(REPO_ROOT / "stack.yml")
    planned = steps(tmp_path)
    return HostPlan(stack, facts, Verdict(), [Stage("system", planned[:2])])


def test_steps_in_place_are_skipped_and_the_others_run(plan: HostPlan) -> None:
    ran = _rendered_ifs(plan, HostInPlace(steps=frozenset({"s.env"})))
    assert ran == {"Write the environment": False, "Write the profile": True}


def test_without_a_probe_every_step_runs(plan: HostPlan) -> None:
    assert _rendered_ifs(plan, None) == {"Write the environment": True, "Write the profile": True}


class NoFacts:
    """A host whose facts must not be read."""

    name = "host-1"

    def __init__(self) -> None:
        self.noops: list[str] = []

    def get_fact(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("read a fact preflight already read")

    def noop(self, description: str) -> None:
        self.noops.append(description)


def test_the_venv_operation_uses_the_venvs_preflight_read(tmp_path: Path) -> None:
    step = venv_step(tmp_path)
    complete = Venvs(live=step.venv_dir, mtimes={step.venv_dir: 1}, markers={step.venv_dir: MARKER})
    host = NoFacts()
    with ctx_host.use(host):
        assert list(venv_op.locked_venv._inner(step=step, venvs=complete)) == []
        assert list(venv_op.locked_venv._inner(step=step, venvs=Venvs())) == ["echo build"]
    assert host.noops == [f"{step.link} -> {step.venv_dir} is complete"]


def test_a_job_wait_has_nothing_to_wait_for_when_its_step_was_in_place() -> None:
    step = JobWait("llm_env.apt_wait", "Wait for the apt packages", "system.apt", "echo wait")
    host = NoFacts()
    with ctx_host.use(host):
        assert list(background.wait._inner(step=step, started=False)) == []
        (command,) = background.wait._inner(step=step, started=True)
    assert command.get_raw_value() == "echo wait"  # a dry run names it only when apt ran
    assert host.noops == ["system.apt was in place: nothing ran in the background"]
