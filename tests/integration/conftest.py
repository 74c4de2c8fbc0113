"""Fixtures for tests on real sandbox hosts: the Docker engine, and fleets of fresh hosts.

    def test_deploy(sandbox_fleet):
        fleet = sandbox_fleet(os="bookworm", count=2, pretend_gpu="H100")
        subprocess.run(["pyinfra", "-y", str(fleet.inventory_path), "deploy/gpu.py"],
                       env=fleet.env, check=True)
        rc, out = fleet.ssh(fleet.hosts[0], "lspci -Dnmm")

Fleets live in their own state dirs and are removed when the test module ends, so the suite's
disk use peaks at one module's hosts, not the sum of all (a host with a venv holds a few GB, and
the preflight's disk check on later hosts reads the same disk). Pass the same `name` from several
tests of one module to share one fleet (its other arguments must then match); without a name
every call starts a fresh fleet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest

from gpurig.errors import GpurigError
from gpurig.sandbox import Fleet, docker_client, ensure_engine
from gpurig.sandbox.testing import SandboxFleet

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def engine() -> docker.DockerClient:
    """The Docker engine (started if none answers). Fails, never skips, when it cannot be had."""
    try:
        ensure_engine()
        return docker_client()
    except GpurigError as error:
        pytest.fail(f"Docker engine: {error}", pytrace=False)


@pytest.fixture(scope="module")
def sandbox_fleet(
    engine: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., SandboxFleet]]:
    """Factory: sandbox_fleet(os="bookworm", count=1, pretend_gpu=None,
    pretend_secure_boot=False, name=None, init="none", first_boot_apt=False,
    pretend_driver=None) -> SandboxFleet.

    init defaults to "none" (sshd alone) here, unlike `gpurig sandbox up`: the deploy suites
    assert what a host without systemd does; tests of systemd hosts ask for init="systemd".
    """
    fleets: dict[str, SandboxFleet] = {}

    def start(
        os: str = "bookworm",
        count: int = 1,
        pretend_gpu: str | None = None,
        pretend_secure_boot: bool = False,
        name: str | None = None,
        init: str = "none",
        first_boot_apt: bool = False,
        pretend_driver: str | None = None,
    ) -> SandboxFleet:
        params: dict[str, object] = {
            "os": os,
            "count": count,
            "pretend_gpu": pretend_gpu,
            "pretend_secure_boot": pretend_secure_boot,
            "init": init,
            "first_boot_apt": first_boot_apt,
            "pretend_driver": pretend_driver,
        }
        if name is not None and name in fleets:
            shared = fleets[name]
            if shared.params != params:
                pytest.fail(f"sandbox fleet {name!r} exists with {shared.params}, not {params}")
            return shared
        key = name or f"anonymous-{len(fleets)}"
        state_dir = tmp_path_factory.mktemp(f"sandbox-{key}")
        handle = SandboxFleet(Fleet(state_dir), REPO_ROOT / "inventory.py", params)
        fleets[key] = handle  # registered first: teardown removes whatever `up` left
        handle.fleet.up(
            count,
            os=os,
            pretend_gpu=pretend_gpu,
            pretend_secure_boot=pretend_secure_boot,
            init=init,
            first_boot_apt=first_boot_apt,
            pretend_driver=pretend_driver,
        )
        return handle

    yield start
    for handle in fleets.values():
        handle.fleet.down()
