"""Dockerfiles rendered from the spec and the lock, without an engine: every target renders
and lints, the committed copies match, outside inputs are commented build args."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import sys
from pathlib import Path

from gpurig import spec
from gpurig.images import render
from gpurig.lock import Lock, Target

REPO = Path(__file__).resolve().parents[2]
HADOLINT = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
    "hadolint"
)


def _variant(target: Target, variant: str) -> Target:
    """The same target as if the lock had another CUDA variant of it."""
    name = f"{variant}-cp{target.python.replace('.', '')}"
    return dataclasses.replace(target, name=name, variant=variant, file=f"{name}.txt")


def _hadolint(paths: list[Path]) -> subprocess.CompletedProcess[str]:
    assert HADOLINT, "hadolint is missing: `make venv` installs it (dev dependency group)"
    return subprocess.run([HADOLINT, *map(str, paths)], capture_output=True, text=True)


def test_committed_dockerfiles_match_a_fresh_render(stack: spec.Stack, locked: Lock) -> None:
    files = render.render(stack, locked)
    assert {f.path for f in files} == {Path(f"images/{t}/Dockerfile") for t in locked.targets}
    assert render.drifted(files, REPO) == [], "run `gpurig image render`"
    assert render.stray(files, REPO) == []


def test_every_field_is_filled_and_no_syntax_line(stack: spec.Stack, locked: Lock) -> None:
    for item in render.render(stack, locked):
        assert "{{" not in item.text
        assert not re.search(r"^#\s*syntax\s*=", item.text, re.MULTILINE | re.IGNORECASE)
        for key, value in item.build_args.items():
            assert re.search(rf"^ARG {key}=", item.text, re.MULTILINE), key
            if key not in ("PACKAGES",):
                assert f"ARG {key}={value}\n" in item.text


def test_cpu_target_defaults(stack: spec.Stack, locked: Lock) -> None:
    item = render.render_target(stack, locked, locked.targets["cpu-cp311"])
    assert item.build_args["BASE_IMAGE"] == "gpurig/base:bookworm"
    assert item.build_args["PYTHON_SOURCE"] == "system"  # bookworm's python3 is 3.11
    assert item.build_args["TORCH_CUDA"] == "none"
    assert item.build_args["TORCH_VERSION"] == "2.13.0+cpu"
    assert "transformers==5.23.0" in item.build_args["PACKAGES"].split()
    assert "NVIDIA_VISIBLE_DEVICES=void" in item.text


def test_cuda_target_defaults(stack: spec.Stack, locked: Lock) -> None:
    item = render.render_target(stack, locked, locked.targets["cu130-cp313"])
    assert item.build_args["BASE_IMAGE"] == "nvidia/cuda:13.0.2-base-ubuntu24.04"
    assert item.build_args["PYTHON_SOURCE"] == "uv"  # Ubuntu 24.04 ships 3.12, not 3.13
    assert item.build_args["TORCH_CUDA"] == "13.0"
    assert item.build_args["TORCH_VERSION"] == "2.13.0"
    assert "NVIDIA_VISIBLE_DEVICES=all" in item.text


def test_a_given_base_decides_where_python_comes_from(stack: spec.Stack, locked: Lock) -> None:
    cu130 = locked.targets["cu130-cp311"]
    on_debian = render.render_target(stack, locked, cu130, base="gpurig/base:bookworm")
    assert on_debian.build_args["PYTHON_SOURCE"] == "system"
    mirror = "mirror.example.com/library/python:3.11-slim-bookworm"
    assert render.os_of_image(mirror) == "debian-12"
    assert render.os_of_image("registry.example.com/nvidia/cuda:13.0.2-base-ubuntu24.04") == (
        "ubuntu-24.04"
    )
    assert render.os_of_image("example.com/custom:1") is None
    assert render.python_source(cu130, None) == "uv"


def test_template_lints() -> None:
    result = _hadolint([render.TEMPLATE])
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_cuda_variant_renders_and_lints(
    stack: spec.Stack, locked: Lock, tmp_path: Path
) -> None:
    """Each CUDA target of the lock, and the CUDA variants a spec could add, render and lint."""
    cuda = [t for t in locked.targets.values() if t.variant != "cpu"]
    assert cuda, "the lock has no CUDA target"
    locked_variants = {t.variant for t in cuda}
    extra = [_variant(cuda[0], v) for v in ("cu126", "cu128", "cu129") if v not in locked_variants]
    paths = []
    for target in [*cuda, *extra]:
        item = render.render_target(stack, locked, target)
        assert item.build_args["BASE_IMAGE"].startswith("nvidia/cuda:")
        wanted = target.variant[2:4] + "." + target.variant[4]  # cu128 -> 12.8
        assert item.build_args["TORCH_CUDA"] == wanted
        assert f"nvidia/cuda:{wanted}." in item.build_args["BASE_IMAGE"]
        path = tmp_path / target.name / "Dockerfile"
        path.parent.mkdir()
        path.write_text(item.text)
        paths.append(path)
    result = _hadolint(paths)
    assert result.returncode == 0, result.stdout + result.stderr


def test_outside_inputs_are_commented_build_args() -> None:
    text = render.TEMPLATE.read_text()
    head = text.split("\nFROM ", 1)[0].splitlines()
    for name in ("BASE_IMAGE", "PYTHON_SOURCE", "PYTHON_MIRROR", "INDEX_URL", "EXTRA_INDEX_URL"):
        index = next(i for i, line in enumerate(head) if line.startswith(f"ARG {name}="))
        above = index - 1
        while head[above].startswith("ARG "):  # a group of args under one comment
            above -= 1
        assert head[above].startswith("# "), f"ARG {name} has no comment"
    assert text.count("FROM ${BASE_IMAGE}") == 1  # every stage starts from the one base arg


def test_runtime_is_non_root_and_keeps_no_caches() -> None:
    text = render.TEMPLATE.read_text()
    runtime = text.split("AS runtime", 1)[1]
    assert re.search(r"^USER \$\{APP_UID\}:\$\{APP_UID\}$", runtime, re.MULTILINE)
    assert "ARG APP_UID=10001" in text
    assert "apt-get clean" in text
    assert "rm -rf /var/lib/apt/lists/*" in text
    assert "--mount=type=cache,id=gpurig-uv,target=/root/.cache/uv" in text
    assert "UV_COMPILE_BYTECODE=1" in runtime  # bloomkit's own layer is compiled too
    # The dependency step reads deps/ only; app/ (bloomkit) is read after it, in the runtime.
    builder = text.split("AS builder", 1)[1].split("AS runtime", 1)[0]
    assert "source=deps" in builder
    assert "source=app" not in builder


def test_render_write_and_check(stack: spec.Stack, locked: Lock, tmp_path: Path) -> None:
    files = render.render(stack, locked)
    assert len(render.write(files, tmp_path)) == len(files)
    assert render.write(files, tmp_path) == []
    (tmp_path / "images/old-cp39").mkdir()
    (tmp_path / "images/old-cp39/Dockerfile").write_text("FROM scratch\n")
    assert render.stray(files, tmp_path) == [Path("images/old-cp39/Dockerfile")]
    first = tmp_path / files[0].path
    first.write_text(first.read_text() + "# edited\n")
    assert render.drifted(files, tmp_path) == [files[0].path]
