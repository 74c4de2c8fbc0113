"""The steps of a host plan: typed, ordered, serialisable data that every front end renders.

A step says *what* a host gets (a file with its exact bytes, apt packages, a user, a venv built
by this script), never *how* a tool applies it: the pyinfra deploys turn each kind into
operations, the Ansible roles into tasks. Each step has a stable `id` that both front ends name
in what they render, so a test can compare them step by step.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Any, ClassVar

# What a host-side script of a step prints: each change it makes (or, in a dry run, would
# make) on a line of its own, or this when it has nothing to do. Ansible's changed_when and
# the pyinfra operations read them.
CHANGED = "gpurig: changed: "
UNCHANGED = "gpurig: unchanged"


@dataclass(frozen=True)
class Step:
    kind: ClassVar[str]
    id: str  # stable: <stage>.<what>, e.g. system.environment
    name: str  # sentence case: the operation's or task's name

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class File(Step):
    """`path` holds `content` (or a copy of the controller file `src`), or is absent."""

    kind: ClassVar[str] = "file"
    path: str = ""
    content: str | None = None
    src: str | None = None  # a controller file, when the bytes are not text the plan carries
    sha256: str = ""  # of content or src: what a front end compares the host's copy with
    mode: str = "0644"
    owner: str = "root"
    group: str = "root"
    present: bool = True
    then: str | None = None  # shell run as root after the content changed

    @classmethod
    def text(cls, id: str, name: str, path: str, content: str, **kw: Any) -> File:
        digest = hashlib.sha256(content.encode()).hexdigest()
        return cls(id, name, path=path, content=content, sha256=digest, **kw)

    @classmethod
    def copy(cls, id: str, name: str, path: str, src: str, sha256: str, **kw: Any) -> File:
        return cls(id, name, path=path, src=src, sha256=sha256, **kw)

    @classmethod
    def absent(cls, id: str, name: str, path: str) -> File:
        return cls(id, name, path=path, present=False)


@dataclass(frozen=True)
class AptPackages(Step):
    """Debian packages installed (no recommends), apt waiting a bounded time for the dpkg lock."""

    kind: ClassVar[str] = "apt"
    packages: list[str] = field(default_factory=list)
    lock_timeout_s: int = 120
    script: str = ""  # installs what is missing; prints `gpurig: unchanged` when nothing is
    # The system stage's install runs as a background job a JobWait step joins; a later
    # stage's (containers, DCGM) in the foreground, since its next step needs the packages.
    background: bool = False


@dataclass(frozen=True)
class JobWait(Step):
    """Wait for the background job a step started (gpurig.plan.background: apt's install, the
    trust store's update) and take its result: a failure reads as that step's own would.
    Nothing to wait for when the step was in place, or did its work in the foreground."""

    kind: ClassVar[str] = "job_wait"
    started_by: str = ""  # the id of the step that starts the job
    script: str = ""  # prints `gpurig: unchanged` when nothing ran in the background


@dataclass(frozen=True)
class ServiceUser(Step):
    """A system account with a home and a shell: no password, no sudo, in its own group."""

    kind: ClassVar[str] = "user"
    user: str = ""
    home: str = ""
    shell: str = "/bin/bash"


@dataclass(frozen=True)
class Directories(Step):
    kind: ClassVar[str] = "directories"
    paths: list[str] = field(default_factory=list)
    owner: str = "root"
    group: str = "root"
    mode: str = "0755"


@dataclass(frozen=True)
class UvPython(Step):
    """A uv-managed Python, for hosts whose distribution python3 is not one the spec lists."""

    kind: ClassVar[str] = "uv_python"
    version: str = ""
    uv: str = ""
    install_dir: str = ""
    env: dict[str, str] = field(default_factory=dict)  # uv's settings (no secrets)
    env_file: str = ""  # sourced first: the proxy and the trust store, kept off command lines


@dataclass(frozen=True)
class WheelFile:
    name: str
    src: str  # on the controller
    sha256: str
    size: int = 0  # bytes: a host's copy of this size counts as present


@dataclass(frozen=True)
class Wheels(Step):
    """Wheels the hosts cannot download (local builds, bloomkit, an offline wheelhouse)."""

    kind: ClassVar[str] = "wheels"
    directory: str = ""
    wheels: list[WheelFile] = field(default_factory=list)


@dataclass(frozen=True)
class Venv(Step):
    """The locked venv, built and swapped in by `script` (one script for every front end).

    Complete when `venv_dir`/<marker file> holds `marker` and `link` points at `venv_dir`;
    the script checks that itself under a lock, so running it on a converged host changes
    nothing (it prints `gpurig: changed` when it did change something).
    """

    kind: ClassVar[str] = "venv"
    link: str = ""
    venvs_dir: str = ""
    venv_dir: str = ""
    marker_file: str = ""
    marker: str = ""
    requirements_path: str = ""
    script: str = ""


@dataclass(frozen=True)
class Smoke(Step):
    """`bloomkit smoke` as the service user; it runs on every deploy, by design."""

    kind: ClassVar[str] = "smoke"
    user: str = ""
    report: str = ""  # on the host
    timeout_s: int = 0
    command: str = ""  # prints gpurig-smoke-exit=<code> last


@dataclass(frozen=True)
class Service(Step):
    """A systemd unit enabled and running (the plan has none on a host without systemd)."""

    kind: ClassVar[str] = "service"
    unit: str = ""


@dataclass(frozen=True)
class Script(Step):
    """A host-side script run as root: one text for every front end.

    `unless` is a shell test that holds when the step is in place: pyinfra reads it as a fact
    and plans no change; `script` starts with the same test (printing `gpurig: unchanged`), so
    the Ansible roles run the script as it is. Without `unless` the step runs every time (a
    check). The plan has it keep its full output in /var/log/gpurig/ and print the lines worth
    a diagnosis; on failure they read as gpurig's named diagnoses.
    """

    kind: ClassVar[str] = "script"
    script: str = ""
    unless: str = ""
    timeout_s: int = 600


@dataclass(frozen=True)
class Stage:
    name: str  # system, python, nvidia, llm_env, verify
    steps: list[Step] = field(default_factory=list)
