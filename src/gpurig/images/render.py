"""images/<target>/Dockerfile from images/Dockerfile.template, the image's plan and the lock.

The template's `{{name}}` fields are the ARG defaults of one lock target: its base image, torch
build, index and labels from the lock; its Python, venv, user and paths from the image's plan
(gpurig.plan.image: the same steps a host of the base's distribution gets). Every value is
quoted for the place it lands in (an ARG default, a bare word, JSON).

`gpurig image render` writes one Dockerfile per target and the drift test fails when a
committed copy differs from a fresh render (like `gpurig render` for the Ansible roles);
`gpurig image build` renders into its build context, so it never builds a stale copy. Every
default is also passed as a build argument, so `--base` and mirrors override them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from gpurig import compat
from gpurig.errors import GpurigError
from gpurig.lock import Lock, Target
from gpurig.plan import image as image_plan
from gpurig.plan.image import ImagePlan
from gpurig.spec import Stack

REPO = Path(__file__).resolve().parents[3]
IMAGES = REPO / "images"
TEMPLATE = IMAGES / "Dockerfile.template"
FIELD = re.compile(r"\{\{(\w+)\}\}")

# Debian suite whose python3 is each Python: gpurig/base:<suite> is the CPU image's default base
# (built with debootstrap by gpurig.sandbox.rootfs, so no registry is needed).
DEBIAN_SUITES = {"3.11": "bookworm", "3.13": "trixie"}
DEBIAN_RELEASES = {"bookworm": "debian-12", "trixie": "debian-13"}
# NVIDIA's image of each CUDA minor release: the newest update, as tagged on Docker Hub
# (hub.docker.com/r/nvidia/cuda/tags); 11.8 has no Ubuntu 24.04 image.
CUDA_IMAGE_RELEASES = {
    "11.8": ("11.8.0", "ubuntu22.04"),
    "12.6": ("12.6.3", "ubuntu24.04"),
    "12.8": ("12.8.1", "ubuntu24.04"),
    "12.9": ("12.9.1", "ubuntu24.04"),
    "13.0": ("13.0.2", "ubuntu24.04"),
}
# `base`, not `runtime`: torch's wheels bring their own CUDA libraries (the nvidia-* wheels of
# the lock), so the runtime flavour's copies (~2.5 GB) would never be loaded. The base flavour
# carries what torch does not bring: cudart and the driver forward-compatibility libraries.
CUDA_IMAGE_FLAVOUR = "base"


@dataclass(frozen=True)
class Rendered:
    target: Target
    path: Path  # relative to the repository: images/<target>/Dockerfile
    text: str
    build_args: dict[str, str]


def default_base(target: Target) -> str:
    """The base image a target's Dockerfile names by default."""
    cuda = compat.cuda_version(target.variant)
    if cuda is None:
        suite = DEBIAN_SUITES.get(target.python)
        if suite is None:
            raise GpurigError(
                f"{target.name}: no Debian release ships Python {target.python}; "
                "pass --base IMAGE (any glibc image; Python then comes from uv)"
            )
        return f"gpurig/base:{suite}"
    release, os_name = CUDA_IMAGE_RELEASES.get(cuda, (f"{cuda}.0", "ubuntu24.04"))
    return f"nvidia/cuda:{release}-{CUDA_IMAGE_FLAVOUR}-{os_name}"


def os_of_image(image: str) -> str | None:
    """'debian-12' for gpurig/base:bookworm, 'ubuntu-24.04' for nvidia/cuda:...-ubuntu24.04."""
    name, _, tag = image.rpartition(":")
    if name.endswith("gpurig/base") and tag in DEBIAN_RELEASES:
        return DEBIAN_RELEASES[tag]
    match = re.search(r"ubuntu(\d\d\.\d\d)$", tag)
    if match:
        return f"ubuntu-{match[1]}"
    for suite, release in DEBIAN_RELEASES.items():
        if name.endswith(("debian", "python")) and suite in tag:
            return release
    return None


def python_source(target: Target, os_name: str | None) -> str:
    """'system' when the base's distribution ships the target's Python, else 'uv' (the image
    plan's choice; gpurig image build asks it before it inspects a base of unknown name)."""
    return image_plan.python_source(target, os_name)


# What an ARG or ENV default can hold unquoted: these characters read back unchanged.
SAFE_WORD = re.compile(r"^[A-Za-z0-9_@%+=:,./-]*$")


def _no_line_break(name: str, value: str) -> str:
    # A Dockerfile is read line by line: a line break (or any control character) in a value
    # would end the instruction and start one of the value's choosing. The schema refuses such
    # values; this holds even for a model built without it.
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise GpurigError(
            f"{name}: {value!r} holds a control character; it cannot go into a Dockerfile"
        )
    return value


