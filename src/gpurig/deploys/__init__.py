"""The pyinfra front end: one reusable @deploy per stage; `deploy/gpu.py` composes them.

Preflight computes each host's plan (gpurig.plan, through gpurig.controller) from its facts and
its data; every later stage renders its part of that plan as operations (gpurig.deploys.render).
Every stage is `@deploy(name, data_defaults=SPEC_DEFAULTS)`: the resolved stack.yml flattened
into the override vocabulary of gpurig.overrides (gpurig_host_venv, gpurig_smoke_timeout_s, ...),
which host and group data override field by field, the same names Ansible inventories use.

Paths come from the environment, so tests and CI can point a run elsewhere: GPURIG_STACK
(default ./stack.yml), GPURIG_LOCK (./lock), GPURIG_REPORTS_DIR (./reports).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from gpurig.errors import GpurigError

if TYPE_CHECKING:
    from pyinfra.api.host import Host

    from gpurig.controller import Controller
    from gpurig.facts.in_place import HostInPlace
    from gpurig.plan import HostPlan
    from gpurig.spec import Stack

# pyinfra, the spec's schema and the lock are imported where they are used: `gpurig deploy`
# reads the names below without paying for their import (pyinfra's seconds, the schema's
# 0.4 s), which the pyinfra process it starts pays anyway.

ENV_STACK = "GPURIG_STACK"
ENV_LOCK = "GPURIG_LOCK"
ENV_REPORTS = "GPURIG_REPORTS_DIR"
ENV_SUMMARY = "GPURIG_SUMMARY"  # "0": a pyinfra run prints no summary (`gpurig deploy` does)
# Keys preflight computes per host (never set them in inventory data).
PLAN_KEY = "gpurig_plan"
VERDICT_KEY = "gpurig_verdict"
FACTS_KEY = "gpurig_facts"
IN_PLACE_KEY = "gpurig_in_place"  # what the host already has (gpurig.facts.in_place)
PUSH_KEY = "gpurig_push"  # the push preflight started (gpurig.operations.early)
# Set by `gpurig deploy` when the run will execute (-y, not --dry): preflight may then start
# the push of the wheels and big files before the steps ahead of theirs have run.
EARLY_PUSH_KEY = "gpurig_early_push"


def stack_path() -> Path:
    from gpurig import spec

    return Path(os.environ.get(ENV_STACK) or spec.DEFAULT_STACK)


def lock_dir() -> Path:
    from gpurig import lock

    return Path(os.environ.get(ENV_LOCK) or lock.DEFAULT_LOCK_DIR)


def reports_dir() -> Path:
    return Path(os.environ.get(ENV_REPORTS) or "reports")


_load_lock = threading.Lock()  # hosts load the deploy file concurrently (gevent-patched)


@cache
def _load() -> Controller:
    from gpurig.controller import Controller

    try:
        return Controller.load(stack_path(), lock_dir())
    except GpurigError as error:
        from pyinfra.api.exceptions import DeployError

        # A pyinfra error stops the run with this message and no traceback.
        raise DeployError(str(error)) from None


def controller() -> Controller:
    with _load_lock:
        return _load()


@cache
def _defaults() -> dict[str, Any]:
    from gpurig import overrides

    knobs = {k.name: k.default for k in overrides.KNOBS}
    return {**overrides.flatten(controller().stack), **knobs}


class SpecDefaults(Mapping[str, Any]):
    """The data defaults of every gpurig deploy: read on first use, not at import, so that
    importing a deploy module needs no stack.yml."""

    def __getitem__(self, key: str) -> Any:
        return _defaults()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(_defaults())

    def __len__(self) -> int:
        return len(_defaults())

    def __bool__(self) -> bool:  # pyinfra tests `if data_defaults:` at decoration time
        return True


# pyinfra types data_defaults as a dict; it only looks keys up and iterates them.
SPEC_DEFAULTS = cast(dict[str, Any], SpecDefaults())


class HostValues(Mapping[str, Any]):
    """A host's data as the override vocabulary: host and group data, then the spec default."""

    def __init__(self, host: Host) -> None:
        self._host = host

    def __getitem__(self, key: str) -> Any:
        base = _defaults()
        if key not in base:
            raise KeyError(key)
        return self._host.data.get(key, base[key])

    def __iter__(self) -> Iterator[str]:
        return iter(_defaults())

    def __len__(self) -> int:
        return len(_defaults())


def _current(host: Host | None) -> Host:
    from pyinfra.context import host as current_host

    return host or current_host


def host_values(host: Host | None = None) -> HostValues:
    return HostValues(_current(host))


def host_stack(host: Host | None = None) -> Stack:
    """stack.yml with this host's data overrides, checked by the same schema."""
    return controller().host_stack(host_values(host))


def host_plan(host: Host | None = None) -> HostPlan:
    """The plan preflight made for this host."""
    from gpurig.plan import HostPlan

    found = _current(host).data.get(PLAN_KEY)
    if not isinstance(found, HostPlan):
        raise RuntimeError(f"{PLAN_KEY} is missing: run the preflight deploy first")
    return found


def host_in_place(host: Host | None = None) -> HostInPlace:
    """What preflight's one probe found in place; nothing when no preflight ran (a stage run
    alone), so that every step reads its own fact."""
    from gpurig.facts.in_place import HostInPlace

    found = _current(host).data.get(IN_PLACE_KEY)
    return found if isinstance(found, HostInPlace) else HostInPlace()


def run_if(needed: bool) -> Callable[[], bool]:
    """pyinfra's `_if` for an operation that preflight already knows to be needed or not."""
    return lambda: needed
