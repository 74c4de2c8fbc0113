"""Image builds without an engine: the target and tag, the build context, the BuildKit client
choice, reading its progress, and the proxy reaching `docker build`."""

from __future__ import annotations

import dataclasses
import os
import re
import zipfile
from pathlib import Path

import pytest

from gpurig import spec
from gpurig.bloomkit_wheel import Wheel
from gpurig.errors import GpurigError, UsageError
from gpurig.images import build
from gpurig.lock import Lock

REPO = Path(__file__).resolve().parents[2]


# ---- choosing, tagging ----------------------------------------------------------------------


def test_pick_target(stack: spec.Stack, locked: Lock) -> None:
    assert build.pick_target(stack, locked, "cpu").name == "cpu-cp311"
    assert build.pick_target(stack, locked, "cuda").name == "cu130-cp311"
    assert build.pick_target(stack, locked, "cu130", "3.13").name == "cu130-cp313"
    with pytest.raises(UsageError, match=r"no cpu target for Python 3\.13"):
        build.pick_target(stack, locked, "cpu", "3.13")


def test_tag_follows_spec_and_lock(locked: Lock) -> None:
    target = locked.targets["cpu-cp311"]
    tag = build.image_tag(locked, target)
    assert re.fullmatch(r"gpurig/bloomkit:cpu-cp311-[0-9a-f]{12}", tag)
    assert build.image_tag(locked, target) == tag
    relocked = dataclasses.replace(target, sha256="0" * 64)
    assert build.image_tag(locked, relocked) != tag
    respecced = dataclasses.replace(locked, spec_sha256="1" * 64)
    assert build.image_tag(respecced, target) != tag


# ---- the build context ----------------------------------------------------------------------


def _wheel(path: Path, comment: str) -> Wheel:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("bloomkit/__init__.py", f"# {comment}\n")
    import hashlib

    return Wheel(path, hashlib.sha256(path.read_bytes()).hexdigest())


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_context_holds_only_the_inputs_and_keeps_deps_apart(
    stack: spec.Stack, locked: Lock, tmp_path: Path
) -> None:
    target = locked.targets["cpu-cp311"]
    if not all(Path(f, n).is_file() for n, (f, _) in target.local_wheels.items()):
        pytest.skip("the lock's local wheels (/opt/wheels) are not on this machine")
    first = _wheel(tmp_path / "bloomkit-0.1.0-py3-none-any.whl", "one")
    context = tmp_path / "context"
    build.assemble_context(stack, locked, target, first, "FROM scratch\n", context)
    files = _tree(context)
    assert set(files) == {
        "Dockerfile",
        "uv",
        "ca/gpurig-ca.crt",
        "deps/requirements.txt",
        *(f"deps/wheels/{name}" for name in target.local_wheels),
        "app/requirements.txt",
        f"app/{first.path.name}",
    }
    assert (context / "deps/requirements.txt").read_text() == locked.requirements(
        target
    ).read_text()
    assert (context / "app/requirements.txt").read_text() == first.requirement + "\n"
    # Assembling again changes nothing; another bloomkit wheel changes app/ only.
    build.assemble_context(stack, locked, target, first, "FROM scratch\n", context)
    assert _tree(context) == files
    (tmp_path / "second").mkdir()
    second = _wheel(tmp_path / "second" / first.path.name, "two")
    build.assemble_context(stack, locked, target, second, "FROM scratch\n", context)
    after = _tree(context)
    changed = {k for k in files if after.get(k) != files[k]} | (set(after) - set(files))
    assert changed <= {f"app/{first.path.name}", "app/requirements.txt"}
    assert "app/requirements.txt" in changed


def test_context_without_ca_bundle(stack: spec.Stack, locked: Lock, tmp_path: Path) -> None:
    target = dataclasses.replace(locked.targets["cu130-cp311"], local_wheels={})
    bare = stack.model_copy(update={"network": spec.Network()})
    wheel = _wheel(tmp_path / "bloomkit-0.1.0-py3-none-any.whl", "x")
    context = build.assemble_context(bare, locked, target, wheel, "FROM scratch\n", tmp_path / "c")
    assert list((context / "ca").iterdir()) == []
    assert list((context / "deps/wheels").iterdir()) == []
    missing = stack.model_copy(update={"network": spec.Network(ca_bundle="/nonexistent.pem")})
    with pytest.raises(UsageError, match="ca_bundle"):
        build.assemble_context(missing, locked, target, wheel, "", tmp_path / "c")


# ---- the BuildKit client --------------------------------------------------------------------


def _fake_docker(folder: Path, version: str, buildx: bool) -> Path:
    folder.mkdir(parents=True)
    path = folder / "docker"
    path.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = --version ]; then echo "Docker version {version}, build abc"; exit 0; fi\n'
        f'if [ "$1" = buildx ]; then exit {0 if buildx else 1}; fi\n'
        "exit 3\n"
    )
    path.chmod(0o755)
    return path


