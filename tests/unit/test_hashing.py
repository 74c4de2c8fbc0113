"""The host-side sha256 command: OpenSSL's where present, coreutils' otherwise, same digest."""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from gpurig.plan.hashing import sha256_command


def _digest(path: Path, bin_dir: str) -> str:
    command = sha256_command(shlex.quote(str(path)))
    done = subprocess.run(
        ["/bin/sh", "-c", command], env={"PATH": bin_dir}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize("with_openssl", [True, False])
def test_both_branches_print_the_files_sha256(tmp_path: Path, with_openssl: bool) -> None:
    target = tmp_path / "odd name's file"
    target.write_bytes(os.urandom(300_000))
    tools = ["cut", "sha256sum", *(["openssl"] if with_openssl else [])]
    found = {tool: shutil.which(tool) for tool in tools}
    if with_openssl and not found["openssl"]:
        pytest.skip("no openssl binary on this machine")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool, where in found.items():
        assert where, tool
        (bin_dir / tool).symlink_to(where)
    assert _digest(target, str(bin_dir)) == hashlib.sha256(target.read_bytes()).hexdigest()
