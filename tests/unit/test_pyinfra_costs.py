"""gpurig.deploys.pyinfra_costs against pyinfra's own functions: the same answers."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pyinfra
import pytest

from gpurig.deploys import pyinfra_costs
from gpurig.deploys.pyinfra_costs import arguments, facts, operation, util

ORIGINAL_ORDER = pyinfra_costs._ORIGINALS["get_operation_order_from_stack"]
ORIGINAL_ARGUMENTS = pyinfra_costs._ORIGINALS["all_global_arguments"]


def _both(state: Any) -> list[list[int]]:
    # One line, one frame: both see the same callers.
    return [order(state) for order in (ORIGINAL_ORDER, pyinfra_costs.operation_order_from_stack)]


def _nested(state: Any, depth: int) -> list[list[int]]:
    if depth:
        return _nested(state, depth - 1)
    return _both(state)


@pytest.mark.parametrize("is_cli", [True, False])
@pytest.mark.parametrize("deploy_file", [__file__, "deploy/elsewhere.py", None])
def test_operation_order_matches_pyinfras(
    monkeypatch: pytest.MonkeyPatch, is_cli: bool, deploy_file: str | None
) -> None:
    monkeypatch.setattr(pyinfra, "is_cli", is_cli)
    state = SimpleNamespace(current_deploy_filename=deploy_file, current_op_file_number=7)
    for depth in (0, 3):
        theirs, ours = _nested(state, depth)
        assert ours == theirs
    if deploy_file == __file__:  # the test's own frames are counted: the check is not vacuous
        assert len(_nested(state, 3)[1]) >= 5


def test_global_arguments_match_pyinfras() -> None:
    assert pyinfra_costs.all_global_arguments() == ORIGINAL_ARGUMENTS()
    first = pyinfra_costs.all_global_arguments()
    first.clear()  # a caller's changes never reach the next caller
    assert pyinfra_costs.all_global_arguments() == ORIGINAL_ARGUMENTS()


def test_install_replaces_only_pyinfras_originals(monkeypatch: pytest.MonkeyPatch) -> None:
    for module, name in [
        (operation, "get_operation_order_from_stack"),
        (arguments, "all_global_arguments"),
        (facts, "all_global_arguments"),
        (operation, "pop_global_arguments"),
    ]:
        monkeypatch.setattr(module, name, pyinfra_costs._ORIGINALS[name])
    stranger = object()
    monkeypatch.setattr(facts, "all_global_arguments", stranger)
    pyinfra_costs.install()
    pyinfra_costs.install()
    assert operation.get_operation_order_from_stack is pyinfra_costs.operation_order_from_stack
    assert arguments.all_global_arguments is pyinfra_costs.all_global_arguments
    assert facts.all_global_arguments is stranger
    assert operation.pop_global_arguments is pyinfra_costs.pop_global_arguments
    assert arguments.pop_global_arguments is pyinfra_costs._ORIGINALS["pop_global_arguments"]
    assert util.get_operation_order_from_stack is ORIGINAL_ORDER  # pyinfra's own stays


def _host(deploy_kwargs: dict[str, Any] | None) -> tuple[Any, Any]:
    from pyinfra.api import Config, Inventory, State

    inventory = Inventory(
        (["one", ("two", {"_sudo_user": "host-level", "_chdir": "/srv"})], {"_timeout": 9}),
        override_data={"_shell_executable": "bash"},
        gpu=(["two"], {"_sudo": True, "_sudo_user": "group-level", "_env": {"A": "1"}}),
    )
    state = State(inventory, Config())
    host = inventory.get_host("two")
    host.data.override_datas["_retries"] = 2  # set during a deploy: `host.data.X = ...`
    host.current_deploy_kwargs = deploy_kwargs
    return state, host


@pytest.mark.parametrize("deploy_kwargs", [None, {"_sudo_user": "deploy-level", "_timeout": 3}])
@pytest.mark.parametrize("call_kwargs", [{}, {"_sudo": False, "_env": {"B": "2"}, "path": "/x"}])
def test_pop_global_arguments_matches_pyinfras(
    deploy_kwargs: dict[str, Any] | None, call_kwargs: dict[str, Any]
) -> None:
    original = pyinfra_costs._ORIGINALS["pop_global_arguments"]
    state, host = _host(deploy_kwargs)
    theirs_kwargs, ours_kwargs = dict(call_kwargs), dict(call_kwargs)
    theirs = original(state, host, theirs_kwargs)
    ours = pyinfra_costs.pop_global_arguments(state, host, ours_kwargs)
    assert ours == theirs
    assert ours_kwargs == theirs_kwargs  # the same keys popped from the call
    arguments_, _ = ours
    assert arguments_["_sudo"] is (call_kwargs.get("_sudo", True))  # group data reached
    assert arguments_["_retries"] == 2  # and the data set during the deploy
    arguments_["_env"]["changed"] = "yes"  # values are copies, as pyinfra's are
    assert "changed" not in host.data._env


def test_pop_global_arguments_reads_the_layers_once(monkeypatch: pytest.MonkeyPatch) -> None:
    state, host = _host(None)
    calls = []
    real = host.data.datas
    counted = tuple(
        (lambda layer=layer: calls.append(1) or layer()) if callable(layer) else layer
        for layer in real
    )
    host.data.__dict__["datas"] = counted
    pyinfra_costs.pop_global_arguments(state, host, {})
    assert len(calls) == sum(callable(layer) for layer in real)
