"""The Ansible roles' generated files and docs/overrides.md equal a fresh render."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from gpurig import ansible_render, overrides, spec
from gpurig.cli import main

REPO_ROOT = Path(__file__).resolve().parents[2]
ROLES = REPO_ROOT / "roles"
PLAYBOOK_ROLES = ("preflight", "system", "python", "nvidia", "llm_env", "smoke")


@pytest.fixture(scope="module")
def rendered() -> dict[str, str]:
    return ansible_render.render()


def test_committed_files_match_a_fresh_render(rendered: dict[str, str]) -> None:
    stale = ansible_render.drifted(rendered, REPO_ROOT)
    assert not stale, f"run `gpurig render`: {', '.join(stale)} drifted"


def test_every_role_has_its_argument_specs(rendered: dict[str, str]) -> None:
    for role in PLAYBOOK_ROLES:
        assert f"roles/gpurig_{role}/meta/argument_specs.yml" in rendered
        assert (ROLES / f"gpurig_{role}" / "tasks" / "main.yml").is_file()


def test_every_knob_has_the_role_prefix_a_comment_and_a_spec(rendered: dict[str, str]) -> None:
    for path, text in rendered.items():
        if not path.endswith("defaults/main.yml"):
            continue
        role = path.split("/")[1]
        defaults = yaml.safe_load(text)
        specs = yaml.safe_load(rendered[f"roles/{role}/meta/argument_specs.yml"])
        options = specs["argument_specs"]["main"]["options"]
        assert set(defaults) <= set(options), role
        lines = text.splitlines()
        for name in defaults:
            assert name.startswith(f"{role}_"), name
            at = next(i for i, line in enumerate(lines) if line.startswith(f"{name}:"))
            assert lines[at - 1].startswith("# "), f"{name} has no comment"
            assert options[name]["description"], name


def test_every_generated_knob_is_read_by_its_role(rendered: dict[str, str]) -> None:
    """No knob that nothing reads: each default is used by a task of its role."""
    for path, text in rendered.items():
        if not path.endswith("defaults/main.yml"):
            continue
        role = path.split("/")[1]
        tasks = "".join(p.read_text() for p in (ROLES / role / "tasks").glob("*.yml"))
        for name in yaml.safe_load(text):
            assert name in tasks, f"{name} is generated and no task of {role} reads it"


def test_one_vocabulary_documented_once(rendered: dict[str, str]) -> None:
    doc = rendered[ansible_render.OVERRIDES_DOC]
    flat = overrides.flatten(spec.load(REPO_ROOT / "stack.yml"))
    for name in [*flat, *(k.name for k in overrides.KNOBS)]:
        assert f"| `{name}` |" in doc, name
    specs = yaml.safe_load(rendered["roles/gpurig_preflight/meta/argument_specs.yml"])
    assert set(flat) <= set(specs["argument_specs"]["main"]["options"])
    # The roles carry no second vocabulary: no role-prefixed copy of a spec field.
    for role in PLAYBOOK_ROLES:
        for task in (ROLES / f"gpurig_{role}").rglob("*.yml"):
            text = task.read_text()
            assert "gpurig_system_venv" not in text, task
            assert "gpurig_system_user" not in text, task


def test_render_check_names_the_drifted_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(ROLES, tmp_path / "roles")
    (tmp_path / "docs").mkdir()
    shutil.copy(REPO_ROOT / ansible_render.OVERRIDES_DOC, tmp_path / "docs")
    monkeypatch.chdir(REPO_ROOT)
    assert main(["render", "--check", "--root", str(tmp_path)]) == 0
    drifted = tmp_path / "roles" / "gpurig_smoke" / "defaults" / "main.yml"
    drifted.write_text(drifted.read_text().replace("gpurig_smoke_reports_dir:", "x:"))
    capsys.readouterr()
    assert main(["render", "--check", "--root", str(tmp_path)]) == 1
    assert str(drifted) in capsys.readouterr().err
    assert main(["render", "--root", str(tmp_path)]) == 0
    assert main(["render", "--check", "--root", str(tmp_path)]) == 0
