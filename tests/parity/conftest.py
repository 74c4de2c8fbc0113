"""The parity suite: one description of a provisioned gpurig host, for every front end.

It runs against hosts made by pyinfra, by Ansible or by hand, through pytest-testinfra:

    pytest tests/parity --hosts='ansible://all' --ansible-inventory=INVENTORY
    pytest tests/parity --hosts='ssh://debian@127.0.0.1:2222' --ssh-identity-file=KEY

Expected values come from the controller: stack.yml, lock/ and the reports folder (--stack,
--lock, --reports-dir; GPURIG_STACK, GPURIG_LOCK, GPURIG_REPORTS_DIR). Without --hosts the
suite is skipped: it describes remote hosts, never the machine running pytest.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gpurig import lock, spec
from gpurig.lock import Lock
from gpurig.spec import Stack

REPO_ROOT = Path(__file__).resolve().parents[2]


DEFAULTS = {
    "stack": ("GPURIG_STACK", REPO_ROOT / "stack.yml"),
    "lock": ("GPURIG_LOCK", REPO_ROOT / "lock"),
    "reports_dir": ("GPURIG_REPORTS_DIR", REPO_ROOT / "reports"),
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gpurig parity")
    group.addoption("--stack", help="stack.yml the hosts were provisioned from")
    group.addoption("--lock", help="lock folder the hosts were provisioned from")
    group.addoption("--reports-dir", help="controller folder of the fetched reports")


def _path(config: pytest.Config, name: str) -> Path:
    variable, default = DEFAULTS[name]
    return Path(config.getoption(name, None) or os.environ.get(variable) or default)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("hosts", None):
        return
    skip = pytest.mark.skip(reason="parity suite: pass --hosts (see tests/parity/conftest.py)")
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def stack(pytestconfig: pytest.Config) -> Stack:
    return spec.load(_path(pytestconfig, "stack"))


@pytest.fixture(scope="session")
def locked(pytestconfig: pytest.Config) -> Lock:
    return lock.load(_path(pytestconfig, "lock"))


@pytest.fixture(scope="session")
def reports_dir(pytestconfig: pytest.Config) -> Path:
    return _path(pytestconfig, "reports_dir")
