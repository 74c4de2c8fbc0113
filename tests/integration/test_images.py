"""The CPU image for real: BuildKit build from a debootstrap base, smoke, lock check, rebuild.

One cold build per session (a couple of minutes on 2 cores; BuildKit's cache makes later
sessions quick), then checks on it; the rebuild after a bloomkit-only change must reuse the
dependency layers. The CUDA image cannot be built here (no registry for its base): its
Dockerfiles are rendered and linted by tests/unit/test_image_render.py.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import docker
import pytest

from gpurig import lock, report, spec
from gpurig.images import build, smoke
from gpurig.images.testing import touched_bloomkit_wheel
from gpurig.sandbox.engine import docker_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
TOUCHED_TAG = "gpurig/bloomkit:test-touched-bloomkit"
# Generous for a 2-core CI runner; the figure itself is printed (benchmarked in bench/).
REBUILD_LIMIT_S = 60.0


@pytest.fixture(scope="module")
def target(stack: spec.Stack, locked: lock.Lock) -> lock.Target:
    return build.pick_target(stack, locked, "cpu")


@pytest.fixture(scope="module")
def cpu_image(
    engine: docker.DockerClient, stack: spec.Stack, locked: lock.Lock, target: lock.Target
) -> build.BuildResult:
    result = build.build(stack, locked, target, echo=lambda line: None)
    print(f"\nCPU image: {result.size_bytes / 1e9:.2f} GB, built in {result.seconds:.0f} s")
    return result


def test_cpu_image_is_tagged_and_labelled(
    engine: docker.DockerClient, cpu_image: build.BuildResult, locked: lock.Lock
) -> None:
    target = locked.targets[cpu_image.target]
    image = engine.images.get(build.image_tag(locked, target))
    assert image.id == cpu_image.image_id
    labels = image.labels
    assert labels["io.gpurig.target"] == target.name
    assert labels["io.gpurig.torch"] == target.torch == "2.13.0+cpu"
    assert labels["io.gpurig.lock-sha256"] == target.sha256
    assert f"transformers=={target.packages['transformers']}" in labels["io.gpurig.packages"]
    assert labels["org.opencontainers.image.base.name"] == "gpurig/base:bookworm"
    # 1.6 GB with datasets (pyarrow, pandas) in the lock: nothing is cut out of any package.
    assert cpu_image.size_bytes < 1.6e9, "the CPU image must stay at 1.6 GB or less"


def test_cpu_image_runs_as_non_root_with_the_locked_versions(
    engine: docker.DockerClient, cpu_image: build.BuildResult, locked: lock.Lock
) -> None:
    check = smoke.check_image(engine, cpu_image.image_id, locked)
    assert check.problems == []
    assert check.user not in ("", "0")
    target = locked.targets[cpu_image.target]
    assert {k: v for k, v in check.packages.items() if k != "bloomkit"} == target.packages
    whoami = engine.containers.run(
        cpu_image.image_id, ["-un"], entrypoint=["id"], network_mode="none", remove=True
    )
    assert whoami.decode().strip() == "gpurig"


def test_cpu_image_keeps_no_package_cache(
    engine: docker.DockerClient, cpu_image: build.BuildResult
) -> None:
    script = (
        "find /var/lib/apt/lists /root/.cache /tmp -mindepth 1 2>/dev/null; "
        "find /var/cache/apt -name '*.deb'; command -v uv || true"
    )
    out = engine.containers.run(
        cpu_image.image_id,
        ["-c", script],
        entrypoint=["sh"],
        user="0",
        network_mode="none",
        remove=True,
    )
    assert out.decode().split() == [], out.decode()


def test_cpu_image_smoke_passes(
    engine: docker.DockerClient,
    cpu_image: build.BuildResult,
    stack: spec.Stack,
    locked: lock.Lock,
    tmp_path: Path,
) -> None:
    row, path = smoke.smoke_image(
        cpu_image.tags[0], stack, locked, reports_dir=tmp_path, client=engine, echo=print
    )
    assert path.exists()
    assert row.verdict == report.PASS, row.failures
    assert row.torch == "2.13.0+cpu"


def test_torch_check_fails_the_build_on_the_wrong_variant(
    engine: docker.DockerClient, cpu_image: build.BuildResult, target: lock.Target
) -> None:
    """The builder stage's assertion: a lock that wanted CUDA 13.0 torch cannot build."""
    context = build.CONTEXTS / target.name
    command = [build.buildkit_client(), "build", "--network", "host", "--progress", "plain"]
    command += ["--target", "builder", "--build-arg", "TORCH_CUDA=13.0", str(context)]
    env = {**os.environ, **docker_env(), "DOCKER_BUILDKIT": "1"}
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode != 0
    assert "the lock wants 2.13.0+cpu (CUDA 13.0)" in run.stdout + run.stderr


def test_bloomkit_change_reuses_the_dependency_layers(
    engine: docker.DockerClient,
    cpu_image: build.BuildResult,
    stack: spec.Stack,
    locked: lock.Lock,
    target: lock.Target,
    tmp_path: Path,
) -> None:
    wheel = touched_bloomkit_wheel(tmp_path)
    try:
        again = build.build(
            stack, locked, target, tags=[TOUCHED_TAG], wheel=wheel, echo=lambda line: None
        )
        print(f"\nrebuild after a bloomkit change: {again.seconds:.1f} s")
        assert again.image_id != cpu_image.image_id
        assert again.step("uv pip sync").cached
        assert again.step("COPY --from=builder").cached
        assert not again.step("uv pip install").cached  # bloomkit's own layer
        before = engine.images.get(cpu_image.image_id).attrs["RootFS"]["Layers"]
        after = engine.images.get(again.image_id).attrs["RootFS"]["Layers"]
        # One layer differs, bloomkit's own (the last); the venv and all below it are shared.
        assert len(before) == len(after)
        assert after[:-1] == before[:-1]
        assert after[-1] != before[-1]
        assert again.seconds < REBUILD_LIMIT_S
        labels = engine.images.get(again.image_id).labels
        assert labels["io.gpurig.bloomkit-sha256"] == wheel.sha256
    finally:
        with contextlib.suppress(docker.errors.ImageNotFound):
            engine.images.remove(TOUCHED_TAG)
