"""`gpurig image smoke IMAGE`: check an image against the lock, then run `bloomkit smoke` in it.

The image is checked first (it runs as a non-root user; every installed distribution is the
locked version of the target its labels name), then smoke runs with no network (it needs none:
the tiny model is built in place) and with the machine's GPUs when it has any. The report lands
in reports/images/ and is summed up by gpurig.report, in the same table as hosts.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
from docker.errors import DockerException, ImageNotFound
from docker.types import DeviceRequest
from packaging.utils import canonicalize_name
from requests.exceptions import RequestException

from gpurig import report
from gpurig.errors import GpurigError, UsageError
from gpurig.lock import Lock
from gpurig.spec import Stack

REPORTS = Path("reports") / "images"
OUT_MOUNT = "/gpurig-out"
# Every distribution in the venv, by name: compared with the lock.
LIST_DISTRIBUTIONS = (
    "import importlib.metadata as m, json, sys; "
    "json.dump({d.metadata['Name']: d.version for d in m.distributions()}, sys.stdout)"
)
Echo = Callable[[str], None]


@dataclass(frozen=True)
class ImageCheck:
    image: str
    target: str | None
    user: str
    packages: dict[str, str]
    problems: list[str]


def report_name(image: str) -> str:
    """A file name for an image reference: gpurig/bloomkit:cpu-cp311-ab12 -> gpurig-bloomkit-..."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", image).strip("-")


def _get(client: docker.DockerClient, image: str) -> Any:
    try:
        return client.images.get(image)
    except ImageNotFound:
        raise UsageError(
            f"no image {image!r} in the engine: build it with `gpurig image build`"
        ) from None


def _run(client: docker.DockerClient, image: str, argv: list[str]) -> str:
    """Run a short command in the image (no network, its own user) and return stdout."""
    container = client.containers.run(
        image, argv[1:], entrypoint=[argv[0]], network_mode="none", detach=True
    )
    try:
        status = container.wait(timeout=120)["StatusCode"]
        out = container.logs(stdout=True, stderr=False).decode(errors="replace")
        if status != 0:
            err = container.logs(stdout=False, stderr=True).decode(errors="replace").strip()
            raise GpurigError(f"`{' '.join(argv)}` in {image} exited {status}: {err[-300:]}")
        return str(out)
    finally:
        container.remove(force=True)


def check_image(client: docker.DockerClient, image: str, locked: Lock) -> ImageCheck:
    """Non-root user, and the venv holds exactly the lock of the target the labels name."""
    attrs = _get(client, image).attrs
    labels = attrs["Config"].get("Labels") or {}
    problems = []
    user = _run(client, image, ["id", "-u"]).strip()
    if user in ("", "0"):
        problems.append(f"runs as root (uid {user or 0}): the image must set a non-root USER")
    installed = json.loads(_run(client, image, ["python", "-c", LIST_DISTRIBUTIONS]))
    packages = {str(canonicalize_name(name)): str(v) for name, v in installed.items()}
    name = labels.get("io.gpurig.target")
    target = locked.targets.get(name or "")
    if target is None:
        problems.append(f"label io.gpurig.target={name!r} names no target of the lock")
    else:
        if labels.get("io.gpurig.lock-sha256") != target.sha256:
            problems.append(
                f"built from another lock of {name} than lock/{target.file}: rebuild it"
            )
        for dist, version in sorted(target.packages.items()):
            got = packages.get(dist)
            if got != version:
                problems.append(f"{dist} is {got or 'missing'}, the lock says {version}")
        extra = sorted(set(packages) - set(target.packages) - {"bloomkit"})
        if extra:
            problems.append(f"not in the lock: {', '.join(extra)}")
    if "bloomkit" not in packages:
        problems.append("bloomkit is not installed")
    return ImageCheck(image, name, user, packages, problems)


def has_gpus(client: docker.DockerClient) -> bool:
    """Does this engine pass NVIDIA GPUs through (the NVIDIA container toolkit)?"""
    try:
        runtimes = client.info().get("Runtimes") or {}
    except (DockerException, RequestException):
        return False
    return "nvidia" in runtimes or shutil.which("nvidia-container-cli") is not None


