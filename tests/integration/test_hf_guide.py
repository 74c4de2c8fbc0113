"""The guide's Hugging Face script on a host the pyinfra deploy provisioned: `load_dataset`, a
tokenizer, a BLOOM model from a config, `Trainer`, `save_pretrained`, reload and a
text-generation pipeline, run as the service user in its login shell with nothing installed
by hand (issue 13).

Its own fresh host: the shared `deploy-bookworm` host of test_deploy.py is re-locked and
re-installed offline by the tests there, so it is not the default stack's host by the time
this file runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from gpurig.sandbox.testing import SandboxFleet

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("hf_guide_script.py")
DEPLOY_TIMEOUT_S = 1500
SCRIPT_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def deployed(sandbox_fleet: Callable[..., SandboxFleet], tmp_path_factory) -> SandboxFleet:
    fleet = sandbox_fleet(os="bookworm", count=1, name="hf-guide")
    reports = tmp_path_factory.mktemp("hf-guide-reports")
    result = subprocess.run(
        [sys.executable, "-m", "gpurig.cli", "deploy"],
        cwd=REPO_ROOT,
        env={**fleet.env, "GPURIG_REPORTS_DIR": str(reports)},
        capture_output=True,
        text=True,
        timeout=DEPLOY_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return fleet


def test_the_guides_script_runs_as_the_service_user(deployed: SandboxFleet) -> None:
    host = deployed.hosts[0].name
    remote = "/tmp/hf_guide_script.py"
    code, out = deployed.ssh(
        host, f"cat > {remote} <<'GPURIG_EOF'\n{SCRIPT.read_text()}GPURIG_EOF\nchmod 0644 {remote}"
    )
    assert code == 0, out
    # The login shell is the point: /etc/profile.d must put the venv's python first on PATH.
    code, out = deployed.ssh(host, f"sudo -n -iu gpurig python {remote}", timeout=SCRIPT_TIMEOUT_S)
    assert code == 0, out[-4000:]
    line = next(ln for ln in reversed(out.splitlines()) if ln.startswith('{"python"'))
    result = json.loads(line)
    assert result["python"].startswith("/opt/gpurig/venv"), result["python"]
    assert result["rows"] == 32
    assert result["steps"] == 4
    assert result["loss_finite"]
    assert result["same_weights"]
    assert result["generated"].startswith("The driver")
    assert result["new_tokens"] >= 1
