"""Local sandbox hosts that behave like fresh cloud VMs, and the Docker engine under them.

`docker_client()` and `docker_env()` are how every gpurig module reaches the engine;
`ensure_base_image()` gives the Debian base images Dockerfiles build FROM; `Fleet` starts,
lists and removes sandbox hosts (tests use it through tests/integration/conftest.py).

The names below are imported on first use (PEP 562): the inventory reads only
`gpurig.sandbox.paths` and `.state`, and importing the Docker SDK with them would cost every
`gpurig deploy` and every pyinfra run about 0.4 s twice.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gpurig.sandbox.engine import docker_client, docker_env, ensure_engine, stop_engine
    from gpurig.sandbox.hosts import Fleet
    from gpurig.sandbox.rootfs import BaseImage, ensure_base_image, image_tag
    from gpurig.sandbox.state import SandboxHost, StateDir

_WHERE = {
    "BaseImage": "rootfs",
    "Fleet": "hosts",
    "SandboxHost": "state",
    "StateDir": "state",
    "docker_client": "engine",
    "docker_env": "engine",
    "ensure_base_image": "rootfs",
    "ensure_engine": "engine",
    "image_tag": "rootfs",
    "stop_engine": "engine",
}

__all__ = [
    "BaseImage",
    "Fleet",
    "SandboxHost",
    "StateDir",
    "docker_client",
    "docker_env",
    "ensure_base_image",
    "ensure_engine",
    "image_tag",
    "stop_engine",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # once: later lookups do not come here
    return value
