"""The image is planned as a host, and every value the Dockerfile holds is quoted for it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gpurig import hostlayout, spec
from gpurig.bloomkit_wheel import Wheel
from gpurig.errors import GpurigError
from gpurig.images import render
from gpurig.lock import Lock
from gpurig.plan import ControllerFiles
from gpurig.plan import build as build_host_plan
from gpurig.plan import image as image_plan
from gpurig.plan.steps import ServiceUser, Venv
from gpurig.preflight import evaluate
from helpers.facts import host_facts

REPO = Path(__file__).resolve().parents[2]


def _with_host(stack: spec.Stack, **fields: str) -> spec.Stack:
    """The stack with host.* values the schema would refuse: the renderer must hold anyway."""
    host = stack.host.model_construct(**{**stack.host.model_dump(), **fields})
    return stack.model_copy(update={"host": host})


@pytest.mark.parametrize(
    ("os_id", "version", "python3", "uv_python"),
    [("debian", "12", "3.11", False), ("ubuntu", "24.04", "3.12", True)],
)
def test_the_image_gets_what_a_host_of_its_distribution_gets(
    stack: spec.Stack,
    locked: Lock,
    tmp_path: Path,
    os_id: str,
    version: str,
    python3: str,
    uv_python: bool,
) -> None:
    target = locked.targets["cpu-cp311"]
    facts = host_facts(os_id=os_id, os_version=version, python3=python3)
    verdict = evaluate(facts, stack, locked)
    verdict.target, verdict.problems = target, []
    wheel = Wheel(tmp_path / "bloomkit-0.1.0-py3-none-any.whl", "ab" * 32)
    files = ControllerFiles(wheel, (str(tmp_path / "uv"), "cd" * 32), "ef" * 32, "", [])
    host = build_host_plan(stack, facts, verdict, files)
    user = next(s for s in host.steps() if isinstance(s, ServiceUser))
    venv = next(s for s in host.steps() if isinstance(s, Venv))

    image = image_plan.build(stack, target, f"{os_id}-{version}")
    assert (
        (image.python, image.uv_python)
        == (verdict.python, verdict.uv_python)
        == ("3.11", uv_python)
    )
    assert (image.user, image.home) == (user.user, user.home)
    assert image.venv == venv.link
    assert image.hf_home == stack.host.hf_home
    assert image.report == host.stack.host.report
    assert image.python_dir == hostlayout.PYTHON_DIR


def test_a_python_source_given_replaces_the_distributions(stack: spec.Stack, locked: Lock) -> None:
    target = locked.targets["cpu-cp311"]
    assert image_plan.build(stack, target, "debian-12", source="uv").uv_python
    assert not image_plan.build(stack, target, None, source="system").uv_python
    assert image_plan.build(stack, target, None).uv_python  # an unknown base: uv brings it


def test_host_paths_come_from_the_plan(stack: spec.Stack, locked: Lock) -> None:
    moved = _with_host(stack, venv="/srv/llm/venv", user="llm", hf_home="/srv/hf")
    item = render.render_target(moved, locked, locked.targets["cpu-cp311"])
    assert "ARG VENV=/srv/llm/venv\n" in item.text
    assert "ARG APP_USER=llm\n" in item.text
    assert "ARG HF_HOME=/srv/hf\n" in item.text
    assert f"ENV UV_PYTHON_INSTALL_DIR={hostlayout.PYTHON_DIR}\n" in item.text
    assert f"ARG STATE_DIR={hostlayout.STATE_DIR}\n" in item.text


HOSTILE = '/opt/$(touch /tmp/x)/"v env`id`\\'


def test_a_hostile_value_stays_one_quoted_word(stack: spec.Stack, locked: Lock) -> None:
    plain = render.render_target(stack, locked, locked.targets["cpu-cp311"])
    item = render.render_target(
        _with_host(stack, venv=HOSTILE, report=HOSTILE + "/r.json"),
        locked,
        locked.targets["cpu-cp311"],
    )
    assert 'ARG VENV="/opt/\\$(touch /tmp/x)/\\"v env`id`\\\\"\n' in item.text
    assert 'CMD ["smoke", "--json", "/opt/$(touch /tmp/x)/\\"v env`id`\\\\/r.json"]\n' in item.text
    assert item.build_args["VENV"] == HOSTILE  # --build-arg values are literal: unquoted
    # The same instructions, line for line: the value added none.
    assert len(item.text.splitlines()) == len(plain.text.splitlines())
    # Inside double quotes the Dockerfile reads `\`, `"` and `$` as the shell does (a backquote
    # is plain text to it, not to sh: left out here).
    value = HOSTILE.replace("`", "")
    quoted = render.arg_value("VENV", value)
    out = subprocess.run(["sh", "-c", f"printf %s {quoted}"], capture_output=True, text=True)
    assert out.stdout == value


@pytest.mark.parametrize("field", ["venv", "hf_home", "user", "report"])
def test_a_line_break_in_a_value_is_refused(stack: spec.Stack, locked: Lock, field: str) -> None:
    hostile = _with_host(stack, **{field: "/opt/v\nRUN touch /tmp/x"})
    with pytest.raises(GpurigError, match="control character"):
        render.render_target(hostile, locked, locked.targets["cpu-cp311"])


def test_the_templates_own_paths_are_a_hosts(stack: spec.Stack, locked: Lock) -> None:
    # COPY destinations stay literal in the template (hadolint reads the template and wants
    # them absolute); they must be the paths the plan gives a host.
    image = image_plan.build(stack, locked.targets["cpu-cp311"], "debian-12")
    text = render.TEMPLATE.read_text()
    assert f"COPY ca/ {image.ca_dir}/\n" in text
    assert "ENV SSL_CERT_FILE={{ca_bundle}}" in text
    assert f"COPY uv {hostlayout.UV_BIN}\n" in text
    assert f"source={Path(hostlayout.UV_BIN).parent},target=/mnt/uv " in text
