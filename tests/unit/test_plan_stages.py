"""What the plan says a host gets: its files, checks, and the offline bundle."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from gpurig import hostlayout, lock, spec, wheelhouse
from gpurig.bloomkit_wheel import Wheel
from gpurig.deploys import preflight
from gpurig.model.host import HostFacts
from gpurig.plan import plan_problems, python, system
from gpurig.plan import venv as llm_env
from gpurig.preflight import Verdict
from helpers.facts import host_facts

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def stack() -> spec.Stack:
    return spec.load(REPO_ROOT / "stack.yml")


def with_changes(stack: spec.Stack, **sections: dict[str, object]) -> spec.Stack:
    data = stack.model_dump()
    for name, values in sections.items():
        data[name].update(values)
    return spec.Stack.model_validate(data)


def test_environment_file_without_and_with_a_proxy(stack: spec.Stack) -> None:
    plain = system.environment_file(stack)
    assert "HF_HOME=/var/cache/gpurig/huggingface\n" in plain
    assert "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt\n" in plain
    assert "PROXY" not in plain.upper().replace("# ", "")
    proxied = with_changes(stack, network={"proxy": "http://proxy.corp:3128"})
    text = system.environment_file(proxied)
    assert "HTTPS_PROXY=http://proxy.corp:3128\n" in text
    assert "https_proxy=http://proxy.corp:3128\n" in text
    assert "NO_PROXY=localhost,127.0.0.1\n" in text


def test_environment_values_read_back_in_sh(stack: spec.Stack, tmp_path: Path) -> None:
    # The schema refuses such a path; the file quotes every value anyway (defence in depth).
    odd = stack.model_copy(
        update={"host": stack.host.model_copy(update={"hf_home": "/srv/hf cache/it's"})}
    )
    env_file = tmp_path / "environment"
    env_file.write_text(system.environment_file(odd))
    out = subprocess.run(
        ["sh", "-c", f'set -a; . {env_file}; printf %s "$HF_HOME"'],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout == "/srv/hf cache/it's"


def test_offline_hosts_do_not_wait_on_the_hub(stack: spec.Stack) -> None:
    offline = with_changes(stack, install={"offline": True, "wheelhouse": "/srv/wheels"})
    assert "HF_HUB_OFFLINE=1\n" in system.environment_file(offline)


def test_apt_proxy(stack: spec.Stack) -> None:
    text = system.apt_proxy("http://proxy.corp:3128")
    assert 'Acquire::http::Proxy "http://proxy.corp:3128";' in text
    assert 'Acquire::https::Proxy "http://proxy.corp:3128";' in text


def test_login_shells_get_the_venv_first(stack: spec.Stack, tmp_path: Path) -> None:
    script = tmp_path / "gpurig.sh"
    script.write_text(python.profile_script(stack))
    out = subprocess.run(
        ["sh", "-c", f". {script}; . {script}; echo $PATH; echo ${{PYTHONPATH-unset}}"],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": "/somewhere"},
    )
    path, pythonpath = out.stdout.splitlines()
    assert path == "/opt/gpurig/venv/bin:/usr/bin:/bin"  # once, however often it is sourced
    assert pythonpath == "unset"


def test_uv_settings_for_a_managed_python() -> None:
    assert python.uv_settings(managed=False) == {}
    env = python.uv_settings(managed=True)
    assert env["UV_PYTHON_INSTALL_DIR"] == hostlayout.PYTHON_DIR
    assert env["UV_PYTHON_PREFERENCE"] == "only-managed"


def test_import_check_pins_the_torch_build() -> None:
    locked = lock.load(REPO_ROOT / "lock")
    cpu = llm_env.import_check(locked.targets["cpu-cp311"])
    assert "v == '2.13.0+cpu'" in cpu
    assert "torch.version.cuda == None" in cpu
    cuda = llm_env.import_check(locked.targets["cu130-cp313"])
    assert "torch.version.cuda == '13.0'" in cuda


def test_pushed_wheels_come_from_the_lock() -> None:
    locked = lock.load(REPO_ROOT / "lock")
    wheels = wheelhouse.pushed_wheels(locked.targets["cpu-cp311"])
    (name,) = wheels
    assert name.startswith("torch-2.13.0+cpu-")
    assert wheels[name][0] == f"/opt/wheels/{name}"


def test_wheelhouse_choice_by_hash_and_its_cache(tmp_path: Path) -> None:
    (tmp_path / "a-1.0-py3-none-any.whl").write_bytes(b"wheel a")
    (tmp_path / "stray-2.0-py3-none-any.whl").write_bytes(b"not in the lock")
    sha_a = hashlib.sha256(b"wheel a").hexdigest()
    requirements = (
        f"a==1.0 \\\n    --hash=sha256:{sha_a}\nb==2.0 \\\n    --hash=sha256:{'0' * 64}\n"
    )
    chosen, missing = wheelhouse._choose(tmp_path, requirements)
    assert chosen == {"a-1.0-py3-none-any.whl": (str(tmp_path / "a-1.0-py3-none-any.whl"), sha_a)}
    assert missing == ["b==2.0"]
    assert (tmp_path / wheelhouse.SHA_INDEX).exists()
    assert wheelhouse.index_wheelhouse(tmp_path)["a-1.0-py3-none-any.whl"] == sha_a


def test_download_command_asks_for_the_hosts_platform(stack: spec.Stack, tmp_path: Path) -> None:
    locked = lock.load(REPO_ROOT / "lock")
    target = locked.targets["cpu-cp311"]
    command = wheelhouse.download_command(stack, target, tmp_path / "req.txt", tmp_path)
    assert "--require-hashes" in command
    assert "--platform=manylinux_2_28_x86_64" in command
    assert "--platform=manylinux_2_17_x86_64" in command  # older manylinux wheels fit too
    assert command[command.index("--python-version") + 1] == "3.11"
    assert command[command.index("--find-links") + 1] == "/opt/wheels"
    assert command[command.index("--cert") + 1] == "/etc/ssl/certs/ca-certificates.crt"


def facts(**changes: object) -> HostFacts:
    return host_facts(**{"memory_gb": 16.0, "systemd": False, **changes})


def test_describe_says_what_the_host_gets() -> None:
    locked = lock.load(REPO_ROOT / "lock")
    verdict = Verdict(target=locked.targets["cpu-cp311"], python="3.11")
    assert preflight.describe(verdict, facts()) == (
        "debian-12, no GPU, python3 3.11: installs cpu-cp311"
    )


def test_offline_hosts_need_their_own_python(
    stack: spec.Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    offline = with_changes(stack, install={"offline": True, "wheelhouse": "/srv/wheels"})
    (problem,) = plan_problems(offline, offline, Verdict(uv_python=True, python="3.11"))
    assert problem.startswith("offline install needs the distribution's python3")
    assert plan_problems(offline, offline, Verdict(python="3.11")) == []


def test_the_venv_marker_records_what_the_end_state_lists(tmp_path: Path) -> None:
    locked = lock.load(REPO_ROOT / "lock")
    target = locked.targets["cpu-cp311"]
    wheel = Wheel(tmp_path / "bloomkit-0.1.0-py3-none-any.whl", "ab" * 32)
    marker = json.loads(llm_env.venv_marker(target, wheel, "3.11"))
    assert marker["venv_id"] == hostlayout.venv_id(target, "ab" * 32)
    assert (marker["target"], marker["lock_sha256"], marker["python"]) == (
        "cpu-cp311",
        target.sha256,
        "3.11",
    )
    assert marker["bloomkit_sha256"] == "ab" * 32