def test_buildkit_client_choice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    new = _fake_docker(tmp_path / "new", "29.1.3", buildx=False)
    old = _fake_docker(tmp_path / "old", "20.10.24+dfsg1", buildx=False)
    with_buildx = _fake_docker(tmp_path / "buildx", "29.1.3", buildx=True)
    monkeypatch.setattr(build, "_docker_io_client", lambda: None)
    monkeypatch.delenv("GPURIG_DOCKER", raising=False)
    monkeypatch.setenv("PATH", f"{new.parent}{os.pathsep}{old.parent}")
    assert build.buildkit_client() == str(old)  # the newer one first on PATH cannot
    monkeypatch.setenv("PATH", str(new.parent))
    with pytest.raises(GpurigError, match=r"docker\.io.*buildx"):
        build.buildkit_client()
    monkeypatch.setenv("PATH", f"{new.parent}{os.pathsep}{with_buildx.parent}")
    assert build.buildkit_client() == str(with_buildx)
    monkeypatch.setenv("GPURIG_DOCKER", str(new))
    with pytest.raises(GpurigError, match="GPURIG_DOCKER"):
        build.buildkit_client()
    monkeypatch.setenv("GPURIG_DOCKER", str(old))
    assert build.buildkit_client() == str(old)


def test_debian_client_is_found_when_installed() -> None:
    found = build._docker_io_client()
    if found is None:
        pytest.skip("Debian's docker.io is not installed here")
    assert found.endswith("/bin/docker")
    assert build.can_buildkit(found)


PLAIN_PROGRESS = """\
#11 [builder 2/4] RUN uv venv --no-cache --python "3.11" "/opt/gpurig/venv"
#11 CACHED
#12 [builder 3/4] RUN --mount=type=cache,id=gpurig-uv,target=/root/.cache/uv uv pip sync
#12 CACHED
#15 [runtime 3/4] RUN --mount=type=bind,from=builder uv pip install --no-deps
#15 0.264 Using Python 3.11.2 environment at: /opt/gpurig/venv
#15 DONE 0.7s
#17 exporting to image
#17 DONE 1.8s
"""


def test_parse_steps() -> None:
    steps = build.parse_steps(PLAIN_PROGRESS.splitlines())
    assert [(s.name, s.cached) for s in steps.values()] == [
        ("builder 2/4", True),
        ("builder 3/4", True),
        ("runtime 3/4", False),
    ]
    result = build.BuildResult("sha256:x", [], "cpu-cp311", 1.0, 1, steps)
    assert result.step("uv pip sync").cached
    assert not result.step("uv pip install").cached
    with pytest.raises(KeyError):
        result.step("apt-get")


FAILED_PROGRESS = """\
#13 [builder 4/4] RUN "/opt/gpurig/venv/bin/python" -c 'import sys, torch; ...'
#13 sha256:580e42a3b665bfd4a708293f66eddbe6fdb4e3da56f233decb0eef7c0bd6c1dd
#13 2.517 torch is 2.13.0+cu130 (CUDA 13.0), the lock wants 2.13.0+cpu (CUDA none)
#13 ERROR: executor failed running [/bin/sh -c ...]: exit code: 1
------
 > [builder 4/4] RUN "/opt/gpurig/venv/bin/python" -c 'import sys, torch; ...':
------
executor failed running [/bin/sh -c ...]: exit code: 1
"""


def test_failure_lines_name_the_cause() -> None:
    assert build.failure_lines(FAILED_PROGRESS.splitlines()) == [
        "torch is 2.13.0+cu130 (CUDA 13.0), the lock wants 2.13.0+cpu (CUDA none)"
    ]
    assert build.failure_lines(PLAIN_PROGRESS.splitlines()) == []


def test_proxy_credentials_reach_docker_build_through_its_environment_only(
    tmp_path: Path,
) -> None:
    stack = spec.parse((REPO / "stack.yml").read_text())
    proxied = stack.model_copy(
        update={"network": stack.network.model_copy(update={"proxy": "http://u:SECRET@p:3128"})}
    )
    proxy = build.proxy_args(proxied)
    assert proxy["HTTPS_PROXY"] == "http://u:SECRET@p:3128"
    argv, env = build.build_command(
        "docker", tmp_path / "iid", tmp_path, {"BASE_IMAGE": "debian:12"}, proxy
    )
    assert not [arg for arg in argv if "SECRET" in arg]
    assert argv[argv.index("HTTPS_PROXY") - 1] == "--build-arg"
    assert "BASE_IMAGE=debian:12" in argv
    assert env == proxy
    assert build.proxy_args(stack) == {}
