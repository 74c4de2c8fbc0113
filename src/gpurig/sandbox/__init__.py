"""Local sandbox hosts that behave like fresh cloud VMs, and the Docker engine under them.

`docker_client()` and `docker_env()` are how every gpurig module reaches the engine;
`ensure_base_image()` gives the Debian base images Dockerfiles build FROM; `Fleet` starts,
lists and removes sandbox hosts (tests use it through tests/integration/conftest.py).
"""

from gpurig.sandbox.engine import docker_client, docker_env, ensure_engine, stop_engine
from gpurig.sandbox.hosts import Fleet
from gpurig.sandbox.rootfs import BaseImage, ensure_base_image, image_tag
from gpurig.sandbox.state import SandboxHost, StateDir

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
