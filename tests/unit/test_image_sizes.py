"""Image sizes without downloading a wheel: the locked wheel picked, a zip read by ranges."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from gpurig.errors import GpurigError
from gpurig.images import sizes


def test_best_wheel_is_the_locked_one_for_the_target() -> None:
    files = [
        {"filename": "x-1.0.tar.gz", "hashes": {"sha256": "a"}},
        {"filename": "x-1.0-py3-none-win_amd64.whl", "hashes": {"sha256": "b"}},
        {"filename": "x-1.0-cp311-cp311-manylinux_2_17_x86_64.whl", "hashes": {"sha256": "c"}},
        {"filename": "x-1.0-py3-none-manylinux2010_x86_64.whl", "hashes": {"sha256": "d"}},
        {"filename": "x-1.0-cp312-cp312-manylinux_2_28_x86_64.whl", "hashes": {"sha256": "e"}},
        {"filename": "x-1.0-cp311-cp311-manylinux_2_28_x86_64.whl", "hashes": {"sha256": "f"}},
    ]
    assert sizes._best("x", files, {"a", "b", "c", "d", "e"}, "3.11")["hashes"]["sha256"] == "c"
    assert sizes._best("x", files, {"b", "d", "e"}, "3.11")["hashes"]["sha256"] == "d"
    with pytest.raises(GpurigError, match="no locked wheel of x"):
        sizes._best("x", files, {"b", "e"}, "3.11")


def test_range_file_reads_a_zip_directory(tmp_path: Path) -> None:
    import functools
    import http.server
    import threading

    wheel = tmp_path / "x-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x/__init__.py", "a" * 1000)
        archive.writestr("x/data.bin", b"\0" * 5000)

    class Ranges(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            start, end = map(int, self.headers["Range"].removeprefix("bytes=").split("-"))
            data = wheel.read_bytes()[start : end + 1]
            self.send_response(206)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    handler = functools.partial(Ranges, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/{wheel.name}"
        remote = sizes._RangeFile(url, wheel.stat().st_size)
        with zipfile.ZipFile(remote) as archive:
            assert sizes._contents(archive) == (6000, 1000)
    finally:
        server.shutdown()
