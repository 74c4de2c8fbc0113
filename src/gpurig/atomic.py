"""Replace a file or a folder whole, so that a reader (or a run cut off half-way) never sees
half of one: the new copy is written beside the old one, then renamed over it."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import tempfile
from pathlib import Path

_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def write_text(path: Path, text: str, mode: int = 0o644) -> None:
    """path holds text, written to a temporary file in its folder and renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    done = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return bool(done == 0)


def replace_dir(staging: Path, directory: Path) -> None:
    """directory becomes staging's content (staging is consumed). Where the kernel can swap
    two paths in one step the old folder is never missing; elsewhere it is missing only
    between two renames."""
    if not directory.exists():
        staging.rename(directory)
        return
    if _exchange(staging, directory):
        shutil.rmtree(staging)  # now the old content
        return
    old = directory.with_name(f".{directory.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    directory.rename(old)
    staging.rename(directory)
    shutil.rmtree(old)
