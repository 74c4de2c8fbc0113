"""The lock: stack.yml resolved into exact, hash-pinned requirement files per target.

A target is one (variant, Python) pair, e.g. cu130-cp313. Each has a requirements file that
`uv pip sync --require-hashes` installs as is; lock/manifest.json says where the wheels come
from and which were found in controller folders (those get pushed to hosts).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gpurig import __version__, atomic, compat
from gpurig.errors import GpurigError, UsageError
from gpurig.spec import Stack

DEFAULT_LOCK_DIR = Path("lock")
MANIFEST = "manifest.json"
LOCK_VERSION = 1
CUDA_SUFFIX = re.compile(r"-cu(\d\d)$")  # nvidia-cublas-cu12: the CUDA major it is for
# Linux wheels for x86-64 GPU hosts; torch's own floor is manylinux_2_28.
PLATFORM = "x86_64-manylinux_2_28"
PIN_LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")
HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")


def target_name(variant: str, python: str) -> str:
    return f"{variant}-cp{python.replace('.', '')}"


@dataclass(frozen=True)
class Target:
    name: str
    variant: str
    python: str
    file: str
    sha256: str
    index: str
    extra_index: str | None
    find_links: list[str]
    packages: dict[str, str]
    # file name -> (controller folder, sha256) of wheels found in find_links folders
    local_wheels: dict[str, list[str]] = field(default_factory=dict)

    @property
    def torch(self) -> str:
        return self.packages["torch"]

    def uv_source_args(self, find_links: Iterable[str] | None = None) -> list[str]:
        """Index flags for uv; find_links can be replaced by host-side folders."""
        args = ["--index-url", self.index]
        if self.extra_index:
            # torch's index also serves numpy & co.; take each package's best version, as
            # resolution did, or the pinned hashes may not match what the first index offers.
            args += ["--extra-index-url", self.extra_index, "--index-strategy", "unsafe-best-match"]
        for folder in self.find_links if find_links is None else find_links:
            args += ["--find-links", folder]
        return args


@dataclass(frozen=True)
class Lock:
    directory: Path
    spec_sha256: str
    targets: dict[str, Target]
    unavailable: dict[str, str]

    def target(self, variant: str, python: str) -> Target | None:
        return self.targets.get(target_name(variant, python))

    def requirements(self, target: Target) -> Path:
        return self.directory / target.file

    def assert_fresh(self, stack: Stack) -> None:
        if self.spec_sha256 != stack.digest():
            raise UsageError(
                f"{self.directory} is stale for this stack.yml (pins or sources changed): "
                "run `gpurig resolve`"
            )
        for target in self.targets.values():
            data = self.requirements(target).read_bytes()
            if hashlib.sha256(data).hexdigest() != target.sha256:
                raise UsageError(
                    f"{self.directory / target.file} was edited by hand: run `gpurig resolve`"
                )


def load(directory: Path = DEFAULT_LOCK_DIR) -> Lock:
    path = directory / MANIFEST
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"no lock at {path}: run `gpurig resolve`") from None
    except (OSError, json.JSONDecodeError) as error:
        raise UsageError(f"{path} is unreadable ({error}): run `gpurig resolve`") from None
    if raw.get("lock_version") != LOCK_VERSION:
        raise UsageError(f"{path} has lock_version {raw.get('lock_version')}: run `gpurig resolve`")
    targets = {name: Target(**t) for name, t in raw["targets"].items()}
    return Lock(directory, raw["spec_sha256"], targets, raw.get("unavailable", {}))


def parse_requirements(text: str) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, sha256 hashes) from a hash-pinned requirements file."""
    pins: dict[str, tuple[str, list[str]]] = {}
    current = None
    for line in text.splitlines():
        match = PIN_LINE.match(line)
        if match:
            current = match[1].lower()
            pins[current] = (match[2], [])
        if current:
            pins[current][1].extend(HASH.findall(line))
    return pins


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _wheel_variant(wheel: Path) -> str | None:
    """'torch-2.13.0+cpu-...' -> 'cpu'; None for a wheel without a local label."""
    version = wheel.name.split("-")[1]
    return version.split("+", 1)[1] if "+" in version else None


def _candidates(folders: list[str], variant: str, workdir: Path) -> list[str]:
    """A find-links view without torch builds of other variants (uv's ==2.13.0 matches +cpu)."""
    view = workdir / f"find-links-{variant}"
    view.mkdir()
    for folder in folders:
        for wheel in Path(folder).glob("*.whl"):
            label = _wheel_variant(wheel)
            if wheel.name.startswith("torch-") and label not in (None, variant):
                continue
            if not (view / wheel.name).exists():
                (view / wheel.name).symlink_to(wheel.resolve())
    return [str(view)]


