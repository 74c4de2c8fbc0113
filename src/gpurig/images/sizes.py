"""An image's size computed from the lock, for images that cannot be built here (CUDA bases).

For each locked distribution, the wheel a target installs is the index file whose sha256 the lock
pins and whose tags suit the target (its Python, manylinux x86_64); the index's PEP 691 JSON
gives its download size, and its zip central directory (read with two HTTP range requests, not a
download) gives what it unpacks to. The estimate adds the bytecode uv compiles (`.py` bytes times
PYC_RATIO, measured on the CPU image), the Python, and the base image. Results are cached by
sha256 (wheels never change) in $XDG_CACHE_HOME/gpurig/wheel-sizes.json.
"""

from __future__ import annotations

import io
import json
import os
import ssl
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from packaging import tags
from packaging.utils import canonicalize_name, parse_wheel_filename

from gpurig import lock
from gpurig.errors import GpurigError
from gpurig.images import render
from gpurig.lock import Lock, Target
from gpurig.sandbox.paths import cache_home

SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
# .pyc bytes per .py byte of `uv pip install --compile-bytecode`, measured on the CPU image
# (cpu-cp311: 222,958,797 B of .pyc for 169,248,650 B of .py).
PYC_RATIO = 1.32
MB = 1_000_000
# Sizes of base images and Pythons this machine cannot pull, as `docker images` reports them
# (unpacked); approximate: NVIDIA's base flavour is Ubuntu plus cudart and the driver's
# forward-compatibility libraries, its runtime flavour adds the CUDA math libraries.
BASE_SIZES_MB = {
    "base-ubuntu24.04": 260,
    "runtime-ubuntu24.04": 3400,
    "base-ubuntu22.04": 240,
    "runtime-ubuntu22.04": 3400,
}
# uv's standalone CPython (install_only_stripped), unpacked; the Debian python3.X package set
# measured on gpurig/base:bookworm (the python-system layer).
PYTHON_MB = {"uv": 110, "system": 40}


@dataclass(frozen=True)
class WheelSize:
    name: str
    filename: str
    download: int  # bytes, as the index serves it
    installed: int  # bytes of the files it unpacks to
    py: int  # bytes of its .py files (bytecode is compiled from them)


@dataclass(frozen=True)
class Estimate:
    target: str
    base: str
    base_bytes: int
    base_source: str
    python_bytes: int
    wheels: list[WheelSize]

    @property
    def download(self) -> int:
        return sum(w.download for w in self.wheels)

    @property
    def installed(self) -> int:
        return sum(w.installed for w in self.wheels)

    @property
    def bytecode(self) -> int:
        return int(sum(w.py for w in self.wheels) * PYC_RATIO)

    @property
    def total(self) -> int:
        return self.base_bytes + self.python_bytes + self.installed + self.bytecode


def _cache_file() -> Path:
    return cache_home() / "wheel-sizes.json"


def _ssl_context() -> ssl.SSLContext:
    bundle = os.environ.get("SSL_CERT_FILE")
    return ssl.create_default_context(cafile=bundle) if bundle else ssl.create_default_context()


class _RangeFile(io.RawIOBase):
    """A remote file read with HTTP range requests: enough of a file for zipfile's directory."""

    def __init__(self, url: str, size: int) -> None:
        self.url, self.size, self.position = url, size, 0
        self.context = _ssl_context()

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = 0) -> int:
        start = {0: 0, 1: self.position, 2: self.size}[whence]
        self.position = max(0, start + offset)
        return self.position

    def read(self, size: int = -1) -> bytes:
        end = self.size if size < 0 else min(self.size, self.position + size)
        if end <= self.position:
            return b""
        request = urllib.request.Request(
            self.url, headers={"Range": f"bytes={self.position}-{end - 1}"}
        )
        with urllib.request.urlopen(request, timeout=60, context=self.context) as response:
            data: bytes = response.read()
        if response.status != 206:  # a server that ignores Range sent the whole file
            data = data[self.position : end]
        self.position += len(data)
        return data


def _contents(archive: zipfile.ZipFile) -> tuple[int, int]:
    """(bytes unpacked, bytes of .py files) of a wheel."""
    infos = archive.infolist()
    python = sum(i.file_size for i in infos if i.filename.endswith(".py"))
    return sum(i.file_size for i in infos), python


@cache
def _index_files(index: str, name: str) -> list[dict[str, Any]]:
    url = f"{index.rstrip('/')}/{name}/"
    request = urllib.request.Request(url, headers={"Accept": SIMPLE_JSON})
    try:
        with urllib.request.urlopen(request, timeout=60, context=_ssl_context()) as response:
            data = json.load(response)
    except OSError as error:
        raise GpurigError(f"cannot read {url}: {error}") from None
    files: list[dict[str, Any]] = data.get("files", [])
    return files


