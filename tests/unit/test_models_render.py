"""The models step as both front ends render it: the pyinfra operation (facts in, commands
out), the Ansible tasks' conditions, and the smoke test reading a listed model offline."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from pyinfra.api.command import FunctionCommand, StringCommand
from pyinfra.context import ctx_host

from gpurig import spec
from gpurig.operations import models as models_op
from gpurig.plan import converged, models, smoke
from gpurig.plan.models import ModelFile, ModelUpload, PushedModel
from helpers.fake_ssh import FakeTransport

REPO_ROOT = Path(__file__).resolve().parents[2]
ROLE_TASKS = REPO_ROOT / "roles/gpurig_llm_env/tasks/main.yml"
TINY = {"repo": "org/tiny", "revision": "a" * 40, "source": "controller"}


class FakeHost:
    def __init__(self, lines: list[str]) -> None:
        self.lines, self.noops = lines, []  # type: list[str], list[str]

    def get_fact(self, cls: type, **_: Any) -> list[str]:
        assert cls is models_op.ModelsCheck
        return self.lines

    def noop(self, text: str) -> None:
        self.noops.append(text)


def _stack(**extra: Any) -> spec.Stack:
    data = spec.load(REPO_ROOT / "stack.yml").model_dump()
    return spec.Stack.model_validate({**data, "models": [TINY], **extra})


def _step() -> models.Models:
    files = [ModelFile("config.json", "c" * 40, 2), ModelFile("model.safetensors", "d" * 64, 9)]
    pushed = PushedModel("org/tiny", "a" * 40, files, {"c" * 40: "/c", "d" * 64: "/d"})
    return models.step(_stack(), [pushed])


def _run(lines: list[str]) -> tuple[list[Any], FakeHost]:
    fake = FakeHost(lines)
    with ctx_host.use(fake):
        commands = list(models_op.placed._inner(step=_step()))
    return commands, fake


def test_a_converged_host_is_a_noop() -> None:
    commands, fake = _run(["checked"])
    assert commands == []
    assert fake.noops == [f"1 model(s) in {_step().hub_dir} match their hashes"]


def test_only_the_missing_files_are_pushed_then_placed() -> None:
    commands, _ = _run(["need models--org--tiny@" + "d" * 64, "checked"])
    assert isinstance(commands[0], StringCommand)
    assert "install -d -m 0700" in str(commands[0])
    upload = commands[1]
    assert isinstance(upload, FunctionCommand)
    assert [u.label for u in upload.args[0]] == ["org/tiny/model.safetensors"]
    assert commands[2] == _step().script


def test_a_check_cut_short_still_runs_the_script() -> None:
    commands, _ = _run(["need models--org--tiny@" + "d" * 64])  # no `checked` line
    assert commands == [_step().script]


def test_the_converged_probe_needs_the_checks_last_line() -> None:
    step = _step()
    assert step.id in converged.converged([step], [], f"@@gpurig-step {step.id}\nchecked\n")
    assert converged.converged([step], [], f"@@gpurig-step {step.id}\n") == []
    assert converged.converged([step], [], f"@@gpurig-step {step.id}\nlink org/tiny\nchecked") == []


def test_the_ansible_tasks_push_only_what_the_check_names() -> None:
    tasks = [t for t in yaml.safe_load(ROLE_TASKS.read_text()) if "llm_env.models" in str(t)]
    names = [t["name"] for t in tasks]
    assert names == [
        "Check the models in the HF cache",
        "Make the folder pushed model files wait in",
        "Push model files the hosts cannot download",
        "Place the models in the HF cache",
    ]
    push = tasks[2]
    assert push["ansible.builtin.copy"]["dest"].endswith("{{ _gpurig_llm_env_model.name }}")
    assert "'need ' ~ _gpurig_llm_env_model.name" in push["when"]
    assert "!= ['checked']" in " ".join(tasks[3]["when"])


def test_smoke_reads_a_listed_model_offline() -> None:
    listed = smoke.step(_stack(smoke={"model": "org/tiny"}), has_gpu=False)
    assert "HF_HUB_OFFLINE=1 bloomkit smoke" in listed.command
    other = smoke.step(_stack(smoke={"model": "org/other"}), has_gpu=False)
    assert "HF_HUB_OFFLINE=1 bloomkit smoke" not in other.command  # the warm-up is always offline


@pytest.mark.skipif(os.geteuid() != 0, reason="the receiving script runs as root")
def test_a_streamed_file_is_hashed_on_the_host_and_a_wrong_one_stops_the_push(
    tmp_path: Path,
) -> None:
    data = b'{"model_type": "bloom"}\n'
    src = tmp_path / "config.json"
    src.write_bytes(data)
    blob = hashlib.sha256(data).hexdigest()
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    good = ModelUpload(f"models--org--tiny@{blob}", str(src), len(data), "org/tiny/config.json")
    seen: list[tuple[int, int]] = []
    got = models_op._stream(FakeTransport(), good, str(incoming), lambda d, t: seen.append((d, t)))  # type: ignore[arg-type]
    assert got is None
    assert (incoming / good.name).read_bytes() == data
    assert (incoming / f"{good.name}{models.HASHED}").exists()
    assert seen[-1] == (len(data), len(data))
    wrong = ModelUpload(f"models--org--tiny@{'e' * 64}", str(src), len(data), "org/tiny/x")
    got = models_op._stream(FakeTransport(), wrong, str(incoming), None)  # type: ignore[arg-type]
    assert got is not None
    assert f"the host read {blob} (exit 1" in got
    assert not (incoming / f"{wrong.name}{models.HASHED}").exists()