def _local_wheels(folders: list[str], wanted: set[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for folder in folders:
        for wheel in sorted(Path(folder).glob("*.whl")):
            digest = _sha256(wheel)
            if digest in wanted:
                found[wheel.name] = [folder, digest]
    return found


def _uv() -> str:
    beside = Path(sys.executable).with_name("uv")  # the venv's uv, when gpurig runs from one
    found = str(beside) if beside.exists() else shutil.which("uv")
    if not found:
        raise GpurigError("uv not found: install it (`pip install uv`) or run from the .venv")
    return found


def _requirements_in(stack: Stack, variant: str) -> str:
    lines = [f"torch=={stack.torch.version_of(variant)}"]
    lines += [f"{name}=={pin}" for name, pin in stack.packages.items()]
    lines += list(stack.extra_packages)
    return "\n".join(lines) + "\n"


def _compile(stack: Stack, variant: str, python: str, workdir: Path) -> Target | str:
    """Resolve one target; a string is the reason it cannot be resolved."""
    name = target_name(variant, python)
    (workdir / name).mkdir()
    extra = compat.torch_index(stack, variant)
    folders = [f for f in stack.sources.find_links if Path(f).is_dir()]
    source = Target(
        name, variant, python, f"{name}.txt", "", stack.sources.index, extra, folders, {}
    )
    out = workdir / source.file
    view = _candidates(folders, variant, workdir / name) if folders else []
    command = [
        _uv(), "pip", "compile", "-", "--quiet", "--no-header", "--no-annotate",
        "--generate-hashes", "--python-version", python, "--python-platform", PLATFORM,
        "--output-file", str(out), *source.uv_source_args(view),
    ]  # fmt: skip
    if stack.sources.exclude_newer:
        command += ["--exclude-newer", stack.sources.exclude_newer]
    requirements = _requirements_in(stack, variant)
    run = subprocess.run(command, input=requirements, text=True, capture_output=True)
    if run.returncode:
        lines = [ln.strip() for ln in run.stderr.splitlines() if ln.strip()]
        return " ".join(lines[-3:])[:400] or f"uv exited {run.returncode}"
    text = out.read_text()
    pins = parse_requirements(text)
    is_cuda_build = any(n.startswith("nvidia-") for n in pins) or "+cu" in pins["torch"][0]
    if (variant == "cpu") == is_cuda_build:
        got = "a CUDA" if is_cuda_build else "a CPU"
        return (
            f"the sources offer only {got} build of torch ({pins['torch'][0]}) here: add a "
            f"{variant} wheel to sources.find_links or set sources.torch_index.{variant}"
        )
    built = _built_cuda_major(pins)
    wanted_cuda = compat.cuda_version(variant)
    if wanted_cuda and built and built != wanted_cuda.split(".")[0]:
        return (
            f"the sources offer torch {pins['torch'][0]} built for CUDA {built}, not {variant}: "
            f"set torch.versions.{variant} to a release built for it, or "
            f"sources.torch_index.{variant}"
        )
    wanted = {h for _, hashes in pins.values() for h in hashes}
    return Target(
        name=name,
        variant=variant,
        python=python,
        file=source.file,
        sha256=hashlib.sha256(text.encode()).hexdigest(),
        index=source.index,
        extra_index=extra,
        find_links=folders,
        packages={n: v for n, (v, _) in sorted(pins.items())},
        local_wheels=_local_wheels(folders, wanted),
    )


def _built_cuda_major(pins: dict[str, tuple[str, list[str]]]) -> str | None:
    """The CUDA major version a resolved torch is built for: its local label (+cu128), else
    its nvidia-*-cuNN dependencies; None for a CPU build or when nothing tells."""
    label = pins["torch"][0].partition("+")[2]
    if label.startswith("cu") and len(label) >= 4:
        return label[2:4]
    for name in pins:
        suffix = CUDA_SUFFIX.search(name)
        if name.startswith("nvidia-") and suffix:
            return suffix[1]
    return None


def resolve(stack: Stack, directory: Path = DEFAULT_LOCK_DIR) -> Lock:
    """Resolve every (variant, Python) target and replace the lock directory in one step."""
    pairs = [(v, p) for v in stack.torch.variants for p in stack.python]
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".lock-", dir=directory.parent))
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(lambda vp: _compile(stack, vp[0], vp[1], staging), pairs))
        targets = {}
        unavailable = {}
        for (variant, python), result in zip(pairs, results, strict=True):
            name = target_name(variant, python)
            if isinstance(result, str):
                unavailable[name] = result
                (staging / f"{name}.txt").unlink(missing_ok=True)
            else:
                targets[name] = result
        if not targets:
            reasons = "; ".join(f"{k}: {v}" for k, v in unavailable.items())
            raise GpurigError(f"no target could be resolved ({reasons})")
        manifest = {
            "lock_version": LOCK_VERSION,
            "generated_by": f"gpurig {__version__}",
            "platform": PLATFORM,
            "spec_sha256": stack.digest(),
            "targets": {name: asdict(t) for name, t in targets.items()},
            "unavailable": unavailable,
        }
        for scratch in staging.iterdir():
            if scratch.is_dir():
                shutil.rmtree(scratch)
        staging.chmod(0o755)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        # Swap in the new lock whole: readers never see half of one.
        atomic.replace_dir(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return load(directory)
