"""Images without an engine: rendering, linting, the build context, the BuildKit client choice."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from gpurig import lock, spec
from gpurig.bloomkit_wheel import Wheel
from gpurig.errors import GpurigError, UsageError
from gpurig.images import build, render, sizes, smoke
from gpurig.lock import Lock, Target

REPO = Path(__file__).resolve().parents[2]
HADOLINT = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
    "hadolint"
)


@pytest.fixture(scope="module")
def stack() -> spec.Stack:
    return spec.load(REPO / "stack.yml")


@pytest.fixture(scope="module")
def locked() -> Lock:
    return lock.load(REPO / "lock")


def _variant(target: Target, variant: str) -> Target:
    """The same target as if the lock had another CUDA variant of it."""
    name = f"{variant}-cp{target.python.replace('.', '')}"
    return dataclasses.replace(target, name=name, variant=variant, file=f"{name}.txt")


def _hadolint(paths: list[Path]) -> subprocess.CompletedProcess[str]:
    assert HADOLINT, "hadolint is missing: `make venv` installs it (dev dependency group)"
    return subprocess.run([HADOLINT, *map(str, paths)], capture_output=True, text=True)


# ---- rendering ------------------------------------------------------------------------------


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


# ---- smoke ----------------------------------------------------------------------------------


def test_smoke_argv_and_report_name(stack: spec.Stack) -> None:
    assert smoke.smoke_argv(stack, False, "/out/smoke.json") == [
        "smoke", "--json", "/out/smoke.json", "--model", "tiny",
    ]  # fmt: skip
    quick = stack.model_copy(update={"smoke": spec.Smoke(quick=True, model="m")})
    assert smoke.smoke_argv(quick, True, "/o.json")[-3:] == ["m", "--quick", "--require-gpu"]
    name = smoke.report_name("gpurig/bloomkit:cpu-cp311-0123456789ab")
    assert name == "gpurig-bloomkit-cpu-cp311-0123456789ab"
    assert smoke._owner({"Config": {"User": "10001:10001"}}) == (10001, 10001)
    assert smoke._owner({"Config": {"User": "gpurig"}}) is None


# ---- sizes ----------------------------------------------------------------------------------


def test_best_wheel_is_the_locked_one_for_the_target() -> None:
    files = [
        {"filename": "x-1.0.tar.gz", "hashes": {"sha256": "a"}},
        {"filename": "x-1.0-py3-none-win_amd64.whl", "hashes": {"sha256": "b"}},
        {"filename": "x-1.0-cp311-cp311-manylinux_2_17_x86_64.whl", "hashes": {"sha256": "c"}},
        {"filename": "x-1.0-py3-none-manylinux2010_x86_64.whl", "hashes": {"sha256": "d"}},
        {"filename": "x-1.0-cp312-cp312-manylinux_2_28_x86_64.whl", "hashes": {"sha256": "e"}},
        {"filename": "x-1.0-cp311-cp311-manylinux_2_28_x86_64.whl", "hashes": {"sha256": "f"}},
    ]
    assert sizes._best("x", files, {"a", "b", "c", "d", "e"}, "3.11")["hashes"]["sha256"] == "c"
    assert sizes._best("x", files, {"b", "d", "e"}, "3.11")["hashes"]["sha256"] == "d"
    with pytest.raises(GpurigError, match="no locked wheel of x"):
        sizes._best("x", files, {"b", "e"}, "3.11")


def test_range_file_reads_a_zip_directory(tmp_path: Path) -> None:
    import functools
    import http.server
    import threading

    wheel = tmp_path / "x-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x/__init__.py", "a" * 1000)
        archive.writestr("x/data.bin", b"\0" * 5000)

    class Ranges(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            start, end = map(int, self.headers["Range"].removeprefix("bytes=").split("-"))
            data = wheel.read_bytes()[start : end + 1]
            self.send_response(206)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    handler = functools.partial(Ranges, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/{wheel.name}"
        remote = sizes._RangeFile(url, wheel.stat().st_size)
        with zipfile.ZipFile(remote) as archive:
            assert sizes._contents(archive) == (6000, 1000)
    finally:
        server.shutdown()


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


@pytest.mark.parametrize("euid", [0, 1000])
@pytest.mark.parametrize("user", ["10001:10001", "gpurig", ""])
def test_the_smoke_output_folder_is_never_world_writable(
    monkeypatch: pytest.MonkeyPatch, euid: int, user: str
) -> None:
    monkeypatch.setattr(smoke.os, "geteuid", lambda: euid)
    chowned: list[tuple[int, int]] = []
    monkeypatch.setattr(smoke.os, "chown", lambda path, uid, gid: chowned.append((uid, gid)))
    out, group_add = smoke.output_folder({"Config": {"User": user}})
    try:
        mode = out.stat().st_mode & 0o777
        assert not mode & 0o007, oct(mode)
        if euid == 0 and user == "10001:10001":
            assert chowned == [(10001, 10001)]
            assert group_add is None
        else:  # the container's user writes through the caller's group
            assert mode == 0o770
            assert group_add == [str(os.getgid())]
    finally:
        out.rmdir()


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
