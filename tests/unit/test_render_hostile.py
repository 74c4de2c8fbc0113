"""Rendering stays safe even for values the schema would refuse (tests/unit/test_spec_hostile.py
shows it refuses them): each renderer quotes for its own language, so a value that slipped
past validation is still one literal word. Values are planted with model_copy, which skips
validation, and the rendered text is run where that is safe to do here.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gpurig import spec
from gpurig.errors import GpurigError
from gpurig.plan import python, smoke, system
from gpurig.plan.steps import CHANGED
from gpurig.plan.venv import build_script

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PYTHON = ["-e", f"ansible_python_interpreter={sys.executable}"]


@pytest.fixture
def stack() -> spec.Stack:
    return spec.parse((REPO_ROOT / "stack.yml").read_text())


def planted(stack: spec.Stack, **host: str) -> spec.Stack:
    return stack.model_copy(update={"host": stack.host.model_copy(update=host)})


def run_sh(script: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        ["sh", "-c", script], capture_output=True, text=True, timeout=30, env=env, check=True
    )
    return done.stdout


def test_the_login_profile_keeps_a_hostile_venv_path_literal(
    stack: spec.Stack, tmp_path: Path
) -> None:
    mark = tmp_path / "ran"
    venv = f"/opt/$(touch {mark})/`touch {mark}`/v'e\"nv"
    script = tmp_path / "gpurig.sh"
    script.write_text(python.profile_script(planted(stack, venv=venv)))
    path = run_sh(f'. {script}; . {script}; printf %s "$PATH"', {"PATH": "/usr/bin:/bin"})
    assert path == f"{venv}/bin:/usr/bin:/bin"  # literal, and once however often sourced
    assert not mark.exists()


def test_the_environment_file_keeps_hostile_values_literal(
    stack: spec.Stack, tmp_path: Path
) -> None:
    mark = tmp_path / "ran"
    hf_home = f"/var/cache/$(touch {mark});touch {mark}/it's"
    env_file = tmp_path / "environment"
    env_file.write_text(system.environment_file(planted(stack, hf_home=hf_home)))
    out = run_sh(f'set -a; . {env_file}; set +a; printf %s "$HF_HOME"', {"PATH": "/usr/bin:/bin"})
    assert out == hf_home
    assert not mark.exists()


@pytest.mark.parametrize(
    "proxy",
    [
        'http://p:3128";\nDPkg::Pre-Invoke {"touch /tmp/x"',
        "http://p:3128; DPkg::Pre-Invoke::=x",
        "http://p:3128}",
    ],
)
def test_an_apt_proxy_apt_cannot_quote_is_refused(proxy: str) -> None:
    with pytest.raises(GpurigError, match=r"network\.proxy"):
        system.apt_proxy(proxy)


def test_apt_reads_a_hostile_package_name_as_a_name() -> None:
    hostile = "-oDPkg::Pre-Invoke::=touch /tmp/x"
    words = shlex.split(system.apt_install(["git", hostile]).split(" && ")[1])
    assert words[-3:] == ["--", "git", hostile]  # after `--`, one word: never an option


def test_the_smoke_command_keeps_a_hostile_report_path_literal(stack: spec.Stack) -> None:
    report = "/var/lib/$(touch x)/r;id.json"
    step = smoke.step(planted(stack, report=report, user="gpurig"), has_gpu=False)
    first = step.command.split("; timeout ")[0]
    assert shlex.split(first) == ["rm", "-f", report]
    inner = shlex.split(step.command.split("-c ", 1)[1].rsplit(";", 1)[0])[0]
    assert shlex.split(inner)[:4] == ["bloomkit", "smoke", "--json", report]


def test_the_venv_script_keeps_hostile_paths_literal(tmp_path: Path) -> None:
    mark = tmp_path / "ran"
    odd = tmp_path / f"$(touch {mark})" / "it's `touch {mark}`"
    script = build_script(
        link=f"{odd}/venv",
        venvs_dir=f"{odd}/venvs",
        venv_dir=f"{odd}/venvs/cpu-cp311-0123",
        requirements_path=f"{odd}/req;touch {mark}.txt",
        python=sys.executable,
        marker='{"venv_id": "$(touch x)"}',
        check="import sys",
        source_args=["--offline", "--find-links", f"{odd}/$(touch {mark})"],
        env={"UV_CACHE_DIR": f"{odd}/$(touch {mark})"},
        env_file=None,
    )
    out = run_sh(script, {**os.environ, "GPURIG_DRY_RUN": "1"})
    assert f"{CHANGED}build {odd}/venvs/cpu-cp311-0123" in out
    assert not mark.exists()


PLAYBOOK = """\
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Plan, as the preflight plugin returns it
      planted_fact: {}
    - name: Render a plan value the way the roles do
      ansible.builtin.copy:
        content: "{{ ansible_facts.gpurig.steps['system.environment'].content }}"
        dest: "{{ out }}"
        mode: "0600"
"""

PLUGIN = """\
from ansible.plugins.action import ActionBase


class ActionModule(ActionBase):
    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        step = {"content": %r}
        result["ansible_facts"] = {"gpurig": {"steps": {"system.environment": step}}}
        return result
"""


def test_ansible_never_templates_what_the_plan_plugin_returns(tmp_path: Path) -> None:
    """The roles read every spec value from the plan fact the preflight plugin returns
    (`{{ ansible_facts.gpurig.steps[...] }}`): a template inside it stays text."""
    mark, out = tmp_path / "ran", tmp_path / "out"
    hostile = f"HF_HOME={{{{ lookup('ansible.builtin.pipe', 'touch {mark}') }}}}\n"
    plugins = tmp_path / "action"
    plugins.mkdir()
    (plugins / "planted_fact.py").write_text(PLUGIN % hostile)
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    env = {
        **os.environ,
        "ANSIBLE_ACTION_PLUGINS": str(plugins),
        "ANSIBLE_HOME": str(tmp_path / "home"),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "home" / "tmp"),
        "ANSIBLE_CONFIG": str(tmp_path / "ansible.cfg"),  # none: not the repository's
        "ANSIBLE_LOCALHOST_WARNING": "false",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false",
    }
    done = subprocess.run(
        [
            str(BIN / "ansible-playbook"),
            "-i",
            "localhost,",
            "-e",
            f"out={out}",
            *PYTHON,
            "play.yml",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, textwrap.shorten(done.stdout + done.stderr, 2000)
    assert out.read_text() == hostile
    assert not mark.exists()
