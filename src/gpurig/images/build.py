"""`gpurig image build`: assemble a small build context, build it with BuildKit, tag it.

The context holds only what the Dockerfile reads (never the repository):

    Dockerfile        rendered for the target (gpurig.images.render)
    uv                the controller's uv, the version that resolved the lock
    ca/               stack.yml network.ca_bundle as gpurig-ca.crt (empty without one)
    deps/             the dependency layer's inputs: requirements.txt (the lock file, hashes
                      and all) and wheels/ (the lock's wheels only the controller has)
    app/              the bloomkit wheel and its hash-pinned requirement

deps/ and app/ are separate so a bloomkit change leaves the dependency layer's inputs, and so
its cache, untouched. BuildKit needs a client that can drive it: the docker SDK's build is the
legacy builder (no cache mounts), and Docker 23+ clients need the buildx plugin for it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import docker
from docker.errors import DockerException, ImageNotFound

from gpurig import bloomkit_wheel, lock
from gpurig.bloomkit_wheel import Wheel
from gpurig.errors import GpurigError, UsageError
from gpurig.images import render
from gpurig.lock import Lock, Target
from gpurig.plan import image as plan_image
from gpurig.sandbox.engine import docker_client, docker_env
from gpurig.spec import Stack

REPOSITORY = plan_image.REPOSITORY
CONTEXTS = bloomkit_wheel.DIST / "images"
CA_NAME = "gpurig-ca.crt"
BUILDKIT_FIX = (
    "install Debian's docker.io (its docker 20.10 has BuildKit built in) or the buildx plugin "
    "for your docker, or point GPURIG_DOCKER at such a client"
)
STEP = re.compile(r"^#(\d+) \[([^\]]+)\] (.*)$")
DONE = re.compile(r"^#(\d+) (CACHED|DONE [\d.]+s)$")
Echo = Callable[[str], None]


@dataclass
class Step:
    name: str  # "builder 5/6"
    instruction: str
    cached: bool = False


@dataclass(frozen=True)
class BuildResult:
    image_id: str
    tags: list[str]
    target: str
    seconds: float
    size_bytes: int
    steps: dict[int, Step] = field(default_factory=dict)

    def step(self, needle: str) -> Step:
        """The step whose instruction contains `needle` (the last one, for repeated text)."""
        found = [s for s in self.steps.values() if needle in s.instruction]
        if not found:
            raise KeyError(f"no build step runs {needle!r}")
        return found[-1]


# ---- choosing what to build -----------------------------------------------------------------


def pick_target(stack: Stack, locked: Lock, variant: str, python: str | None = None) -> Target:
    """`cpu`, `cuda` (the first CUDA variant of the spec) or a variant name like cu130."""
    wanted = [v for v in stack.torch.variants if v != "cpu"] if variant == "cuda" else [variant]
    pythons = [python] if python else stack.python
    for name in wanted:
        for version in pythons:
            found = locked.target(name, version)
            if found:
                return found
    have = ", ".join(locked.targets) or "none"
    raise UsageError(
        f"the lock has no {variant} target"
        + (f" for Python {python}" if python else "")
        + f" (it has {have}): add it to stack.yml and run `gpurig resolve`"
    )


def image_tag(locked: Lock, target: Target) -> str:
    """gpurig/bloomkit:<target>-<12 hex of the spec and lock hashes> (gpurig.plan.image)."""
    return plan_image.image_tag(locked.spec_sha256, target)


# ---- the build context ----------------------------------------------------------------------


def _place(source: Path, dest: Path) -> None:
    """Put `source` at `dest` unless an identical file is there (BuildKit then sends nothing).

    Wheels are hard-linked (torch's is 180 MB; a link costs nothing), other files copied, so
    an edit in the context can never reach the file it came from.
    """
    if dest.exists():
        if dest.stat().st_ino == source.stat().st_ino or _same(source, dest):
            return
        dest.unlink()
    if source.suffix == ".whl":
        try:
            os.link(source, dest)
            return
        except OSError:
            pass  # another file system
    shutil.copy2(source, dest)


def _same(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    return _sha256(a) == _sha256(b)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write(dest: Path, text: str) -> None:
    if not dest.exists() or dest.read_text() != text:
        dest.write_text(text)


def _sync_folder(folder: Path, files: dict[str, Path], keep: set[str] | None = None) -> None:
    """Make `folder` hold exactly `files` (name -> source), and whatever `keep` names."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.iterdir():
        if stale.name not in files and stale.name not in (keep or set()):
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    for name, source in files.items():
        _place(source, folder / name)


def assemble_context(
    stack: Stack,
    locked: Lock,
    target: Target,
    wheel: Wheel,
    dockerfile: str,
    directory: Path | None = None,
) -> Path:
    """Write the build context of one target (idempotent: unchanged files stay untouched)."""
    directory = directory or CONTEXTS / target.name
    directory.mkdir(parents=True, exist_ok=True)
    _sync_folder(directory, {"uv": Path(lock._uv())}, keep={"Dockerfile", "ca", "deps", "app"})
    _write(directory / "Dockerfile", dockerfile)
    ca: dict[str, Path] = {}
    if stack.network.ca_bundle:
        bundle = Path(stack.network.ca_bundle)
        if not bundle.is_file():
            raise UsageError(f"network.ca_bundle: {bundle} does not exist on this controller")
        ca[CA_NAME] = bundle
    _sync_folder(directory / "ca", ca)
    local = {name: Path(folder) / name for name, (folder, _sha) in target.local_wheels.items()}
    for path in local.values():
        if not path.is_file():
            raise UsageError(f"{target.name} needs {path} (lock/manifest.json): it is missing")
    deps = directory / "deps"
    _sync_folder(deps, {"requirements.txt": locked.requirements(target)}, keep={"wheels"})
    _sync_folder(deps / "wheels", local)
    app = directory / "app"
    _sync_folder(app, {wheel.path.name: wheel.path}, keep={"requirements.txt"})
    _write(app / "requirements.txt", wheel.requirement + "\n")
    return directory


# ---- the BuildKit client --------------------------------------------------------------------


def _docker_io_client() -> str | None:
    """Debian docker.io's own client (20.10: BuildKit built in), whatever comes first on PATH."""
    if not shutil.which("dpkg"):
        return None
    listing = subprocess.run(["dpkg", "-L", "docker.io"], capture_output=True, text=True)
    for line in listing.stdout.splitlines():
        if line.endswith("/bin/docker") and os.access(line, os.X_OK):
            return line
    return None


def _client_version(client: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run([client, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"version (\d+)\.(\d+)", out.stdout)
    return (int(match[1]), int(match[2])) if match else None


def can_buildkit(client: str) -> bool:
    """Clients before 23.0 drive the engine's BuildKit themselves; later ones need buildx."""
    version = _client_version(client)
    if version is None:
        return False
    if version < (23, 0):
        return version >= (18, 9)
    try:
        buildx = subprocess.run(
            [client, "buildx", "version"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return buildx.returncode == 0


def buildkit_client() -> str:
    """Path of a docker client that builds with BuildKit; GpurigError naming the fix if none."""
    override = os.environ.get("GPURIG_DOCKER")
    if override:
        if not can_buildkit(override):
            raise GpurigError(
                f"GPURIG_DOCKER={override} cannot build with BuildKit: {BUILDKIT_FIX}"
            )
        return override
    candidates = [_docker_io_client()]
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        candidates.append(str(Path(folder) / "docker"))
    seen = set()
    for candidate in candidates:
        if not candidate or not os.access(candidate, os.X_OK):
            continue
        real = os.path.realpath(candidate)
        if real in seen:
            continue
        seen.add(real)
        if can_buildkit(candidate):
            return candidate
    raise GpurigError(f"no docker client here can build with BuildKit: {BUILDKIT_FIX}")


# ---- building -------------------------------------------------------------------------------


def _revision() -> str:
    run = subprocess.run(
        ["git", "-C", str(render.REPO), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    return run.stdout.strip() if run.returncode == 0 else ""


def _python_source(client: docker.DockerClient, target: Target, base: str) -> str:
    """'system' when the base's distribution ships the target's Python (asks the image itself
    when its name does not say)."""
    os_name = render.os_of_image(base)
    if os_name is None:
        try:
            client.images.get(base)
            raw = client.containers.run(
                base, ["cat", "/etc/os-release"], entrypoint=[], network_mode="none", remove=True
            )
        except (ImageNotFound, DockerException):
            raw = b""
        fields = dict(
            line.split("=", 1) for line in raw.decode(errors="replace").splitlines() if "=" in line
        )
        ident = fields.get("ID", "").strip('"')
        version = fields.get("VERSION_ID", "").strip('"')
        os_name = f"{ident}-{version}" if ident else None
    return render.python_source(target, os_name)


def _ensure_base(client: docker.DockerClient, base: str, echo: Echo) -> None:
    """gpurig's own Debian bases are built here (debootstrap); any other must be local or
    pullable by the engine."""
    name, _, suite = base.rpartition(":")
    if name == "gpurig/base":
        from gpurig.sandbox.rootfs import ensure_base_image  # debootstrap machinery, on demand

        built = ensure_base_image(suite, "base", client=client)
        if built.built_in_s is not None:
            echo(f"built base image {base} in {built.built_in_s:.0f} s")
        return
    try:
        client.images.get(base)
    except ImageNotFound:
        echo(f"base image {base} is not in the engine: BuildKit will try to pull it")


def parse_steps(lines: list[str]) -> dict[int, Step]:
    """BuildKit's plain progress -> step number -> (name, instruction, cached)."""
    steps: dict[int, Step] = {}
    for line in lines:
        match = STEP.match(line)
        if match and int(match[1]) not in steps:
            steps[int(match[1])] = Step(match[2], match[3])
            continue
        done = DONE.match(line)
        if done and int(done[1]) in steps and done[2] == "CACHED":
            steps[int(done[1])].cached = True
    return steps


def failure_lines(lines: list[str], count: int = 3) -> list[str]:
    """The last output lines of the step that failed, without BuildKit's step and time prefix."""
    failed = next((m[1] for ln in lines if (m := re.match(r"^#(\d+) ERROR:", ln))), None)
    if failed is None:
        return []
    prefix = re.compile(rf"^#{failed} \d+\.\d+ (.*)$")
    return [m[1] for ln in lines if (m := prefix.match(ln))][-count:]


def proxy_args(stack: Stack) -> dict[str, str]:
    """Docker's predefined proxy build arguments, for builds behind network.proxy."""
    if not stack.network.proxy:
        return {}
    proxy, no_proxy = stack.network.proxy, ",".join(stack.network.no_proxy)
    return {"HTTP_PROXY": proxy, "HTTPS_PROXY": proxy, "NO_PROXY": no_proxy}


def build_command(
    cli: str, iidfile: Path, directory: Path, args: dict[str, str], proxy: dict[str, str]
) -> tuple[list[str], dict[str, str]]:
    """The docker build command line, and what its environment must add.

    The proxy URL may hold credentials: `--build-arg NAME` with no value makes docker read it
    from its own environment, so it is on no command line (and Docker keeps its predefined
    proxy arguments out of the image's history).
    """
    command = [cli, "build", "--network", "host", "--progress", "plain"]
    command += ["--iidfile", str(iidfile), "--file", str(directory / "Dockerfile")]
    for key, value in args.items():
        command += ["--build-arg", f"{key}={value}"]
    for key in proxy:
        command += ["--build-arg", key]
    return [*command, str(directory)], dict(proxy)


def build(
    stack: Stack,
    locked: Lock,
    target: Target,
    *,
    base: str | None = None,
    python_source: str | None = None,
    tags: list[str] | None = None,
    wheel: Wheel | None = None,
    context: Path | None = None,
    echo: Echo | None = None,
) -> BuildResult:
    """Build, tag and inspect the image of one lock target."""
    echo = echo or (lambda line: print(line, file=sys.stderr, flush=True))
    locked.assert_fresh(stack)
    cli = buildkit_client()
    client = docker_client()
    base = base or render.default_base(target)
    _ensure_base(client, base, echo)
    source = python_source or _python_source(client, target, base)
    rendered = render.render_target(stack, locked, target, base=base, source=source)
    wheel = wheel or bloomkit_wheel.build()
    directory = assemble_context(stack, locked, target, wheel, rendered.text, context)
    tags = tags or [image_tag(locked, target)]
    args = {
        **rendered.build_args,
        "BLOOMKIT_VERSION": wheel.path.name.split("-")[1],
        "BLOOMKIT_SHA256": wheel.sha256,
        "IMAGE_VERSION": tags[0].rpartition(":")[2],
        "REVISION": _revision(),
    }
    iidfile = directory.parent / f".{target.name}.iid"
    iidfile.unlink(missing_ok=True)
    command, secret_env = build_command(cli, iidfile, directory, args, proxy_args(stack))
    env = {**os.environ, **docker_env(), "DOCKER_BUILDKIT": "1", **secret_env}
    echo(f"building {tags[0]} ({target.name}, base {base}, Python from {source}) with {cli}")
    began = time.monotonic()
    lines: list[str] = []
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as process:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.rstrip("\n")
            lines.append(line)
            echo(line)
    seconds = time.monotonic() - began
    if process.returncode != 0:
        tail = failure_lines(lines) or [ln for ln in lines if ln.strip()][-3:]
        raise GpurigError(
            f"docker build of {target.name} failed (exit {process.returncode}) after "
            f"{seconds:.0f} s: {' | '.join(tail)[-400:]}"
        )
    image_id = iidfile.read_text().strip()
    image = client.images.get(image_id)
    for tag in tags:
        repository, _, name = tag.rpartition(":")
        if not repository or "/" in name:  # "name" without a tag, or a registry port
            repository, name = tag, "latest"
        image.tag(repository, name)
    return BuildResult(
        image_id, tags, target.name, seconds, int(image.attrs["Size"]), parse_steps(lines)
    )
