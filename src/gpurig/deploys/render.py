"""Plan steps as pyinfra operations: one renderer per step kind, and nothing decided here.

Every operation is named after its step (`step.name`), so a run's operations map back to the
plan step by step (tests/unit/test_plan_parity.py compares them with the Ansible roles').

A step preflight's probe showed in place (gpurig.facts.in_place) is still rendered, from the
same line, with pyinfra's `_if` saying it has nothing to do: its operation reads no fact of its
own, and a fleet whose hosts differ keeps one operation per step (pyinfra names an operation by
where it is called).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pyinfra.context import host
from pyinfra.operations import files as pyinfra_files
from pyinfra.operations import systemd

from gpurig.deploys import PUSH_KEY, host_in_place, run_if
from gpurig.facts.in_place import HostInPlace
from gpurig.operations import apt, background, early, files, users, wheels
from gpurig.operations.models import placed
from gpurig.operations.python import managed_python
from gpurig.operations.script import scripted
from gpurig.operations.venv import locked_venv
from gpurig.plan.models import Models
from gpurig.plan.steps import (
    AptPackages,
    Directories,
    File,
    JobWait,
    Script,
    Service,
    ServiceUser,
    Step,
    UvPython,
    Venv,
    Wheels,
)


def _needed(step: Step) -> Callable[[], bool]:
    """pyinfra's `_if`: false for a step the probe found in place."""
    return run_if(step.id not in host_in_place().steps)


def _owner(step: File) -> str:
    return f"{step.owner}:{step.group}"


def early_transfers(steps: list[Step], known: HostInPlace) -> list[early.Transfer]:
    """What preflight pushes in the background (gpurig.operations.early): the wheels the host
    lacks, and the big controller files of the steps not in place."""
    out: list[early.Transfer] = []
    for step in steps:
        if step.id in known.steps:
            continue
        if isinstance(step, Wheels):
            lacking = wheels.missing(step.wheels, known.wheels)
            out += [wheels.transfer(w, step.directory) for w in lacking]
        elif isinstance(step, File) and step.src:
            sent = files.transfer(step.src, step.path, step.mode, _owner(step), step.sha256)
            if sent.size >= early.MIN_BYTES:
                out.append(sent)
    return out


def _file(step: File) -> None:
    if not step.present:
        pyinfra_files.file(name=step.name, path=step.path, present=False, _if=_needed(step))
        return
    src = Path(step.src) if step.src else (step.content or "").encode()
    files.installed(
        name=step.name,
        src=src,
        dest=step.path,
        mode=step.mode,
        owner=_owner(step),
        then=step.then,
        sha256=step.sha256 or None,  # the plan hashed it once for every host
        early=host.data.get(PUSH_KEY),
        _if=_needed(step),
    )


def _directories(step: Directories) -> None:
    for path in step.paths:
        files.folder(
            name=f"{step.name}: {path}",
            path=path,
            owner=step.owner,
            group=step.group,
            mode=step.mode,
            _if=_needed(step),
        )


def apply(step: Step) -> None:
    """Add the operations that converge `step` on the current host."""
    if isinstance(step, File):
        _file(step)
    elif isinstance(step, AptPackages):
        apt.packages(
            name=step.name,
            packages=step.packages,
            lock_timeout_s=step.lock_timeout_s,
            background=step.background,
            _if=_needed(step),
        )
    elif isinstance(step, JobWait):
        # Nothing ran in the background when the probe found the starting step in place;
        # decided in the operation, not by `_if`, so that a dry run says so too.
        started = step.started_by not in host_in_place().steps
        background.wait(name=step.name, step=step, started=started)
    elif isinstance(step, ServiceUser):
        users.service_user(
            name=step.name, user=step.user, home=step.home, shell=step.shell, _if=_needed(step)
        )
    elif isinstance(step, Directories):
        _directories(step)
    elif isinstance(step, UvPython):
        managed_python(
            name=step.name,
            version=step.version,
            install_dir=step.install_dir,
            env=step.env,
            env_file=step.env_file or None,
        )
    elif isinstance(step, Wheels):
        wheels.pushed(
            name=step.name,
            wheels=step.wheels,
            directory=step.directory,
            early=host.data.get(PUSH_KEY),
            _if=_needed(step),
        )
    elif isinstance(step, Venv):
        locked_venv(name=step.name, step=step, venvs=host_in_place().venvs)
    elif isinstance(step, Models):
        placed(name=step.name, step=step)
    elif isinstance(step, Service):
        systemd.service(name=step.name, service=step.unit, running=True, enabled=True)
    elif isinstance(step, Script):
        scripted(name=step.name, step=step, _timeout=step.timeout_s)
    else:
        raise TypeError(f"no pyinfra renderer for {type(step).__name__} ({step.id})")
