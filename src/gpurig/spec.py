"""stack.yml: the one spec of what a host gets, parsed and checked field by field."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from gpurig.errors import UsageError

DEFAULT_STACK = Path("stack.yml")
PYTHON_VERSION = re.compile(r"^3\.\d{1,2}$")
PIN = re.compile(r"^\d+(\.\d+)*([a-z]+\d+)?(\.post\d+)?$")
VARIANT = re.compile(r"^(cpu|cu\d{3})$")
CUDA_DOTTED = re.compile(r"^(\d{2})\.(\d)$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _python_version(value: str) -> str:
    if not PYTHON_VERSION.match(value):
        raise ValueError(f"{value!r} is not a Python version like 3.11 (quote it in YAML)")
    return value


PythonVersion = Annotated[str, AfterValidator(_python_version)]


def _absolute(path: str) -> str:
    if not PurePosixPath(path).is_absolute():
        raise ValueError(f"must be an absolute path on the host, got {path!r}")
    return path


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
        if not PIN.match(value):
            raise ValueError(f"must be an exact version like 2.13.0, got {value!r}")
        return value

    @field_validator("variants")
    @classmethod
    def _variants(cls, values: list[str]) -> list[str]:
        out = []
        for value in values:
            dotted = CUDA_DOTTED.match(value)
            tag = f"cu{dotted[1]}{dotted[2]}" if dotted else value
            if not VARIANT.match(tag):
                raise ValueError(f"{value!r} is not a variant: use cpu, or CUDA as cu130 or 13.0")
            if tag in out:
                raise ValueError(f"{value!r} is listed twice")
            out.append(tag)
        return out


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
    venv: str = Field("/opt/gpurig/venv", description="live venv path (a link to the locked venv)")
    hf_home: str = Field("/var/cache/gpurig/huggingface", description="Hugging Face cache")
    report: str = Field("/var/lib/gpurig/smoke.json", description="where smoke writes its report")

    @field_validator("venv", "hf_home", "report")
    @classmethod
    def _paths(cls, value: str) -> str:
        return _absolute(value)


class Network(Strict):
    ca_bundle: str | None = Field(
        None, description="PEM file on the controller whose CAs hosts must trust (proxies)"
    )
    proxy: str | None = Field(
        None, pattern=r"^https?://[^\s]+$", description="HTTP(S) proxy URL hosts use"
    )
    no_proxy: list[str] = Field(
        default_factory=lambda: ["localhost", "127.0.0.1"], description="hosts the proxy skips"
    )


class Sources(Strict):
    index: str = Field(
        "https://pypi.org/simple",
        pattern=r"^(https?|file)://\S+$",
        description="main package index (a PyPI mirror on closed networks)",
    )
    torch_index: dict[str, str | Literal[False]] = Field(
        default_factory=dict,
        description="per variant: a torch wheel index URL, or false to use find_links and the "
        "main index only; defaults to PyTorch's index (or PyPI for the variant PyPI carries)",
    )
    find_links: list[str] = Field(
        default_factory=list, description="controller folders of wheels; used wheels are pushed"
    )
    exclude_newer: str | None = Field(
        None,
        pattern=r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}:\d{2}Z)?$",
        description="ignore releases after this date: `gpurig resolve` then repeats exactly",
    )

    @field_validator("torch_index")
    @classmethod
    def _keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key, url in value.items():
            if not VARIANT.match(key):
                raise ValueError(f"key {key!r} is not a variant (cpu, cu126, cu130, ...)")
            if url is not False and not re.match(r"^(https?|file)://\S+$", str(url)):
                raise ValueError(f"{key}: {url!r} is not a URL (or false)")
        return value


class Install(Strict):
    offline: bool = Field(False, description="push a wheelhouse; hosts use no index at all")
    wheelhouse: str | None = Field(None, description="controller folder for the offline bundle")

    @model_validator(mode="after")
    def _offline_needs_wheelhouse(self) -> Install:
        if self.offline and not self.wheelhouse:
            raise ValueError("offline: true needs wheelhouse (a controller folder for the bundle)")
        return self


class Smoke(Strict):
    on_deploy: bool = Field(True, description="run `bloomkit smoke` at the end of each deploy")
    model: str = Field("tiny", min_length=1, description="tiny, or a model name / local dir")
    quick: bool = Field(False, description="fewer training steps: a faster, weaker check")
    timeout_s: int = Field(900, ge=30, le=86400, description="smoke is stopped after this long")


class Stack(Strict):
    version: Literal[1] = Field(1, description="schema version of this file")
    python: list[PythonVersion] = Field(min_length=1, description="Python versions hosts may run")
    torch: Torch
    packages: dict[str, str] = Field(
        default_factory=dict, description="exact pins: transformers, peft, accelerate, ..."
    )
    extra_packages: list[str] = Field(default_factory=list, description="more requirements")
    apt_packages: list[str] = Field(default_factory=list, description="more Debian/Ubuntu packages")
    nvidia: Nvidia = Nvidia()
    host: HostLayout = HostLayout()
    network: Network = Network()
    sources: Sources = Sources()
    install: Install = Install()
    smoke: Smoke = Smoke()

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
            if name.lower() == "torch":
                raise ValueError("torch is set under torch.version, not packages")
            if not PIN.match(str(pin)):
                raise ValueError(f"{name}: {pin!r} is not an exact version like 4.57.1")
        return value

    def digest(self) -> str:
        """Hash of what decides the lock: a changed pin or source means a stale lock."""
        relevant = self.model_dump(include={"python", "torch", "packages", "extra_packages"})
        relevant["sources"] = self.sources.model_dump()
        blob = json.dumps(relevant, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()


def _field_path(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(top level)"


def _explain(error: Any) -> str:
    kind, message = error["type"], error["msg"]
    if kind == "extra_forbidden":
        return "unknown key (remove it, or check its spelling against docs/stack.md)"
    if kind == "missing":
        return "is required"
    got = error.get("input")
    if kind == "string_type":
        return f'should be text, got {got!r}: quote it ("{got}")'
    if kind in ("int_parsing", "int_type"):
        return f"should be a whole number, got {got!r}"
    if kind in ("bool_parsing", "bool_type"):
        return f"should be true or false, got {got!r}"
    if kind in ("list_type", "dict_type"):
        want = "a list" if kind == "list_type" else "a mapping"
        return f"should be {want}, got {type(got).__name__} {got!r}"
    return str(message).removeprefix("Value error, ")


class SpecErrors(UsageError):
    """Every problem in a spec at once, one line each."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  {source}: {p}" for p in problems)
        super().__init__(f"{len(problems)} problem(s) in {source}:\n{lines}")


def parse(text: str, source: str = "stack.yml") -> Stack:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise SpecErrors(source, [f"{where}not valid YAML ({problem})"]) from None
    if data is None:
        raise SpecErrors(source, ["is empty: it needs at least python and torch"])
    if not isinstance(data, dict):
        raise SpecErrors(source, [f"must be a mapping of keys, got {type(data).__name__}"])
    try:
        return Stack.model_validate(data)
    except ValidationError as error:
        problems = [f"{_field_path(e['loc'])}: {_explain(e)}" for e in error.errors()]
        raise SpecErrors(source, problems) from None


def load(path: Path = DEFAULT_STACK) -> Stack:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UsageError(f"{path} not found: pass --stack FILE or run from the repo root") from None
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror}") from None
    return parse(text, str(path))


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