def _owner(attrs: dict[str, Any]) -> tuple[int, int] | None:
    """Numeric uid:gid of the image's USER, when it is numeric."""
    match = re.fullmatch(r"(\d+)(?::(\d+))?", attrs["Config"].get("User") or "")
    if not match:
        return None
    uid = int(match[1])
    return uid, int(match[2] or uid)


def output_folder(attrs: dict[str, Any]) -> tuple[Path, list[str] | None]:
    """A fresh folder the image's user can write its report into, and no one else: root gives
    it to that user; anyone else keeps it, 0770, and lends the container their group
    (the groups to add to the container's user)."""
    out = Path(tempfile.mkdtemp(prefix="gpurig-image-smoke-"))  # 0700
    owner = _owner(attrs)
    if owner and os.geteuid() == 0:
        os.chown(out, *owner)
        return out, None
    out.chmod(0o770)
    return out, [str(os.getgid())]


def smoke_argv(stack: Stack, require_gpu: bool, json_path: str) -> list[str]:
    argv = ["smoke", "--json", json_path, "--model", stack.smoke.model]
    if stack.smoke.quick:
        argv.append("--quick")
    if require_gpu:
        argv.append("--require-gpu")
    return argv


def run_smoke(
    client: docker.DockerClient,
    image: str,
    stack: Stack,
    *,
    gpus: bool,
    require_gpu: bool = False,
    hf_home: Path | None = None,
    echo: Echo | None = None,
) -> dict[str, Any]:
    """Run `bloomkit smoke` in the image; its report, or gpurig's failure report."""
    echo = echo or (lambda line: print(line, file=sys.stderr, flush=True))
    attrs = _get(client, image).attrs
    name = image
    out, group_add = output_folder(attrs)
    try:
        volumes = {str(out): {"bind": OUT_MOUNT, "mode": "rw"}}
        if hf_home:
            env = attrs["Config"].get("Env") or []
            home = next((e.split("=", 1)[1] for e in env if e.startswith("HF_HOME=")), None)
            volumes[str(hf_home.resolve())] = {"bind": home or "/hf-home", "mode": "ro"}
        requests = [DeviceRequest(count=-1, capabilities=[["gpu"]])] if gpus else None
        argv = smoke_argv(stack, require_gpu, f"{OUT_MOUNT}/smoke.json")
        echo(f"running `bloomkit {' '.join(argv)}` in {image} "
             f"({'with' if gpus else 'without'} GPUs, no network)")  # fmt: skip
        container = client.containers.run(
            image,
            argv,
            network_mode="none",
            volumes=volumes,
            device_requests=requests,
            group_add=group_add,
            detach=True,
            labels={"io.gpurig.smoke": "1"},
        )
        try:
            for chunk in container.logs(stream=True, follow=True):
                for line in chunk.decode(errors="replace").splitlines():
                    echo(line)
            try:
                status = container.wait(timeout=stack.smoke.timeout_s)["StatusCode"]
            except RequestException:
                container.kill()
                return report.failure_report(
                    name, f"smoke did not finish within {stack.smoke.timeout_s} s"
                )
        finally:
            with contextlib.suppress(DockerException):
                container.remove(force=True)
        path = out / "smoke.json"
        if not path.exists():
            return report.failure_report(name, f"bloomkit smoke exited {status} without a report")
        data: dict[str, Any] = json.loads(path.read_text())
        return data
    finally:
        shutil.rmtree(out, ignore_errors=True)


def smoke_image(
    image: str,
    stack: Stack,
    locked: Lock,
    *,
    gpus: bool | None = None,
    require_gpu: bool = False,
    hf_home: Path | None = None,
    reports_dir: Path = REPORTS,
    client: docker.DockerClient | None = None,
    echo: Echo | None = None,
) -> tuple[report.HostReport, Path]:
    """Check, smoke, save the report; the summary row and where the report went."""
    from gpurig.sandbox.engine import docker_client

    client = client or docker_client()
    check = check_image(client, image, locked)
    use_gpus = has_gpus(client) if gpus is None else gpus
    data = run_smoke(
        client, image, stack, gpus=use_gpus, require_gpu=require_gpu, hf_home=hf_home, echo=echo
    )
    if check.problems:
        data["verdict"] = report.FAIL
        data["failures"] = [*(data.get("failures") or []), *check.problems]
    data.setdefault("image", image)
    path = report.write(reports_dir, report_name(image), data)
    return report.parse(image, data), path
