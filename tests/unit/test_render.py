"""The Ansible roles' generated files: committed copies equal a fresh render of the spec."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from gpurig import ansible_render, lock, spec
from gpurig.cli import main

REPO_ROOT = Path(__file__).resolve().parents[2]
ROLES = REPO_ROOT / "roles"


@pytest.fixture(scope="module")
def rendered() -> dict[str, str]:
    stack = spec.load(REPO_ROOT / "stack.yml")
    return ansible_render.render(stack, lock.load(REPO_ROOT / "lock"))


def test_committed_files_match_a_fresh_render(rendered: dict[str, str]) -> None:
    stale = ansible_render.drifted(rendered, ROLES)
    assert not stale, f"run `gpurig render`: {', '.join(stale)} drifted from stack.yml and lock/"


def test_every_role_has_its_defaults_and_argument_specs(rendered: dict[str, str]) -> None:
    for role in ("preflight", "system", "python", "nvidia", "llm_env", "smoke"):
        assert f"gpurig_{role}/defaults/main.yml" in rendered
        assert f"gpurig_{role}/meta/argument_specs.yml" in rendered
        assert (ROLES / f"gpurig_{role}" / "tasks" / "main.yml").is_file()


def test_every_knob_has_the_role_prefix_a_comment_and_a_spec(rendered: dict[str, str]) -> None:
    for path, text in rendered.items():
        if not path.endswith("defaults/main.yml"):
            continue
        role = path.split("/")[0]
        defaults = yaml.safe_load(text)
        specs = yaml.safe_load(rendered[f"{role}/meta/argument_specs.yml"])
        options = specs["argument_specs"]["main"]["options"]
        assert set(defaults) == set(options), role
        lines = text.splitlines()
        for name in defaults:
            assert name.startswith(f"{role}_"), name
            at = next(i for i, line in enumerate(lines) if line.startswith(f"{name}:"))
            assert lines[at - 1].startswith("# "), f"{name} has no comment"
            assert options[name]["description"], name


def test_defaults_carry_the_spec_values(rendered: dict[str, str]) -> None:
    stack = spec.load(REPO_ROOT / "stack.yml")
    system = yaml.safe_load(rendered["gpurig_system/defaults/main.yml"])
    nvidia = yaml.safe_load(rendered["gpurig_nvidia/defaults/main.yml"])
    llm_env = yaml.safe_load(rendered["gpurig_llm_env/defaults/main.yml"])
    assert system["gpurig_system_user"] == stack.host.user
    assert system["gpurig_system_venv"] == stack.host.venv
    assert nvidia["gpurig_nvidia_driver_branch"] == stack.nvidia.driver_branch
    locked = lock.load(REPO_ROOT / "lock")
    assert llm_env["gpurig_llm_env_targets"] == {n: t.sha256 for n, t in locked.targets.items()}


def test_render_check_names_the_drifted_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    roles = tmp_path / "roles"
    shutil.copytree(ROLES, roles)
    monkeypatch.chdir(REPO_ROOT)
    assert main(["render", "--check", "--roles", str(roles)]) == 0
    drifted = roles / "gpurig_smoke" / "defaults" / "main.yml"
    drifted.write_text(drifted.read_text().replace("gpurig_smoke_quick: false", "x: 1"))
    capsys.readouterr()
    assert main(["render", "--check", "--roles", str(roles)]) == 1
    assert str(drifted) in capsys.readouterr().err
    assert main(["render", "--roles", str(roles)]) == 0
    assert main(["render", "--check", "--roles", str(roles)]) == 0


def test_a_changed_spec_changes_the_render(tmp_path: Path) -> None:
    stack = spec.load(REPO_ROOT / "stack.yml")
    locked = lock.load(REPO_ROOT / "lock")
    changed = stack.model_copy(update={"host": stack.host.model_copy(update={"user": "llm"})})
    files = ansible_render.render(changed, locked)
    assert "gpurig_system_user: llm" in files["gpurig_system/defaults/main.yml"]
    assert ansible_render.render_sha256(changed, locked) != ansible_render.render_sha256(
        stack, locked
    )
