"""Stage 4, the LLM environment: the locked venv with bloomkit, swapped in atomically.

Online, hosts install from the lock's indexes; wheels only the controller has (a local torch
build, the bloomkit wheel) are pushed to /var/cache/gpurig/wheels first. Offline
(install.offline), the controller fills install.wheelhouse with every wheel of the host's
target (pip download, hash-checked against the lock; when the deploy file loads, so under
--dry too), pushes those, and uv installs with no index at all.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
from pathlib import Path

from pyinfra.api.deploy import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.operations import files

from gpurig import compat, lock
from gpurig.bloomkit_wheel import Wheel
from gpurig.deploys import SPEC_DEFAULTS, controller, host_stack
from gpurig.deploys.preflight import current_verdict
from gpurig.deploys.python import uv_settings
from gpurig.facts.system import marker_json
from gpurig.hostlayout import ENV_FILE, WHEEL_DIR, Layout, venv_id
from gpurig.lock import Target
from gpurig.operations.files import pushed
from gpurig.operations.venv import VenvPlan, locked_venv
from gpurig.spec import Stack

REQUIREMENTS_DIR = "/var/cache/gpurig/requirements"  # what each venv was built from
SHA_INDEX = ".gpurig-sha256.json"  # wheelhouse file -> [size, mtime_ns, sha256]
# lock.PLATFORM (x86_64-manylinux_2_28) as pip spells it, with every older manylinux it
# accepts: pip expands only the legacy manylinux2014/2010 names by itself.
LINUX_PLATFORMS = [
    *(f"manylinux_2_{minor}_x86_64" for minor in range(28, 16, -1)),
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
]

PushList = dict[str, tuple[str, str]]  # remote name -> (controller path, sha256)


def import_check(target: Target) -> str:
    """Run by the new venv before it is marked complete: the locked torch, of the right build."""
    cuda = compat.cuda_version(target.variant)
    return "; ".join(
        [
            "import importlib.metadata as m, torch, transformers, bloomkit",
            f"v = m.version('torch'); assert v == {target.torch!r}, 'torch ' + v",
            f"assert torch.version.cuda == {cuda!r}, 'torch CUDA ' + str(torch.version.cuda)",
        ]
    )


def venv_marker(target: Target, wheel: Wheel, python: str) -> dict[str, str]:
    """gpurig-venv.json: what a complete venv was built from (docs/host-end-state.md)."""
    return {
        "venv_id": venv_id(target, wheel.sha256),
        "target": target.name,
        "lock_sha256": target.sha256,
        "bloomkit_sha256": wheel.sha256,
        "python": python,
        "torch": target.torch,
    }


def pushed_wheels(target: Target) -> PushList:
    """Wheels the lock takes from controller folders (find_links), by file name."""
    return {
        name: (str(Path(folder) / name), sha256)
        for name, (folder, sha256) in target.local_wheels.items()
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def index_wheelhouse(folder: Path) -> dict[str, str]:
    """file name -> sha256 of the wheels in a folder; hashes are cached by size and mtime."""
    cache_file = folder / SHA_INDEX
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    out: dict[str, str] = {}
    fresh: dict[str, list[object]] = {}
    for wheel in sorted(folder.glob("*.whl")):
        stat = wheel.stat()
        entry = cache.get(wheel.name)
        if entry and entry[:2] == [stat.st_size, stat.st_mtime_ns]:
            digest = str(entry[2])
        else:
            digest = _sha256(wheel)
        out[wheel.name] = digest
        fresh[wheel.name] = [stat.st_size, stat.st_mtime_ns, digest]
    if fresh != cache:
        cache_file.write_text(json.dumps(fresh, indent=1, sort_keys=True) + "\n")
    return out


def _choose(folder: Path, requirements: str) -> tuple[PushList, list[str]]:
    """One wheel per locked package, matched by hash; and the packages with none."""
    by_hash = {sha: name for name, sha in index_wheelhouse(folder).items()}
    chosen: PushList = {}
    missing = []
    for package, (version, hashes) in lock.parse_requirements(requirements).items():
        found = next((by_hash[h] for h in hashes if h in by_hash), None)
        if found:
            chosen[found] = (str(folder / found), next(h for h in hashes if by_hash.get(h)))
        else:
            missing.append(f"{package}=={version}")
    return chosen, missing


def download_command(stack: Stack, target: Target, requirements: Path, folder: Path) -> list[str]:
    python = target.python
    command = [
        sys.executable, "-m", "pip", "download", "--isolated", "--quiet",
        "--disable-pip-version-check", "--no-deps", "--require-hashes",
        "--only-binary=:all:", *(f"--platform={p}" for p in LINUX_PLATFORMS),
        "--implementation", "cp", "--python-version", python,
        "--abi", f"cp{python.replace('.', '')}", "--abi", "abi3", "--abi", "none",
        "--dest", str(folder), "--index-url", target.index,
        "-r", str(requirements),
    ]  # fmt: skip
    if target.extra_index:
        command += ["--extra-index-url", target.extra_index]
    for links in target.find_links:
        command += ["--find-links", links]
    if stack.network.ca_bundle:
        command += ["--cert", stack.network.ca_bundle]
    return command


_wheelhouse_lock = threading.Lock()
_wheelhouse_done: dict[tuple[str, str], PushList] = {}


def offline_wheels(stack: Stack, target: Target) -> PushList:
    """Every wheel of this target from the wheelhouse, downloading the missing ones once."""
    assert stack.install.wheelhouse
    folder = Path(stack.install.wheelhouse).absolute()
    key = (str(folder), target.name)
    with _wheelhouse_lock:  # hosts of one target share one download
        if key in _wheelhouse_done:
            return _wheelhouse_done[key]
        requirements = controller().lock.requirements(target)
        text = requirements.read_text()
        folder.mkdir(parents=True, exist_ok=True)
        chosen, missing = _choose(folder, text)
        if missing:
            run = subprocess.run(
                download_command(stack, target, requirements, folder),
                capture_output=True,
                text=True,
            )
            chosen, missing = _choose(folder, text)
            if missing:
                why = " ".join(run.stderr.strip().splitlines()[-2:])[:300]
                raise DeployError(
                    f"the wheelhouse {folder} lacks {', '.join(missing[:5])} for "
                    f"{target.name} and pip could not download them ({why or 'no output'})"
                )
        _wheelhouse_done[key] = chosen
        return chosen


@deploy("LLM environment", data_defaults=SPEC_DEFAULTS)
def llm_env() -> None:
    ctl = controller()
    stack = host_stack()
    verdict = current_verdict()
    target = verdict.target
    assert target is not None
    assert verdict.python is not None
    wheel = ctl.wheel
    wheels = pushed_wheels(target)
    wheels[wheel.path.name] = (str(wheel.path), wheel.sha256)
    if stack.install.offline:
        wheels.update(offline_wheels(stack, target))
        source_args = ["--offline", "--no-index", "--find-links", WHEEL_DIR]
    else:
        source_args = target.uv_source_args(find_links=[WHEEL_DIR])
    pushed(name="Push wheels the hosts cannot download", files=wheels, directory=WHEEL_DIR)
    files.directory(name="Keep what each venv is built from", path=REQUIREMENTS_DIR, mode="755")
    requirements = ctl.lock.requirements(target).read_text().rstrip("\n") + "\n"
    identity = venv_id(target, wheel.sha256)
    plan = VenvPlan(
        link=Layout(stack).venv_link,
        venvs_dir=Layout(stack).venvs_dir,
        venv_dir=Layout(stack).venv_dir(target, wheel.sha256),
        requirements=requirements + wheel.requirement + "\n",
        requirements_path=f"{REQUIREMENTS_DIR}/{identity}.txt",
        python=verdict.python if verdict.uv_python else "/usr/bin/python3",
        marker=marker_json(venv_marker(target, wheel, verdict.python)),
        check=import_check(target),
        source_args=source_args,
        env=uv_settings(managed=verdict.uv_python),
        env_file=ENV_FILE,
    )
    locked_venv(name=f"Install the locked venv ({target.name})", plan=plan)