def _supported_tags(python: str) -> list[tags.Tag]:
    """The target's tags, best first: CPython X.Y on manylinux x86-64."""
    version = tuple(int(part) for part in python.split("."))
    platforms = [f"manylinux_2_{minor}_x86_64" for minor in range(28, 4, -1)]
    platforms += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
    platforms += ["linux_x86_64"]
    return [
        *tags.cpython_tags(version, platforms=platforms),
        *tags.compatible_tags(version, platforms=platforms),
    ]


def _best(name: str, files: list[dict[str, Any]], hashes: set[str], python: str) -> dict[str, Any]:
    rank = {tag: i for i, tag in enumerate(_supported_tags(python))}
    candidates = []
    for item in files:
        filename = item["filename"]
        if not filename.endswith(".whl") or item.get("hashes", {}).get("sha256") not in hashes:
            continue
        best = min((rank[t] for t in parse_wheel_filename(filename)[3] if t in rank), default=None)
        if best is not None:
            candidates.append((best, item))
    if not candidates:
        raise GpurigError(f"no locked wheel of {name} suits CPython {python} on manylinux x86-64")
    return min(candidates, key=lambda pair: pair[0])[1]


def wheel_size(target: Target, name: str, hashes: set[str], known: dict[str, Any]) -> WheelSize:
    for filename, (folder, _sha256) in target.local_wheels.items():
        if canonicalize_name(parse_wheel_filename(filename)[0]) == name:
            path = Path(folder) / filename
            with zipfile.ZipFile(path) as archive:
                installed, py = _contents(archive)
            return WheelSize(name, filename, path.stat().st_size, installed, py)
    index = target.extra_index if name == "torch" and target.extra_index else target.index
    item = _best(name, _index_files(index, name), hashes, target.python)
    sha256 = item["hashes"]["sha256"]
    if sha256 not in known:
        size = int(item["size"])
        with zipfile.ZipFile(_RangeFile(item["url"], size)) as archive:
            installed, py = _contents(archive)
        known[sha256] = {"filename": item["filename"], "download": size, "installed": installed,
                         "py": py}  # fmt: skip
    entry = known[sha256]
    return WheelSize(name, entry["filename"], entry["download"], entry["installed"], entry["py"])


def _base(target: Target, base_mb: float | None) -> tuple[str, int, str]:
    base = render.default_base(target)
    if base_mb is not None:
        return base, int(base_mb * MB), "given with --base-size"
    if base.startswith("gpurig/base:"):
        try:
            from gpurig.sandbox.engine import docker_client

            size = int(docker_client().images.get(base).attrs["Size"])
            return base, size, "the local image"
        except Exception:  # no engine, no image: fall back to the measured size
            return base, 126 * MB, "measured here (debootstrap minbase + ca-certificates)"
    flavour = base.split(":", 1)[1].split("-", 1)[1]
    return base, BASE_SIZES_MB.get(flavour, 0) * MB, "approximate unpacked size (not pulled here)"


def estimate(locked: Lock, target: Target, base_mb: float | None = None) -> Estimate:
    pins = lock.parse_requirements(locked.requirements(target).read_text())
    cache_path = _cache_file()
    try:
        known: dict[str, Any] = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        known = {}
    with ThreadPoolExecutor(max_workers=8) as pool:
        wheels = list(
            pool.map(lambda kv: wheel_size(target, kv[0], set(kv[1][1]), known), pins.items())
        )
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    cache_path.write_text(json.dumps(known, indent=1, sort_keys=True) + "\n")
    base, base_bytes, base_source = _base(target, base_mb)
    source = render.python_source(target, render.os_of_image(base))
    return Estimate(
        target.name, base, base_bytes, base_source, PYTHON_MB[source] * MB, sorted(wheels,
        key=lambda w: -w.installed)
    )  # fmt: skip


def format_estimate(e: Estimate, top: int = 5) -> str:
    biggest = ", ".join(f"{w.name} {w.installed / 1e9:.2f}" for w in e.wheels[:top])
    return "\n".join(
        [
            f"{e.target}: {e.total / 1e9:.2f} GB computed from the lock (not built)",
            f"  base      {e.base_bytes / 1e9:6.2f} GB  {e.base} ({e.base_source})",
            f"  python    {e.python_bytes / 1e9:6.2f} GB",
            f"  wheels    {e.installed / 1e9:6.2f} GB unpacked from {len(e.wheels)} wheels "
            f"({e.download / 1e9:.2f} GB download); largest: {biggest}",
            f"  bytecode  {e.bytecode / 1e9:6.2f} GB  (.py bytes x {PYC_RATIO})",
        ]
    )
