"""One override vocabulary for every front end: stack.yml as inventory variables.

    gpurig_<section>_<field>   a field of a section: gpurig_host_venv, gpurig_smoke_timeout_s,
                               gpurig_network_proxy, gpurig_install_offline, ...
    gpurig_<field>             a top-level field: gpurig_python, gpurig_apt_packages, ...

plus the knobs in `KNOBS`, which are not spec fields. pyinfra host and group data and Ansible
inventory variables use the same names; a host's values are validated by the same schema as
stack.yml (`host_stack`). Overriding what the lock was resolved from (python, torch, packages,
extra_packages, sources) fails that host's preflight: put such changes in stack.yml and run
`gpurig resolve`. docs/overrides.md lists every name (`gpurig render` writes it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from gpurig.errors import UsageError
from gpurig.spec import Stack

PREFIX = "gpurig_"
LOCK_INPUTS = ("python", "torch", "packages", "extra_packages", "sources")


@dataclass(frozen=True)
class Knob:
    name: str
    default: Any
    description: str


# Knobs of the deploy itself, not of the host's end state (None: follow nvidia.hold_packages).
KNOBS = (
    Knob("gpurig_skip_smoke", False, "true: skip `bloomkit smoke` on this run"),
    Knob(
        "gpurig_nvidia_hold_kernel",
        None,
        "hold the kernel meta packages too (default: as nvidia.hold_packages)",
    ),
    Knob(
        "gpurig_nvidia_unattended_upgrades",
        None,
        "write the unattended-upgrades Package-Blacklist (default: as nvidia.hold_packages)",
    ),
)


def flatten(stack: Stack) -> dict[str, Any]:
    """stack.yml as data keys: gpurig_<section>_<field> and gpurig_<field>."""
    data: dict[str, Any] = {}
    for name in type(stack).model_fields:
        value = getattr(stack, name)
        if isinstance(value, BaseModel):
            # Every field, also those the dump leaves out while at their default.
            for field_name in type(value).model_fields:
                data[f"{PREFIX}{name}_{field_name}"] = _plain(getattr(value, field_name))
        else:
            data[f"{PREFIX}{name}"] = _plain(value)
    return data


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


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


_NAMED: list[tuple[Stack, frozenset[str]]] = []  # the last base stack and its variable names


def _names(base: Stack) -> frozenset[str]:
    """`flatten(base)`'s names, kept for the last base: every host of a run asks about the
    same stack.yml, and flattening it costs a millisecond and a half."""
    if not _NAMED or _NAMED[0][0] is not base:
        _NAMED[:] = [(base, frozenset(flatten(base)))]
    return _NAMED[0][1]


def host_stack(base: Stack, values: Mapping[str, Any]) -> Stack:
    """stack.yml with a host's overrides (any mapping of variable names), checked by the schema."""
    if not any(key in values for key in _names(base)):
        return base
    defaults = flatten(base)
    data = {key: values.get(key, value) for key, value in defaults.items()}
    try:
        return Stack.model_validate(unflatten(data))
    except ValidationError as error:
        where = "; ".join(
            f"{PREFIX}{'_'.join(str(p) for p in e['loc'][:2])}: {e['msg']}" for e in error.errors()
        )
        raise UsageError(f"invalid host data ({where})") from None


def knob(values: Mapping[str, Any], name: str) -> Any:
    """A front-end knob's value for a host: its variable, else the default."""
    default = next(k.default for k in KNOBS if k.name == name)
    value = values.get(name, default)
    return default if value is None else value


def overridden_lock_inputs(base: Stack, stack: Stack) -> list[str]:
    """Variable names whose host value changes what the lock was resolved from."""
    if stack is base or stack.digest() == base.digest():
        return []
    mine, theirs = flatten(stack), flatten(base)
    return sorted(
        key
        for key, value in mine.items()
        if value != theirs.get(key) and key.removeprefix(PREFIX).startswith(LOCK_INPUTS)
    )
