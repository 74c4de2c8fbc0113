"""The Python stage's plan: uv, the spec's Python, and a login PATH that finds the venv."""

from __future__ import annotations

import shlex

from gpurig.hostlayout import ENV_FILE, PROFILE_SCRIPT, PYTHON_DIR, UV_BIN
from gpurig.plan.steps import File, Step, UvPython
from gpurig.spec import Stack

SYSTEM_PYTHON = "/usr/bin/python3"


def profile_script(stack: Stack) -> str:
    """Login shells (the service user's included) run `python` and `bloomkit` from the venv.

    Every login shell, root's included, sources this: each value is shell-quoted, whatever
    the schema already refused. The environment file may hold the proxy's credentials: it is
    readable by root and the service user only, so other users' shells skip it.
    """
    bin_dir = shlex.quote(f"{stack.host.venv}/bin")
    env_file = shlex.quote(ENV_FILE)
    return f"""# Written by gpurig: the gpurig venv first on PATH, and gpurig's environment.
if [ -r {env_file} ]; then
  set -a
  . {env_file}
  set +a
fi
case ":$PATH:" in
  *:{bin_dir}:*) ;;
  *) PATH={bin_dir}":$PATH" ;;
esac
export PATH
unset PYTHONPATH
"""


def uv_settings(managed: bool) -> dict[str, str]:
    """uv's own settings, beyond /etc/gpurig/environment (which every uv step sources)."""
    if not managed:
        return {}
    return {"UV_PYTHON_INSTALL_DIR": PYTHON_DIR, "UV_PYTHON_PREFERENCE": "only-managed"}


def steps(stack: Stack, python: str, uv_python: bool, uv_src: str, uv_sha256: str) -> list[Step]:
    """uv_src: the controller's own uv (same architecture), compared by checksum."""
    out: list[Step] = [
        File.copy("python.uv", "Install uv", UV_BIN, src=uv_src, sha256=uv_sha256, mode="0755")
    ]
    if uv_python:
        out.append(
            UvPython(
                "python.interpreter",
                f"Install Python {python} with uv",
                version=python,
                uv=UV_BIN,
                install_dir=PYTHON_DIR,
                env=uv_settings(managed=True),
                env_file=ENV_FILE,
            )
        )
    out.append(
        File.text(
            "python.profile",
            "Put the venv first on login shells' PATH",
            PROFILE_SCRIPT,
            profile_script(stack),
        )
    )
    return out
