"""Build the bloomkit wheel on the controller, once per source change.

Every front end installs this one file, pinned by its sha256, next to the lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from gpurig.errors import GpurigError
from gpurig.lock import _uv

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "bloomkit"
DIST = REPO / "dist"


@dataclass(frozen=True)
class Wheel:
    path: Path
    sha256: str

    @property
    def requirement(self) -> str:
        """A hash-pinned requirement line for a wheel that sits in a find-links folder."""
        version = self.path.name.split("-")[1]
        return f"bloomkit=={version} --hash=sha256:{self.sha256}"


def _source_digest() -> str:
    digest = hashlib.sha256()
    files = [SOURCE / "pyproject.toml", *sorted((SOURCE / "src").rglob("*"))]
    for path in files:
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(SOURCE)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def build(dist: Path = DIST) -> Wheel:
    """The wheel for the current sources; rebuilt only when they changed."""
    source = _source_digest()
    stamp = dist / f"bloomkit-src-{source[:16]}.whl-name"
    if stamp.exists():
        wheel = dist / stamp.read_text().strip()
        if wheel.exists():
            return Wheel(wheel, hashlib.sha256(wheel.read_bytes()).hexdigest())
    dist.mkdir(parents=True, exist_ok=True)
    out = dist / f"build-{source[:16]}"
    # A fixed timestamp makes the wheel byte-identical for identical sources.
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000"}
    run = subprocess.run(
        [_uv(), "build", "--wheel", "--quiet", "--out-dir", str(out), str(SOURCE)],
        capture_output=True,
        text=True,
        env=env,
    )
    wheels = sorted(out.glob("bloomkit-*.whl"))
    if run.returncode or not wheels:
        raise GpurigError(f"building the bloomkit wheel failed: {run.stderr.strip()[-300:]}")
    wheel = dist / wheels[0].name
    wheels[0].replace(wheel)
    shutil.rmtree(out)
    stamp.write_text(wheel.name)
    return Wheel(wheel, hashlib.sha256(wheel.read_bytes()).hexdigest())


def build_kept(dist: Path = DIST) -> Wheel:
    """`build`, once per source change even with many processes asking at once (Ansible forks);
    the wheel named is a copy kept by content, as dist/<name> is overwritten when the sources
    change mid-run."""
    dist.mkdir(parents=True, exist_ok=True)
    with (dist / ".build.lock").open("a") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        wheel = build(dist)
        kept = dist / "by-sha256" / wheel.sha256 / wheel.path.name
        if not kept.exists():
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(wheel.path, kept)
    return Wheel(kept, wheel.sha256)
