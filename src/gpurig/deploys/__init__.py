"""Reusable pyinfra deploys, one per stage; `deploy/gpu.py` composes them.

Every stage is `@deploy(name, data_defaults=SPEC_DEFAULTS)`: the resolved stack.yml, flattened
into data keys that host and group data override field by field:

    gpurig_<section>_<field>   a field of a section: gpurig_host_venv, gpurig_smoke_timeout_s,
                               gpurig_network_proxy, gpurig_install_offline, ...
    gpurig_<field>             a top-level field: gpurig_python, gpurig_apt_packages, ...

plus deploy-only knobs (`DEPLOY_DEFAULTS`): gpurig_skip_smoke. A host's overrides are validated
by the same schema as stack.yml (`host_stack`). Overriding what the lock was resolved from
(python, torch, packages, extra_packages, sources) fails that host's preflight: put such changes
in stack.yml and run `gpurig resolve`.

Paths come from the environment, so tests and CI can point a run elsewhere: GPURIG_STACK
(default ./stack.yml), GPURIG_LOCK (./lock), GPURIG_REPORTS_DIR (./reports).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pydantic import BaseModel, ValidationError

from gpurig import bloomkit_wheel, compat, lock, spec
from gpurig.bloomkit_wheel import Wheel
from gpurig.errors import GpurigError
from gpurig.lock import Lock
from gpurig.spec import SpecErrors, Stack

if TYPE_CHECKING:
    from pyinfra.api.host import Host

# pyinfra is imported where it is used: `gpurig deploy` reads the names below without paying
# for pyinfra's import (seconds), which the pyinfra process it starts pays anyway.

PREFIX = "gpurig_"
ENV_STACK = "GPURIG_STACK"
ENV_LOCK = "GPURIG_LOCK"
ENV_REPORTS = "GPURIG_REPORTS_DIR"
ENV_SUMMARY = "GPURIG_SUMMARY"  # "0": a pyinfra run prints no summary (`gpurig deploy` does)

# Knobs of the deploy itself, not of the host's end state.
DEPLOY_DEFAULTS: dict[str, Any] = {
    # true: skip `bloomkit smoke` on this run (a re-run then changes nothing at all)
    "gpurig_skip_smoke": False,
}
# Keys preflight computes per host (never set them in inventory data).
VERDICT_KEY = "gpurig_verdict"
FACTS_KEY = "gpurig_facts"


@dataclass(frozen=True)
class Controller:
    """What the controller brings to every host of a run: loaded once per process."""

    stack_path: Path
    stack: Stack
    lock: Lock
    wheel: Wheel
    reports_dir: Path


def stack_path() -> Path:
    return Path(os.environ.get(ENV_STACK) or spec.DEFAULT_STACK)


def lock_dir() -> Path:
    return Path(os.environ.get(ENV_LOCK) or lock.DEFAULT_LOCK_DIR)


def reports_dir() -> Path:
    return Path(os.environ.get(ENV_REPORTS) or "reports")


_load_lock = threading.Lock()  # hosts load the deploy file concurrently (gevent-patched)


@cache
def _load() -> Controller:
    path = stack_path()
    try:
        stack = spec.load(path)
        problems = compat.problems(stack)
        if problems:
            raise SpecErrors(str(path), problems)
        locked = lock.load(lock_dir())
        locked.assert_fresh(stack)
        wheel = bloomkit_wheel.build()
    except GpurigError as error:
        from pyinfra.api.exceptions import DeployError

        # A pyinfra error stops the run with this message and no traceback.
        raise DeployError(str(error)) from None
    return Controller(path, stack, locked, wheel, reports_dir())


def controller() -> Controller:
    with _load_lock:
        return _load()


def flatten(stack: Stack) -> dict[str, Any]:
    """stack.yml as data keys: gpurig_<section>_<field> and gpurig_<field>."""
    data: dict[str, Any] = {}
    dumped = stack.model_dump()
    for name in type(stack).model_fields:
        if isinstance(getattr(stack, name), BaseModel):
            for field_name, value in dumped[name].items():
                data[f"{PREFIX}{name}_{field_name}"] = value
        else:
            data[f"{PREFIX}{name}"] = dumped[name]
    return data


def unflatten(data: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of `flatten`, for the keys `flatten` produces."""
    out: dict[str, Any] = {}
    for name, info in Stack.model_fields.items():
        model = info.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            out[name] = {
                sub: data[f"{PREFIX}{name}_{sub}"]
                for sub in model.model_fields
                if f"{PREFIX}{name}_{sub}" in data
            }
        elif f"{PREFIX}{name}" in data:
            out[name] = data[f"{PREFIX}{name}"]
    return out


@cache
def _defaults() -> dict[str, Any]:
    return {**flatten(controller().stack), **DEPLOY_DEFAULTS}


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


def host_value(key: str, host: Host | None = None) -> Any:
    """A gpurig data key for this host: host/group data first, then the spec default."""
    from pyinfra.context import host as current_host

    target = host or current_host
    return target.data.get(key, _defaults()[key])


def host_stack(host: Host | None = None) -> Stack:
    """stack.yml with this host's data overrides, checked by the same schema."""
    from pyinfra.context import host as current_host

    target = host or current_host
    base = _defaults()
    data = {key: target.data.get(key, base[key]) for key in flatten(controller().stack)}
    try:
        return Stack.model_validate(unflatten(data))
    except ValidationError as error:
        where = "; ".join(
            f"{PREFIX}{'_'.join(str(p) for p in e['loc'][:2])}: {e['msg']}" for e in error.errors()
        )
        raise ValueError(f"invalid host data ({where})") from None


def overridden_lock_inputs(stack: Stack) -> list[str]:
    """Data keys whose host value changes what the lock was resolved from."""
    if stack.digest() == controller().stack.digest():
        return []
    base = flatten(controller().stack)
    mine = flatten(stack)
    lock_inputs = ("python", "torch", "packages", "extra_packages", "sources")
    return sorted(
        key
        for key, value in mine.items()
        if value != base[key] and key.removeprefix(PREFIX).startswith(lock_inputs)
    )
