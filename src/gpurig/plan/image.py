"""The image's plan: what a container image of one lock target gets, from a host's own steps.

An image is planned as a host: its base image stands in for the host's facts (the base's
distribution and its python3, no GPU, no systemd), preflight chooses the Python the same way,
and the system, python and verify stages give the service user and its home, the environment,
the uv-managed Python's folder and the report. The Dockerfile (gpurig.images.render) reads
these values here and decides none, so an image and a provisioned host cannot disagree on a
path, a user or a Python.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TypeVar

from gpurig import compat, hostlayout, preflight
from gpurig.lock import Target
from gpurig.model.host import HostFacts
from gpurig.plan import python, smoke, system
from gpurig.plan.steps import ServiceUser, Step
from gpurig.preflight import Verdict
from gpurig.spec import Stack

S = TypeVar("S", bound=Step)
REPOSITORY = "gpurig/bloomkit"


def image_tag(spec_sha256: str, target: Target) -> str:
    """gpurig/bloomkit:<target>-<12 hex of the spec and lock hashes>: what `gpurig image build`
    tags, and the image a host with containers on smoke-tests by default."""
    digest = hashlib.sha256(f"{spec_sha256}:{target.sha256}".encode()).hexdigest()
    return f"{REPOSITORY}:{target.name}-{digest[:12]}"


@dataclass(frozen=True)
class ImagePlan:
    python: str  # the venv's Python version
    uv_python: bool  # True: uv installs it (the base's distribution does not ship it)
    python_dir: str  # where uv keeps its Pythons, as on a host
    venv: str  # the live venv path (a host's link; the image builds the venv there)
    user: str  # the service user
    home: str  # its home: the state folder
    hf_home: str
    ca_dir: str  # where extra CA certificates go before update-ca-certificates
    ca_bundle: str  # the system trust store every tool is pointed at
    report: str  # bloomkit smoke's JSON report

    @property
    def python_source(self) -> str:
        return "uv" if self.uv_python else "system"


def shipped_python(os_name: str | None) -> str | None:
    """The python3 a distribution ships (compat.yaml's os_python), if gpurig knows it."""
    return compat.table().os_python.get(os_name or "")


def python_source(target: Target, os_name: str | None) -> str:
    """'system' when the base's distribution ships the target's Python, else 'uv'."""
    return "system" if shipped_python(os_name) == target.python else "uv"


def base_facts(os_name: str | None, python3: str | None) -> HostFacts:
    """A base image as a host: its distribution and python3; no GPU, no systemd, no sudo."""
    os_id, _, version = (os_name or "unknown-").partition("-")
    return HostFacts(
        os_id=os_id,
        os_version=version,
        arch="x86_64",
        python3=python3,
        glibc=None,
        free_disk_gb=0.0,
        memory_gb=0.0,
        sudo=False,
        systemd=False,
    )


def choose_python(stack: Stack, target: Target, facts: HostFacts) -> Verdict:
    """Preflight's choice for a host that must run the target's Python."""
    verdict = Verdict(target=target)
    preflight.choose_python(facts, stack.model_copy(update={"python": [target.python]}), verdict)
    return verdict


def _one(steps: list[Step], kind: type[S]) -> S:
    found = [s for s in steps if isinstance(s, kind)]
    assert len(found) == 1, f"the plan has {len(found)} {kind.__name__} steps"
    return found[0]


def build(
    stack: Stack, target: Target, os_name: str | None, source: str | None = None
) -> ImagePlan:
    """The plan of the image of `target` on a base of distribution `os_name` ('debian-12');
    source ('system' or 'uv') replaces what the distribution's name says about its Python."""
    source = source or python_source(target, os_name)
    python3 = target.python if source == "system" else None
    verdict = choose_python(stack, target, base_facts(os_name, python3))
    assert verdict.python is not None
    # The image copies the CA from its build context: no checksum is needed here.
    user = _one(system.steps(stack, ca_sha256=""), ServiceUser)
    env = system.environment(stack)
    return ImagePlan(
        python=verdict.python,
        uv_python=verdict.uv_python,
        # Both of the Dockerfile's Python stages are declared, so the folder is always named.
        python_dir=python.uv_settings(managed=True)["UV_PYTHON_INSTALL_DIR"],
        venv=hostlayout.Layout(stack).venv_link,
        user=user.user,
        home=user.home,
        hf_home=env["HF_HOME"],
        ca_dir=str(PurePosixPath(hostlayout.CA_FILE).parent),
        ca_bundle=env["SSL_CERT_FILE"],
        report=smoke.step(stack, has_gpu=target.variant != "cpu").report,
    )