def arg_value(name: str, value: str) -> str:
    """`value` quoted for an ARG or ENV default: the Dockerfile's own double quotes, with `\\`,
    `"` and `$` escaped (the only characters its lexer reads there), so that it is neither split
    nor expanded."""
    _no_line_break(name, value)
    if SAFE_WORD.match(value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return f'"{escaped}"'


def build_args(
    stack: Stack, locked: Lock, target: Target, base: str, image: ImagePlan
) -> dict[str, str]:
    """Every ARG the template declares with a default, for this target (unquoted values)."""
    cuda = compat.cuda_version(target.variant)
    names = [*stack.packages, *(Requirement(extra).name for extra in stack.extra_packages)]
    wanted = [canonicalize_name(name) for name in names]
    pins = [f"{name}=={target.packages[name]}" for name in wanted if name in target.packages]
    return {
        "BASE_IMAGE": base,
        "PYTHON_SOURCE": image.python_source,
        "INDEX_URL": target.index,
        "EXTRA_INDEX_URL": target.extra_index or "",
        "TARGET": target.name,
        "VARIANT": target.variant,
        "PYTHON": image.python,
        "TORCH_VERSION": target.torch,
        "TORCH_CUDA": cuda or "none",
        "PACKAGES": " ".join(pins),
        "LOCK_SHA256": target.sha256,
        "SPEC_SHA256": locked.spec_sha256,
        "VENV": image.venv,
        "HF_HOME": image.hf_home,
        "STATE_DIR": image.home,
        "APP_USER": image.user,
    }


def render_target(
    stack: Stack,
    locked: Lock,
    target: Target,
    base: str | None = None,
    source: str | None = None,
    template: Path = TEMPLATE,
) -> Rendered:
    """One target's Dockerfile; `base`/`source` replace the defaults (gpurig image build)."""
    base = base or default_base(target)
    image = image_plan.build(stack, target, os_of_image(base), source=source)
    args = build_args(stack, locked, target, base, image)
    quoted = {key: arg_value(key, value) for key, value in args.items()}
    fields = {
        "base_image": quoted["BASE_IMAGE"],
        "python_source": quoted["PYTHON_SOURCE"],
        "index_url": quoted["INDEX_URL"],
        "extra_index_url": quoted["EXTRA_INDEX_URL"],
        "target": quoted["TARGET"],
        "variant": quoted["VARIANT"],
        "python": quoted["PYTHON"],
        "torch_version": quoted["TORCH_VERSION"],
        "torch_cuda": quoted["TORCH_CUDA"],
        "packages": quoted["PACKAGES"],
        "lock_sha256": quoted["LOCK_SHA256"],
        "spec_sha256": quoted["SPEC_SHA256"],
        "venv": quoted["VENV"],
        "hf_home": quoted["HF_HOME"],
        "state_dir": quoted["STATE_DIR"],
        "user": quoted["APP_USER"],
        "python_dir": arg_value("python_dir", image.python_dir),
        "ca_bundle": arg_value("ca_bundle", image.ca_bundle),
        # Inside a JSON string (CMD's exec form): escaped as JSON, the quotes are the template's.
        "report": json.dumps(_no_line_break("report", image.report))[1:-1],
        # The NVIDIA container toolkit mounts the host's driver into CUDA images only.
        "nvidia_visible_devices": "void" if target.variant == "cpu" else "all",
    }
    text = template.read_text()
    missing = sorted(set(FIELD.findall(text)) - set(fields))
    if missing:
        raise GpurigError(f"{template}: unknown template fields {', '.join(missing)}")
    body = FIELD.sub(lambda m: fields[m[1]], text)
    header = (
        f"# Generated by `gpurig image render` from images/{template.name}, stack.yml and lock/:\n"
        "# edit the template, not this file.\n"
    )
    path = Path("images") / target.name / "Dockerfile"
    return Rendered(target, path, header + body, args)


def render(stack: Stack, locked: Lock, template: Path = TEMPLATE) -> list[Rendered]:
    """The committed Dockerfiles: one per lock target, with its default base."""
    return [render_target(stack, locked, t, template=template) for t in locked.targets.values()]


def drifted(files: list[Rendered], repo: Path = REPO) -> list[Path]:
    """Rendered files whose committed copy is missing or differs."""
    stale = []
    for item in files:
        path = repo / item.path
        if not path.exists() or path.read_text() != item.text:
            stale.append(item.path)
    return stale


def stray(files: list[Rendered], repo: Path = REPO) -> list[Path]:
    """Target folders under images/ the lock no longer has."""
    wanted = {item.path for item in files}
    return [
        path.relative_to(repo)
        for path in sorted((repo / "images").glob("*/Dockerfile"))
        if path.relative_to(repo) not in wanted
    ]


def write(files: list[Rendered], repo: Path = REPO) -> list[Path]:
    """Write the files that changed; returns their paths (relative to the repository)."""
    written = []
    for item in drifted(files, repo):
        rendered = next(f for f in files if f.path == item)
        (repo / item).parent.mkdir(parents=True, exist_ok=True)
        (repo / item).write_text(rendered.text)
        written.append(item)
    return written
