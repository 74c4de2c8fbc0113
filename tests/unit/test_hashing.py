"""The host-side `gpurig_sha256`: sha256sum for small files, OpenSSL's for large ones where
present, and a root-only memo of large files' digests keyed by what any write changes."""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from gpurig.plan.hashing import (
    MEMO_MAX_BYTES,
    MEMO_MIN_BYTES,
    SHA256_STDIN,
    sha256_command,
    sha256_function,
)

TOOLS = ["awk", "cat", "cut", "date", "sha256sum", "stat"]


def _bin(tmp_path: Path, openssl: bool) -> str:
    bin_dir = tmp_path / ("bin-openssl" if openssl else "bin")
    bin_dir.mkdir(exist_ok=True)
    for tool in TOOLS + (["openssl"] if openssl else []):
        where = shutil.which(tool)
        if where is None:
            pytest.skip(f"no {tool} on this machine")
        if not (bin_dir / tool).exists():
            (bin_dir / tool).symlink_to(where)
    return str(bin_dir)


def _digest(path: Path, memo: Path, bin_dir: str, racy_s: int = 0) -> str:
    script = sha256_function(str(memo), racy_s) + "\n" + sha256_command(shlex.quote(str(path)))
    done = subprocess.run(
        ["/bin/sh", "-c", script], env={"PATH": bin_dir}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def memo(tmp_path: Path) -> Path:
    folder = tmp_path / "memo-folder"
    folder.mkdir(mode=0o755)
    return folder / "sha256-memo"


@pytest.mark.parametrize("openssl", [True, False])
@pytest.mark.parametrize("size", [300_000, MEMO_MIN_BYTES + 5])
def test_every_branch_prints_the_files_sha256(
    tmp_path: Path, memo: Path, openssl: bool, size: int
) -> None:
    target = tmp_path / "odd name's file"
    target.write_bytes(os.urandom(size))
    digest = _digest(target, memo, _bin(tmp_path, openssl))
    assert digest == hashlib.sha256(target.read_bytes()).hexdigest()
    assert memo.exists() == (size >= MEMO_MIN_BYTES)  # small files are never remembered


@pytest.mark.parametrize("openssl", [True, False])
def test_the_stdin_hasher_prints_the_digest_first_with_or_without_openssl(
    tmp_path: Path, openssl: bool
) -> None:
    """The pushes' one-pass `tee | hasher` reads the digest as the line's first word."""
    body = os.urandom(70_000)
    done = subprocess.run(
        ["/bin/sh", "-c", SHA256_STDIN],
        input=body,
        env={"PATH": _bin(tmp_path, openssl)},
        capture_output=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0].decode() == hashlib.sha256(body).hexdigest()


def _large(tmp_path: Path) -> Path:
    target = tmp_path / "uv"
    target.write_bytes(os.urandom(MEMO_MIN_BYTES + 1))
    return target


def _forge(memo: Path) -> str:
    """Replace every remembered digest by another: what the function prints now shows
    whether it read the memo or the file."""
    fake = "f" * 64
    memo.write_text("".join(line[:-64] + fake + "\n" for line in memo.read_text().splitlines()))
    return fake


def test_an_unchanged_large_file_is_answered_from_the_memo(tmp_path: Path, memo: Path) -> None:
    target, bin_dir = _large(tmp_path), _bin(tmp_path, True)
    real = _digest(target, memo, bin_dir)
    assert memo.stat().st_mode & 0o777 == 0o600
    assert real in memo.read_text()
    fake = _forge(memo)
    assert _digest(target, memo, bin_dir) == fake


def test_any_write_to_the_file_is_hashed_again(tmp_path: Path, memo: Path) -> None:
    target, bin_dir = _large(tmp_path), _bin(tmp_path, True)
    _digest(target, memo, bin_dir)
    _forge(memo)
    data = bytearray(target.read_bytes())
    data[10] ^= 1
    with target.open("r+b") as f:  # same size, same inode: only mtime and ctime move
        f.write(bytes(data))
    assert _digest(target, memo, bin_dir) == hashlib.sha256(data).hexdigest()
    os.chmod(target, 0o600)  # metadata only: ctime moves, the file is hashed again
    assert _digest(target, memo, bin_dir) == hashlib.sha256(data).hexdigest()


def test_a_file_changed_within_the_racy_window_is_not_remembered(
    tmp_path: Path, memo: Path
) -> None:
    target = _large(tmp_path)
    _digest(target, memo, _bin(tmp_path, True), racy_s=3600)
    assert not memo.exists()


def test_a_memo_that_is_a_link_or_in_a_foreign_folder_is_not_used(
    tmp_path: Path, memo: Path
) -> None:
    target, bin_dir = _large(tmp_path), _bin(tmp_path, True)
    real = _digest(target, memo, bin_dir)
    _forge(memo)
    elsewhere = memo.rename(tmp_path / "elsewhere")
    memo.symlink_to(elsewhere)
    assert _digest(target, memo, bin_dir) == real
    if os.geteuid() == 0:  # a folder someone else owns: they could rewrite the memo
        memo.unlink()
        elsewhere.rename(memo)
        os.chown(memo.parent, 65534, 65534)
        assert _digest(target, memo, bin_dir) == real


def test_the_memo_is_emptied_past_its_bound(tmp_path: Path, memo: Path) -> None:
    memo.write_text("x" * MEMO_MAX_BYTES + "\n")
    memo.chmod(0o600)
    target = _large(tmp_path)
    real = _digest(target, memo, _bin(tmp_path, True))
    assert memo.read_text().split()[-1] == real
    assert memo.stat().st_size < 1000
