"""bloomkit.warm imports what the smoke imports: its list is held to a real smoke's modules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# sys.modules at exit, one name a line; then the module run as __main__ with the given argv.
DUMP = """
import atexit, runpy, sys
out, name, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
atexit.register(lambda: open(out, "w").write("\\n".join(sorted(sys.modules))))
sys.argv = [name, *argv]
runpy.run_module(name, run_name="__main__")
"""
# What the smoke may load that the warm-up leaves to it: a handful, not a package.
LEFT_TO_THE_SMOKE = 25


def _modules(tmp_path: Path, name: str, *argv: str) -> set[str]:
    out = tmp_path / f"{name}.modules"
    done = subprocess.run(
        [sys.executable, "-c", DUMP, str(out), name, *argv],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return set(out.read_text().split())


@pytest.mark.slow
def test_the_warm_up_imports_what_the_smoke_imports(tmp_path: Path) -> None:
    report = str(tmp_path / "report.json")
    # As the deploy runs it (stack.yml: smoke.model tiny).
    smoke = _modules(tmp_path, "bloomkit", "smoke", "--json", report, "--model", "tiny")
    warm = _modules(tmp_path, "bloomkit.warm")
    left = sorted(smoke - warm)
    assert len(left) <= LEFT_TO_THE_SMOKE, left
    assert len(warm - smoke) < len(smoke) // 10, sorted(warm - smoke)[:50]  # no more than it
