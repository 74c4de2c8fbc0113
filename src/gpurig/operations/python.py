"""A uv-managed Python, for hosts whose distribution python3 is not in stack.yml."""

from __future__ import annotations

import shlex
from collections.abc import Generator, Mapping

from pyinfra.api.operation import operation
from pyinfra.context import host

from gpurig.facts.system import ManagedPython
from gpurig.hostlayout import UV_BIN


@operation()
def managed_python(
    version: str,
    install_dir: str,
    env: Mapping[str, str] | None = None,
    env_file: str | None = None,
) -> Generator[str, None, None]:
    """env: inline settings; env_file: KEY=value lines exported first (a proxy's credentials
    stay out of the command line)."""
    found = host.get_fact(ManagedPython, uv=UV_BIN, install_dir=install_dir, version=version)
    if found:
        host.noop(f"Python {version} is installed: {found}")
        return
    settings = {**(env or {}), "UV_PYTHON_INSTALL_DIR": install_dir}
    prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(settings.items()))
    command = f"{prefix} {UV_BIN} python install {shlex.quote(version)}"
    if env_file:
        command = f"set -a; . {shlex.quote(env_file)}; set +a; {command}"
    yield command
