"""Support for the image tests and benchmarks: a bloomkit wheel that differs in code only."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import uuid
from pathlib import Path

from gpurig import bloomkit_wheel, lock
from gpurig.bloomkit_wheel import Wheel


def touched_bloomkit_wheel(workdir: Path) -> Wheel:
    """bloomkit's wheel with a new comment in its code: same dependencies, another wheel.

    Built from a copy of the sources (the checkout is never touched); the comment is unique per
    call, so BuildKit cannot have bloomkit's layer cached from an earlier run.
    """
    source = workdir / "bloomkit"
    shutil.copytree(
        bloomkit_wheel.SOURCE,
        source,
        ignore=shutil.ignore_patterns("__pycache__", "tests", "*.egg-info", "build", "dist"),
    )
    init = source / "src" / "bloomkit" / "__init__.py"
    init.write_text(init.read_text() + f"# touched: {uuid.uuid4().hex}\n")
    out = workdir / "wheel"
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000"}
    subprocess.run(
        [lock._uv(), "build", "--wheel", "--quiet", "--out-dir", str(out), str(source)],
        check=True,
        env=env,
    )
    (path,) = out.glob("bloomkit-*.whl")
    return Wheel(path, hashlib.sha256(path.read_bytes()).hexdigest())
