"""Stage 3, Python: uv, the spec's Python, and a login PATH that finds the venv."""

from __future__ import annotations

from pathlib import Path

from pyinfra.api.deploy import deploy

from gpurig.deploys import SPEC_DEFAULTS, host_stack
from gpurig.deploys.preflight import current_verdict
from gpurig.deploys.system import environment
from gpurig.hostlayout import ENV_FILE, PROFILE_SCRIPT, UV_BIN
from gpurig.lock import _uv
from gpurig.operations import files
from gpurig.operations.python import managed_python
from gpurig.spec import Stack

PYTHON_DIR = "/opt/gpurig/python"  # uv-managed Pythons, when the distribution's does not fit


def profile_script(stack: Stack) -> str:
    """Login shells (the service user's included) run `python` and `bloomkit` from the venv."""
    bin_dir = f"{stack.host.venv}/bin"
    return f"""# Written by gpurig: the gpurig venv first on PATH, and gpurig's environment.
if [ -r {ENV_FILE} ]; then
  set -a
  . {ENV_FILE}
  set +a
fi
case ":$PATH:" in
  *":{bin_dir}:"*) ;;
  *) PATH="{bin_dir}:$PATH" ;;
esac
export PATH
unset PYTHONPATH
"""


def uv_environment(stack: Stack, managed: bool) -> dict[str, str]:
    """What uv runs with on the host: the trust store, the proxy, uv's own Pythons."""
    env = {k: v for k, v in environment(stack).items() if k != "HF_HOME"}
    env.update(uv_settings(managed))
    return env


def uv_settings(managed: bool) -> dict[str, str]:
    """uv's own settings, beyond /etc/gpurig/environment (which the deploy sources)."""
    if not managed:
        return {}
    return {"UV_PYTHON_INSTALL_DIR": PYTHON_DIR, "UV_PYTHON_PREFERENCE": "only-managed"}


@deploy("Python", data_defaults=SPEC_DEFAULTS)
def python() -> None:
    stack = host_stack()
    verdict = current_verdict()
    # The controller's own uv (same architecture), compared by checksum.
    files.installed(name="Install uv", src=Path(_uv()), dest=UV_BIN, mode="755")
    if verdict.uv_python:
        assert verdict.python is not None
        managed_python(
            name=f"Install Python {verdict.python} with uv",
            version=verdict.python,
            install_dir=PYTHON_DIR,
            env=uv_settings(managed=True),
            env_file=ENV_FILE,
        )
    files.installed(
        name="Put the venv first on login shells' PATH",
        src=profile_script(stack).encode(),
        dest=PROFILE_SCRIPT,
    )
