"""The controller's digests of its own files, each file hashed once per version.

What the controller pushes is compared by sha256 on the host (uv's binary, the CA bundle, the
models' blobs), so every run needs its digest. The digest is kept in
$XDG_CACHE_HOME/gpurig/verified-blobs.json (0600) with the file's device, inode, size, mtime and
ctime, as git's index does: any write to a file moves its ctime, so an unchanged identity means
unchanged bytes, and a no-change run does not read uv's 38 MB or a 14 GB model again. A file
changed in the last RACY_S seconds is not remembered (timestamps are only as fine as the clock
tick). A cache: a table that cannot be read or written costs a hash, never a wrong answer.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from functools import cache
from pathlib import Path

from gpurig import atomic
from gpurig.sandbox.paths import cache_home

RACY_S = 2.0
_this_run: dict[str, tuple[str, str]] = {}


def verified_file() -> Path:
    return cache_home() / "verified-blobs.json"


@cache
def _verified() -> dict[str, list[str]]:
    """ "<algorithm>:<path>" -> [the file's identity when hashed, its digest]."""
    try:
        table = json.loads(verified_file().read_text())
    except (OSError, ValueError):
        return {}
    return table if isinstance(table, dict) else {}


def forget() -> None:
    """Drop what this process knows, as a new run starts with only the table on disk."""
    _verified.cache_clear()
    _this_run.clear()


def _identity(stat: os.stat_result) -> str:
    return f"{stat.st_dev}:{stat.st_ino}:{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ctime_ns}"


def _remember(key: str, identity: str, digest: str) -> None:
    """Into the table on disk, merged with what other processes wrote meanwhile."""
    table = _verified()
    table[key] = [identity, digest]
    try:
        on_disk = json.loads(verified_file().read_text())
    except (OSError, ValueError):
        on_disk = {}
    merged = {**(on_disk if isinstance(on_disk, dict) else {}), key: [identity, digest]}
    try:
        verified_file().parent.mkdir(parents=True, exist_ok=True)
        atomic.write_text(verified_file(), json.dumps(merged, sort_keys=True), mode=0o600)
    except OSError:
        pass


def file_digest(path: Path | str, git: bool = False) -> str:
    """sha256 of the file, or with `git` the blob sha1 `git hash-object` gives."""
    path = Path(path)
    stat = path.stat()
    key, identity = f"{'sha1' if git else 'sha256'}:{path.absolute()}", _identity(stat)
    known = _verified().get(key)
    if isinstance(known, list) and len(known) == 2 and known[0] == identity:
        return str(known[1])
    # A file too new to remember, hashed already in this run (every host asks); never written
    # to the table, since a write in the same clock tick could have followed the hash.
    seen = _this_run.get(key)
    if seen and seen[0] == identity:
        return seen[1]
    digest = hashlib.sha1() if git else hashlib.sha256()
    if git:  # what `git hash-object` hashes: a header, then the bytes
        digest.update(f"blob {stat.st_size}\0".encode())
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if time.time() - stat.st_ctime > RACY_S:  # else a write in the same clock tick could hide
        _remember(key, identity, digest.hexdigest())
    else:
        _this_run[key] = (identity, digest.hexdigest())
    return digest.hexdigest()
