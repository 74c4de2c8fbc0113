"""The controller's own Hugging Face cache: the snapshots it pushes to offline hosts.

Read where huggingface_hub reads it (HF_HUB_CACHE, else HF_HOME/hub, else
~/.cache/huggingface/hub). Every file of a snapshot is checked against its blob name before
anything is pushed (sha256 for LFS files, git's blob sha1 for small ones): a corrupt controller
copy is named here, not after the transfer. A file is hashed once per version (gpurig.digests:
the digest is kept with the file's identity), so a no-change run with a 14 GB model does not
read 14 GB. This check only names a bad copy early; the host still hashes every byte it receives.
"""

from __future__ import annotations

import os
from pathlib import Path

from gpurig import digests
from gpurig.errors import UsageError
from gpurig.hostlayout import model_dir
from gpurig.plan.models import ModelFile, PushedModel


def cache_dir() -> Path:
    hub = os.environ.get("HF_HUB_CACHE")
    if hub:
        return Path(hub)
    home = os.environ.get("HF_HOME") or str(Path.home() / ".cache" / "huggingface")
    return Path(home) / "hub"


def blob_matches(path: Path, blob: str) -> bool:
    """Is the file's content the blob `blob` (its name in the cache)?"""
    if len(blob) not in (40, 64):
        return False
    return digests.file_digest(path, git=len(blob) == 40) == blob


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
