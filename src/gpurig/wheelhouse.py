"""Wheels the hosts cannot download, gathered on the controller.

Online, hosts install from the lock's indexes; wheels only the controller has (a local torch
build, the bloomkit wheel) are pushed to /var/cache/gpurig/wheels first. Offline
(install.offline), the controller fills install.wheelhouse with every wheel of the host's
target (pip download, hash-checked against the lock), and the hosts install from those alone.
Every front end calls `host_wheels`; the plan pushes what it returns.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
from pathlib import Path

from gpurig import lock
from gpurig.bloomkit_wheel import Wheel
from gpurig.errors import GpurigError
from gpurig.lock import Lock, Target
from gpurig.plan.steps import WheelFile
from gpurig.spec import Stack

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


def offline_wheels(stack: Stack, locked: Lock, target: Target) -> PushList:
    """Every wheel of this target from the wheelhouse, downloading the missing ones once."""
    assert stack.install.wheelhouse
    folder = Path(stack.install.wheelhouse).absolute()
    key = (str(folder), target.name)
    with _wheelhouse_lock:  # hosts of one target share one download
        if key in _wheelhouse_done:
            return _wheelhouse_done[key]
        requirements = locked.requirements(target)
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
                raise GpurigError(
                    f"the wheelhouse {folder} lacks {', '.join(missing[:5])} for "
                    f"{target.name} and pip could not download them ({why or 'no output'})"
                )
        _wheelhouse_done[key] = chosen
        return chosen


def host_wheels(stack: Stack, locked: Lock, target: Target, wheel: Wheel) -> list[WheelFile]:
    """Every wheel a host of `target` gets pushed: local builds, bloomkit, the offline set."""
    wheels = pushed_wheels(target)
    wheels[wheel.path.name] = (str(wheel.path), wheel.sha256)
    if stack.install.offline:
        wheels.update(offline_wheels(stack, locked, target))
    return [
        WheelFile(name, src, sha, Path(src).stat().st_size)
        for name, (src, sha) in sorted(wheels.items())
    ]
