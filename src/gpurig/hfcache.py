"""The controller's own Hugging Face cache: the snapshots it pushes to offline hosts.

Read where huggingface_hub reads it (HF_HUB_CACHE, else HF_HOME/hub, else
~/.cache/huggingface/hub). Every file of a snapshot is checked against its blob name before
anything is pushed (sha256 for LFS files, git's blob sha1 for small ones): a corrupt controller
copy is named here, not after the transfer. A file is hashed once per version: the digest is
kept in $XDG_CACHE_HOME/gpurig/verified-blobs.json with the file's device, inode, size, mtime
and ctime (any write changes the ctime), so a no-change run with a 14 GB model does not read
14 GB. This check only names a bad copy early; the host still hashes every byte it receives.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from functools import cache
from pathlib import Path

from gpurig import atomic
from gpurig.errors import UsageError
from gpurig.hostlayout import model_dir
from gpurig.plan.models import ModelFile, PushedModel
from gpurig.sandbox.paths import cache_home


def cache_dir() -> Path:
    hub = os.environ.get("HF_HUB_CACHE")
    if hub:
        return Path(hub)
    home = os.environ.get("HF_HOME") or str(Path.home() / ".cache" / "huggingface")
    return Path(home) / "hub"


# A file changed this recently is hashed again next time: timestamps are only as fine as the
# kernel's clock tick, so a write right after the hash could leave the identity unchanged.
RACY_S = 2.0


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


def _identity(stat: os.stat_result) -> str:
    return f"{stat.st_dev}:{stat.st_ino}:{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ctime_ns}"


def _remember(key: str, identity: str, digest: str) -> None:
    """Into the table on disk, merged with what other processes wrote meanwhile; a cache, so
    a write that fails costs a later hash, never a wrong answer."""
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


def _hash(path: Path, git: bool) -> str:
    stat = path.stat()
    key, identity = f"{'sha1' if git else 'sha256'}:{path}", _identity(stat)
    known = _verified().get(key)
    if isinstance(known, list) and len(known) == 2 and known[0] == identity:
        return str(known[1])
    digest = hashlib.sha1() if git else hashlib.sha256()
    if git:  # what `git hash-object` hashes: a header, then the bytes
        digest.update(f"blob {stat.st_size}\0".encode())
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if time.time() - stat.st_ctime > RACY_S:  # else a write in the same clock tick could hide
        _remember(key, identity, digest.hexdigest())
    return digest.hexdigest()


def blob_matches(path: Path, blob: str) -> bool:
    """Is the file's content the blob `blob` (its name in the cache)?"""
    if len(blob) not in (40, 64):
        return False
    return _hash(path, len(blob) == 40) == blob


def snapshot(repo: str, revision: str, hub: Path | None = None) -> PushedModel:
    """The files of repo@revision in the controller's cache, each checked against its blob."""
    root = (hub or cache_dir()) / model_dir(repo)
    folder = root / "snapshots" / revision
    fetch = f"`hf download {repo} --revision {revision}` on the controller"
    if not folder.is_dir():
        raise UsageError(f"models: {repo}@{revision[:12]} is not in {root.parent}: run {fetch}")
    files, sources = [], {}
    for link in sorted(p for p in folder.rglob("*") if not p.is_dir()):
        rel = link.relative_to(folder).as_posix()
        blob_path = link.resolve()
        if not link.is_symlink() or blob_path.parent != (root / "blobs").resolve():
            raise UsageError(f"models: {repo}: {rel} is not a link into the cache's blobs/")
        blob = blob_path.name
        if not blob_path.is_file() or not blob_matches(blob_path, blob):
            raise UsageError(
                f"models: {repo}: {rel} does not match its hash in {root}: run {fetch} again"
            )
        files.append(ModelFile(rel, blob, blob_path.stat().st_size))
        sources[blob] = str(blob_path)
    if not files:
        raise UsageError(f"models: {repo}@{revision[:12]} in {root} has no files: run {fetch}")
    return PushedModel(repo, revision, files, sources)
