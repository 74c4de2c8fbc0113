"""A provisioned gpurig host, as docs/host-end-state.md describes it, whatever made it."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from packaging.utils import canonicalize_name

from gpurig import hostlayout
from gpurig.lock import Lock, _uv, parse_requirements
from gpurig.plan.python import profile_script
from gpurig.plan.system import environment_file
from gpurig.spec import Stack

pytestmark = [pytest.mark.integration]

# Every distribution in the venv with its version, by the venv's own Python.
LIST_DISTRIBUTIONS = (
    "import importlib.metadata as m, json; "
    "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
)


def _as_user(stack: Stack, command: str) -> str:
    """A login shell of the service user, as a person or a job would get it."""
    return f"sudo -n runuser -l {stack.host.user} -c {shlex.quote(command)}"


def _root(host: Any, command: str) -> Any:
    return host.run(f"sudo -n sh -c {shlex.quote(command)}")


def _marker(host: Any, stack: Stack) -> dict[str, Any]:
    link = host.file(stack.host.venv)
    return json.loads(host.file(f"{link.linked_to}/{hostlayout.MARKER}").content_string)


def test_service_user(host: Any, stack: Stack) -> None:
    user = host.user(stack.host.user)
    assert user.exists
    assert user.uid < 1000, "a system user"
    assert user.home == hostlayout.STATE_DIR
    assert user.shell == "/bin/bash"
    status = _root(host, f"passwd -S {stack.host.user}").stdout.split()
    assert status[1] in ("L", "NP"), "no usable password"
    assert "sudo" not in user.groups
    sudo = _root(host, f"sudo -l -U {stack.host.user}").stdout
    assert "not allowed" in sudo


def test_uv_is_the_controllers(host: Any) -> None:
    uv = host.file(hostlayout.UV_BIN)
    assert (uv.user, uv.group, uv.mode) == ("root", "root", 0o755)
    ours = subprocess.run([_uv(), "--version"], capture_output=True, text=True, check=True)
    assert host.check_output(f"{hostlayout.UV_BIN} --version") == ours.stdout.strip()


def test_ca_bundle_is_trusted(host: Any, stack: Stack) -> None:
    if not stack.network.ca_bundle:
        pytest.skip("stack.yml sets no network.ca_bundle")
    pushed = host.file(hostlayout.CA_FILE)
    assert (pushed.user, pushed.group, pushed.mode) == ("root", "root", 0o644)
    bundle = Path(stack.network.ca_bundle).read_text()
    assert pushed.content_string == bundle
    # update-ca-certificates ran: the system store holds the controller's last certificate.
    last = "-----BEGIN CERTIFICATE-----" + bundle.rsplit("-----BEGIN CERTIFICATE-----", 1)[1]
    store = host.file("/etc/ssl/certs/ca-certificates.crt").content_string
    assert last.strip() in store
    # And HTTPS through the proxy works from the service user's login environment.
    probe = "import urllib.request; urllib.request.urlopen('https://pypi.org/simple/', timeout=60)"
    run = host.run(_as_user(stack, f"python -c {shlex.quote(probe)}"))
    assert run.rc == 0, run.stderr


def test_environment_and_login_profile(host: Any, stack: Stack) -> None:
    for path, text, group, mode in (
        # The environment file may hold the proxy's credentials: not world-readable.
        (hostlayout.ENV_FILE, environment_file(stack), stack.host.user, 0o640),
        (hostlayout.PROFILE_SCRIPT, profile_script(stack), "root", 0o644),
    ):
        found = host.file(path)
        assert (found.user, found.group, found.mode) == ("root", group, mode), path
        with host.sudo():  # the SSH user may not read the environment file, by design
            assert host.file(path).content_string == text, path
    # Nor may any other user: the proxy's credentials stay with root and the service user.
    assert host.run(f"cat {hostlayout.ENV_FILE}").rc != 0


def test_login_path_finds_the_venv(host: Any, stack: Stack) -> None:
    found = host.check_output(_as_user(stack, "command -v bloomkit python")).splitlines()
    assert found == [f"{stack.host.venv}/bin/bloomkit", f"{stack.host.venv}/bin/python"]
    env = host.check_output(_as_user(stack, 'echo "${PYTHONPATH-unset}|$HF_HOME"'))
    assert env == f"unset|{stack.host.hf_home}"


def test_bloomkit_runs(host: Any, stack: Stack) -> None:
    run = host.run(_as_user(stack, "bloomkit --version"))
    assert run.rc == 0, run.stderr
    assert run.stdout.startswith("bloomkit ")


def test_venv_is_the_locked_one_owned_by_root(host: Any, stack: Stack, locked: Lock) -> None:
    link = host.file(stack.host.venv)
    assert link.is_symlink
    venv = PurePosixPath(link.linked_to)
    layout = hostlayout.Layout(stack)
    assert str(venv.parent) == layout.venvs_dir
    marker = _marker(host, stack)
    target = locked.targets[marker["target"]]
    assert marker["lock_sha256"] == target.sha256
    assert venv.name == marker["venv_id"]
    assert venv.name == hostlayout.venv_id(target, marker["bloomkit_sha256"])
    assert marker["torch"] == target.torch
    folder = host.file(str(venv))
    assert (folder.user, folder.group, folder.mode) == ("root", "root", 0o755)
    assert _root(host, f"find {venv} ! -user root -print -quit").stdout.strip() == ""
    # uv leaves its own empty, world-writable .lock at the top; nothing else may be writable.
    writable = f"find {venv} -perm -o+w ! -type l ! -path {venv}/.lock -print -quit"
    assert _root(host, writable).stdout.strip() == ""
    as_user = host.run(_as_user(stack, f"test -w {venv}/lib"))
    assert as_user.rc != 0, "the service user must not write the venv"


def test_venv_holds_exactly_the_locked_versions(host: Any, stack: Stack, locked: Lock) -> None:
    marker = _marker(host, stack)
    target = locked.targets[marker["target"]]
    pins = parse_requirements(locked.requirements(target).read_text())
    wanted = {canonicalize_name(name): version for name, (version, _) in pins.items()}
    python = f"{stack.host.venv}/bin/python"
    found = json.loads(host.check_output(f"{python} -c {shlex.quote(LIST_DISTRIBUTIONS)}"))
    installed = {canonicalize_name(name): version for name, version in found.items()}
    bloomkit = installed.pop("bloomkit", None)
    assert bloomkit is not None
    assert installed == wanted
    requirements = host.file(f"{host.file(stack.host.venv).linked_to}/gpurig-requirements.txt")
    assert marker["bloomkit_sha256"] in requirements.content_string


def test_state_and_cache_folders(host: Any, stack: Stack) -> None:
    user = stack.host.user
    for path in {
        hostlayout.STATE_DIR,
        stack.host.hf_home,
        str(PurePosixPath(stack.host.report).parent),
    }:
        folder = host.file(path)
        assert folder.is_directory, path
        assert (folder.user, folder.group, folder.mode) == (user, user, 0o755), path
    wheels = host.file(hostlayout.WHEEL_DIR)
    assert (wheels.user, wheels.mode) == ("root", 0o755)
    assert any(name.startswith("bloomkit-") for name in wheels.listdir())


def test_report_present_on_host_and_controller(host: Any, stack: Stack, reports_dir: Path) -> None:
    on_host = host.file(stack.host.report)
    assert on_host.exists
    assert on_host.user == stack.host.user
    data = json.loads(_root(host, f"cat {stack.host.report}").stdout)
    assert data["verdict"] == "pass", data.get("failures")
    name = host.backend.get_hostname()
    fetched = json.loads((reports_dir / f"{name}.json").read_text())
    assert fetched == data


def test_units_the_deploy_enables_are_enabled_and_running(host: Any, stack: Stack) -> None:
    """Persistence mode's nvidia-persistenced, the one unit the deploy enables (on a GPU host
    under systemd): enabled for boot and running now, whichever front end made the host."""
    if not host.file("/run/systemd/system").is_directory:
        pytest.skip("no systemd: the deploy enables no unit (it says so in its notes)")
    units = []
    if stack.nvidia.persistence_mode and host.run("nvidia-smi -L").rc == 0:
        units.append("nvidia-persistenced")
    if not units:
        pytest.skip("no GPU driver on this host: the deploy enables no unit")
    for unit in units:
        state = host.run(f"systemctl is-enabled {unit}; systemctl is-active {unit}")
        assert state.stdout.split() == ["enabled", "active"], (unit, state.stdout)
