"""Hugging Face cache snapshots made locally, for tests and benchmarks (no hub is reachable).

`lay_out` writes files into a hub cache folder exactly as huggingface_hub does: blobs named by
their hash (sha256 for LFS files, git's blob sha1 for small ones), `snapshots/<revision>/`
links to them, `refs/main`. tests/conftest.py lays out a BLOOM made from a config with it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from gpurig.hostlayout import model_dir

# The Hub stores weights (and any file this big) in LFS: their blob is named by sha256.
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".h5", ".onnx", ".gguf", ".msgpack")
LFS_MIN_BYTES = 10 * 1024 * 1024


def blob_name(path: Path) -> str:
    size = path.stat().st_size
    lfs = path.suffix in LFS_SUFFIXES or size >= LFS_MIN_BYTES
    digest = hashlib.sha256() if lfs else hashlib.sha1(f"blob {size}\0".encode())
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def lay_out(hub: Path, repo: str, files: Mapping[str, Path]) -> str:
    """files: path in the repo -> a local file (moved into the cache). Returns the revision: a
    sha1 of the file list, standing in for the Hub's commit."""
    root = hub / model_dir(repo)
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    names = {rel: blob_name(src) for rel, src in sorted(files.items())}
    revision = hashlib.sha1(repr(sorted(names.items())).encode()).hexdigest()
    snap = root / "snapshots" / revision
    for rel, src in files.items():
        blob = root / "blobs" / names[rel]
        shutil.move(str(src), blob)
        link = snap / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(revision)
    return revision
