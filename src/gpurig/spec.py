"""stack.yml: the one spec of what a host gets, parsed and checked field by field."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from packaging.utils import canonicalize_name
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from gpurig import hostlayout
from gpurig.errors import UsageError
from gpurig.spec_text import SpecErrors as SpecErrors  # what a caller of `load` catches
from gpurig.spec_text import decode, problem, read_mapping
from gpurig.spec_types import (
    AptPackage,
    ControllerPath,
    HostPath,
    ModelName,
    NoProxyHost,
    ProxyUrl,
    PythonRequirement,
    ca_bundle_problem,
    index_url_problem,
    package_name_problem,
    shown,
    text_problem,
)

DEFAULT_STACK = Path("stack.yml")
PYTHON_VERSION = re.compile(r"^3\.\d{1,2}$")
PIN = re.compile(r"^\d+(\.\d+)*([a-z]+\d+)?(\.post\d+)?$")
VARIANT = re.compile(r"^(cpu|cu\d{3})$")
CUDA_DOTTED = re.compile(r"^(\d{2})\.(\d)$")
MAX_SPEC_BYTES = 1 << 20


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _plain_text(cls, value: Any, info: ValidationInfo) -> Any:
        """No field holds control characters or Jinja markers, whatever its own checks miss."""
        kind = cls.model_fields[str(info.field_name)].annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            return value  # checked field by field, so problems carry the inner field's name
        problem = text_problem(value)
        if problem:
            raise ValueError(problem)
        return value


def _python_version(value: str) -> str:
    if not PYTHON_VERSION.fullmatch(value):
        raise ValueError(f"{shown(value)} is not a Python version like 3.11 (quote it in YAML)")
    return value


PythonVersion = Annotated[str, AfterValidator(_python_version)]


class Torch(Strict):
    version: str = Field(description="exact torch release, e.g. 2.13.0")
    variants: list[str] = Field(
        min_length=1,
        description="builds to lock: cpu and/or CUDA variants (cu130 or 13.0); GPU hosts get "
        "the first CUDA variant their driver runs, GPU-less hosts get cpu",
    )

    @field_validator("version")
    @classmethod
    def _exact(cls, value: str) -> str:
        if not PIN.fullmatch(value):
            raise ValueError(f"must be an exact version like 2.13.0, got {shown(value)}")
        return value

    versions: dict[str, str] = Field(
        default_factory=dict,
        description="a variant's own torch release where it differs from `version`, e.g. "
        "{cu128: 2.10.0}: PyPI's last CUDA 12 build, for hosts on driver 535/550",
    )

    @field_validator("variants")
    @classmethod
    def _variants(cls, values: list[str]) -> list[str]:
        out = []
        for value in values:
            tag = _variant_tag(value)
            if tag in out:
                raise ValueError(f"{shown(value)} is listed twice")
            out.append(tag)
        return out

    @field_validator("versions")
    @classmethod
    def _versions(cls, values: dict[str, str]) -> dict[str, str]:
        out = {}
        for key, version in values.items():
            if not PIN.fullmatch(str(version)):
                raise ValueError(
                    f"{key}: must be an exact version like 2.10.0, got {shown(version)}"
                )
            out[_variant_tag(key)] = str(version)
        return out

    @model_validator(mode="after")
    def _versions_name_variants(self) -> Torch:
        unknown = [v for v in self.versions if v not in self.variants]
        if unknown:
            raise ValueError(
                f"versions: {', '.join(unknown)} is not in torch.variants "
                f"({', '.join(self.variants)}): list it there too"
            )
        return self

    def version_of(self, variant: str) -> str:
        """The torch release this variant installs."""
        return self.versions.get(variant, self.version)


def _variant_tag(value: str) -> str:
    """'13.0' or 'cu130' -> 'cu130'; a ValueError names anything else."""
    dotted = CUDA_DOTTED.fullmatch(value)
    tag = f"cu{dotted[1]}{dotted[2]}" if dotted else value
    if not VARIANT.fullmatch(tag):
        raise ValueError(f"{shown(value)} is not a variant: use cpu, or CUDA as cu130 or 13.0")
    return tag


class Nvidia(Strict):
    driver_branch: int = Field(580, ge=450, le=999, description="NVIDIA driver branch to install")
    install_driver: bool = Field(True, description="install or upgrade the driver when needed")
    open_kernel_modules: bool = Field(False, description="NVIDIA's open kernel modules")
    hold_packages: bool = Field(True, description="hold driver and kernel packages (no drift)")
    persistence_mode: bool = Field(True, description="keep the driver loaded between jobs")
    cuda_toolkit: bool = Field(False, description="install a system nvcc (for building kernels)")
    require_gpu: bool = Field(False, description="fail hosts that have no usable NVIDIA GPU")
    allow_reboot: bool = Field(True, description="reboot when a new driver needs it")


class HostLayout(Strict):
    user: str = Field("gpurig", pattern=r"^[a-z_][a-z0-9_-]{0,31}$", description="service user")
    # The defaults are host paths: hostlayout holds every one.
    venv: HostPath = Field(
        hostlayout.DEFAULT_VENV, description="live venv path (a link to the locked venv)"
    )
    hf_home: HostPath = Field(hostlayout.DEFAULT_HF_HOME, description="Hugging Face cache")
    report: HostPath = Field(hostlayout.DEFAULT_REPORT, description="where smoke writes its report")


class Network(Strict):
    ca_bundle: ControllerPath | None = Field(
        None,
        description="PEM file on the controller whose CAs hosts must trust (proxies); it must "
        "hold certificates only; a relative path is read from the current folder",
    )
    proxy: ProxyUrl | None = Field(
        None,
        description="HTTP(S) proxy URL hosts use; credentials in it (`user:pass@`) are masked "
        f"in messages and kept to {hostlayout.ENV_FILE} (0640, root and the service user) and "
        "apt's proxy file (0600), off every command line and out of Ansible's output",
    )
    no_proxy: list[NoProxyHost] = Field(
        default_factory=lambda: ["localhost", "127.0.0.1"], description="hosts the proxy skips"
    )


class Sources(Strict):
    # Declared first: the URL validators below read it from the fields validated before them.
    allow_insecure_http: bool = Field(
        False,
        description="allow plain http:// indexes (a mirror on a network you trust: anyone on "
        "the path can swap packages); without it indexes are https:// or file://",
    )
    index: str = Field(
        "https://pypi.org/simple",
        description="main package index (a PyPI mirror on closed networks); no credentials in "
        "the URL: use a netrc file or uv's `UV_INDEX_<NAME>_USERNAME`/`_PASSWORD` variables",
    )
    torch_index: dict[str, str | Literal[False]] = Field(
        default_factory=dict,
        description="per variant: a torch wheel index URL, or false to use find_links and the "
        "main index only; defaults to PyTorch's index (or PyPI for the variant PyPI carries)",
    )
    find_links: list[ControllerPath] = Field(
        default_factory=list, description="controller folders of wheels; used wheels are pushed"
    )
    exclude_newer: str | None = Field(
        None,
        pattern=r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}:\d{2}Z)?$",
        description="ignore releases after this date: `gpurig resolve` then repeats exactly",
    )

    @field_validator("index")
    @classmethod
    def _index(cls, value: str, info: ValidationInfo) -> str:
        problem = index_url_problem(value, info.data.get("allow_insecure_http") is True)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("torch_index")
    @classmethod
    def _keys(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        for key, url in value.items():
            if not VARIANT.fullmatch(key):
                raise ValueError(f"key {shown(key)} is not a variant (cpu, cu126, cu130, ...)")
            insecure_ok = info.data.get("allow_insecure_http") is True
            problem = None if url is False else index_url_problem(str(url), insecure_ok)
            if problem:
                raise ValueError(f"{key}: {problem}")
        return value

    @model_serializer(mode="wrap")
    def _opt_in_shown_when_set(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Left out while false, so that adding the field changed no lock digest, render hash
        # or host data key of an existing spec.
        data: dict[str, Any] = handler(self)
        if not self.allow_insecure_http:
            data.pop("allow_insecure_http", None)
        return data


class Install(Strict):
    offline: bool = Field(False, description="push a wheelhouse; hosts use no index at all")
    wheelhouse: ControllerPath | None = Field(
        None, description="controller folder for the offline bundle"
    )

    @model_validator(mode="after")
    def _offline_needs_wheelhouse(self) -> Install:
        if self.offline and not self.wheelhouse:
            raise ValueError("offline: true needs wheelhouse (a controller folder for the bundle)")
        return self


class Smoke(Strict):
    on_deploy: bool = Field(True, description="run `bloomkit smoke` at the end of each deploy")
    model: ModelName = Field("tiny", description="tiny, or a model name / local dir")
    quick: bool = Field(False, description="fewer training steps: a faster, weaker check")
    timeout_s: int = Field(900, ge=30, le=86400, description="smoke is stopped after this long")


HUB_REPO = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.-]{0,95}/)?[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
COMMIT = re.compile(r"^[0-9a-f]{40}$")


class HubModel(Strict):
    repo: str = Field(description="Hugging Face repo id (org/name)")
    revision: str = Field(description="the commit to place: 40 hex digits, never a branch")
    source: Literal["auto", "hub", "controller"] = Field(
        "auto",
        description="hub: the host downloads it; controller: pushed from the controller's HF "
        "cache; auto: pushed to offline hosts (install.offline), downloaded elsewhere",
    )

    @field_validator("repo")
    @classmethod
    def _repo(cls, value: str) -> str:
        # The Hub's own rules: its cache folder (models--org--name) must map back one way.
        bad = not HUB_REPO.fullmatch(value) or "--" in value or ".." in value
        if bad or value.endswith((".", "-", ".git")):
            raise ValueError(f"{shown(value)} is not a Hugging Face repo id like org/name")
        return value

    @field_validator("revision")
    @classmethod
    def _commit(cls, value: str) -> str:
        if not COMMIT.fullmatch(value):
            raise ValueError(
                f"{shown(value)} is not a commit: pin the 40-hex sha the Hub shows for it, "
                "so every host gets the same files"
            )
        return value


# registry/name[:tag][@sha256:digest], one word: it lands on a docker command line.
IMAGE_REFERENCE = (
    r"^[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?$"
)


class Containers(Strict):
    enabled: bool = Field(
        False,
        description="Debian's docker.io on every host; on GPU hosts also NVIDIA's container "
        "toolkit (its apt repository, key fingerprint checked) as docker's nvidia runtime, and "
        "the verify stage runs the CUDA image's smoke test with all GPUs (docs/gpu.md)",
    )
    image: str | None = Field(
        None,
        pattern=IMAGE_REFERENCE,
        description="the image GPU hosts smoke-test (`docker run --gpus all`), from a registry "
        "they reach; default: the lock target's gpurig/bloomkit:<target>-<hash>, as "
        "`gpurig image build` tags it, which the host must then already hold",
    )


class Dcgm(Strict):
    enabled: bool = Field(
        False,
        description="on hosts with datacenter GPUs: NVIDIA's DCGM 4 from the CUDA repository, "
        "nv-hostengine (nvidia-dcgm) running, and `dcgmi diag` as a smoke stage",
    )
    diag_level: int = Field(
        1, ge=1, le=4, description="`dcgmi diag -r` level: 1 quick (seconds) to 4 (hours)"
    )


class Stack(Strict):
    version: Literal[1] = Field(1, description="schema version of this file")
    python: list[PythonVersion] = Field(min_length=1, description="Python versions hosts may run")
    torch: Torch
    packages: dict[str, str] = Field(
        default_factory=dict, description="exact pins: transformers, peft, accelerate, ..."
    )
    extra_packages: list[PythonRequirement] = Field(
        default_factory=list, description="more requirements (PEP 508, one each; no options)"
    )
    apt_packages: list[AptPackage] = Field(
        default_factory=list, description="more Debian/Ubuntu packages (`name[:arch][=version]`)"
    )
    nvidia: Nvidia = Nvidia()
    host: HostLayout = HostLayout()
    network: Network = Network()
    sources: Sources = Sources()
    install: Install = Install()
    smoke: Smoke = Smoke()
    models: list[HubModel] = Field(
        default_factory=list,
        description="models placed in every host's HF cache (host.hf_home) at a pinned "
        "revision, each file checked against the snapshot's hashes (docs/stack.md)",
    )
    containers: Containers = Containers()
    dcgm: Dcgm = Dcgm()

    @field_validator("python")
    @classmethod
    def _python(cls, values: list[str]) -> list[str]:
        if len(set(values)) != len(values):
            raise ValueError("lists a version twice")
        return values

    @field_validator("packages")
    @classmethod
    def _pins(cls, value: dict[str, str]) -> dict[str, str]:
        for name, pin in value.items():
            problem = package_name_problem(name)
            if problem:
                raise ValueError(problem)
            if canonicalize_name(name) == "torch":
                raise ValueError("torch is set under torch.version, not packages")
            if not PIN.fullmatch(pin):
                raise ValueError(f"{name}: {shown(pin)} is not an exact version like 4.57.1")
        return value

    @field_validator("models")
    @classmethod
    def _models_once(cls, values: list[HubModel]) -> list[HubModel]:
        repos = [m.repo.lower() for m in values]
        twice = next((m.repo for m in values if repos.count(m.repo.lower()) > 1), None)
        if twice:
            raise ValueError(f"{shown(twice)} is listed twice: one revision per model")
        return values

    def digest(self) -> str:
        """Hash of what decides the lock: a changed pin or source means a stale lock."""
        relevant = self.model_dump(include={"python", "torch", "packages", "extra_packages"})
        # A permission, not a source: opting in to http changes nothing that gets locked.
        relevant["sources"] = self.sources.model_dump(exclude={"allow_insecure_http"})
        blob = json.dumps(relevant, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()


def parse(text: str, source: str = "stack.yml") -> Stack:
    data = read_mapping(text, source)
    try:
        return Stack.model_validate(data)
    except ValidationError as error:
        raise SpecErrors(source, [problem(e) for e in error.errors()]) from None


def load(path: Path = DEFAULT_STACK) -> Stack:
    """The spec file, and the controller files it names: every front end reads it here."""
    try:
        size = path.stat().st_size
        if size > MAX_SPEC_BYTES:
            raise UsageError(f"{path} is {size} bytes: too large for a spec (at most 1 MiB)")
        data = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{path} not found: pass --stack FILE or run from the repo root") from None
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror}") from None
    stack = parse(decode(data, str(path)), str(path))
    problem = ca_bundle_problem(stack.network.ca_bundle)
    if problem:
        raise SpecErrors(str(path), [f"network.ca_bundle: {problem}"])
    return stack


def field_reference(model: type[BaseModel] = Stack, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted field, default, description) for every leaf field: docs/stack.md's table."""
    rows: list[tuple[str, str, str]] = []
    for name, info in model.model_fields.items():
        kind = info.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            rows += field_reference(kind, f"{prefix}{name}.")
            continue
        default = info.get_default(call_default_factory=True)
        shown = "required" if info.is_required() else json.dumps(default)
        rows.append((f"{prefix}{name}", shown, info.description or ""))
    return rows


def reference_table() -> str:
    lines = ["| field | default | meaning |", "| --- | --- | --- |"]
    lines += [f"| `{f}` | `{d}` | {m} |" for f, d, m in field_reference()]
    return "\n".join(lines) + "\n"
