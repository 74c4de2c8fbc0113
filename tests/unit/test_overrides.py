"""One override vocabulary: flattened keys, per-host overrides, the same schema, both front ends."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pyinfra.context import ctx_host

from gpurig import deploys, loading, overrides, spec
from gpurig.controller import Controller
from gpurig.deploys import host_stack
from gpurig.errors import UsageError
from gpurig.overrides import flatten, overridden_lock_inputs, unflatten

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def repo_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(deploys.ENV_STACK, str(REPO_ROOT / "stack.yml"))
    monkeypatch.setenv(deploys.ENV_LOCK, str(REPO_ROOT / "lock"))
    deploys._load.cache_clear()
    deploys._defaults.cache_clear()
    # Building the bloomkit wheel is not what these tests are about.
    monkeypatch.setattr(Controller, "load", _without_wheel)


def _without_wheel(stack_path: Path, lock_dir: Path) -> Controller:
    stack, locked = loading.stack_and_lock(stack_path, lock_dir)
    return Controller(stack_path, stack, locked, None)  # type: ignore[arg-type]


@dataclass
class Data:
    values: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)


@dataclass
class FakeHost:
    data: Data


def test_every_field_has_a_key_and_the_round_trip_is_exact() -> None:
    stack = spec.load(REPO_ROOT / "stack.yml")
    data = flatten(stack)
    assert data["gpurig_host_venv"] == "/opt/gpurig/venv"
    assert data["gpurig_smoke_timeout_s"] == 900
    assert data["gpurig_python"] == ["3.11", "3.13"]
    assert data["gpurig_packages"]["transformers"]  # a dict field stays one key
    assert data["gpurig_sources_torch_index"] == {"cpu": False}
    assert spec.Stack.model_validate(unflatten(data)) == stack


def test_spec_defaults_are_the_flattened_stack_plus_deploy_knobs() -> None:
    defaults = deploys.SPEC_DEFAULTS
    assert bool(defaults)
    assert defaults["gpurig_network_ca_bundle"] == "/etc/ssl/certs/ca-certificates.crt"
    assert defaults["gpurig_skip_smoke"] is False
    assert "gpurig_install_offline" in set(defaults)


def test_host_data_overrides_one_field() -> None:
    fake = FakeHost(Data({"gpurig_smoke_quick": True, "gpurig_host_user": "llm"}))
    with ctx_host.use(fake):
        stack = host_stack()
    assert stack.smoke.quick is True
    assert stack.host.user == "llm"
    assert stack.host.venv == "/opt/gpurig/venv"
    assert overridden_lock_inputs(deploys.controller().stack, stack) == []


def test_a_bad_override_names_its_key() -> None:
    fake = FakeHost(Data({"gpurig_host_venv": "relative/path", "gpurig_smoke_timeout_s": 1}))
    with ctx_host.use(fake), pytest.raises(UsageError, match="invalid host data") as caught:
        host_stack()
    assert "gpurig_host_venv" in str(caught.value)
    assert "gpurig_smoke_timeout_s" in str(caught.value)


def test_overriding_what_the_lock_was_resolved_from_is_named() -> None:
    fake = FakeHost(Data({"gpurig_torch_version": "2.9.1", "gpurig_smoke_quick": True}))
    with ctx_host.use(fake):
        stack = host_stack()
    assert overridden_lock_inputs(deploys.controller().stack, stack) == ["gpurig_torch_version"]


def test_ansible_variables_override_the_same_way() -> None:
    """The Ansible bridge hands inventory variables to the same function."""
    base = spec.load(REPO_ROOT / "stack.yml")
    values = {"gpurig_host_user": "llm", "ansible_host": "127.0.0.1", "gpurig_skip_smoke": True}
    stack = overrides.host_stack(base, values)
    assert stack.host.user == "llm"
    assert overrides.host_stack(base, {"ansible_host": "x"}) is base
    assert overrides.knob(values, "gpurig_skip_smoke") is True
    assert overrides.knob({}, "gpurig_nvidia_hold_kernel") is None
