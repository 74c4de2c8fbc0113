"""bloomkit.warm's lists are held to what a real smoke loads beyond gpurig's import check."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from bloomkit import warm

# What gpurig's import check imports (gpurig.plan.venv.import_check): compiled by the check.
CHECK_IMPORTS = "import importlib.metadata, torch, transformers, bloomkit"
# The source files loaded by the end: `code` run, then (with argv) a module as __main__.
FILES = """
import atexit, runpy, sys
out, code, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
def dump():
    files = (getattr(m, "__file__", None) for m in list(sys.modules.values()))
    open(out, "w").write("\\n".join(sorted({f for f in files if f and f.endswith(".py")})))
atexit.register(dump)
exec(code)
if argv:
    sys.argv = argv
    runpy.run_module(argv[0], run_name="__main__")
"""


def _files(tmp_path: Path, label: str, code: str, *argv: str) -> set[Path]:
    out = tmp_path / f"{label}.files"
    done = subprocess.run(
        [sys.executable, "-c", FILES, str(out), code, *argv],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return {Path(line).resolve() for line in out.read_text().split()}


@pytest.mark.slow
def test_it_covers_most_of_what_the_smoke_compiles_and_little_else(tmp_path: Path) -> None:
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    check = _files(tmp_path, "check", CHECK_IMPORTS)
    # As the deploy runs it (stack.yml: smoke.model tiny).
    report = str(tmp_path / "report.json")
    smoke = _files(tmp_path, "smoke", "", "bloomkit", "smoke", "--json", report, "--model", "tiny")
    imported = _files(tmp_path, "imports", f"import {', '.join(warm.IMPORTS)}")
    left = smoke - check  # what the smoke compiles after the check
    size = {f: f.stat().st_size for f in left}
    covered = left & imported
    for folder, levels in warm.folders(site):
        if not folder.is_dir():  # bloomkit is an editable install here
            continue
        found = folder.glob("*.py") if levels == 0 else folder.rglob("*.py")
        files = {f.resolve() for f in found}
        used = sum(size.get(f, 0) for f in files)
        # Half or more of each folder is what the smoke loads: no folder compiled in vain.
        assert used >= sum(f.stat().st_size for f in files) / 2, folder
        covered |= files & left
    share = sum(size[f] for f in covered) / sum(size.values())
    assert share >= 0.85, f"{share:.0%} of the bytes the smoke compiles after the check"


def test_it_imports_no_torch(tmp_path: Path) -> None:
    """The check compiles torch's modules meanwhile: importing torch here would do it twice."""
    out = tmp_path / "warm.json"
    code = f"""
import compileall, json, sys
from bloomkit import warm
seen = []
compileall.compile_dir = lambda folder, **kw: seen.append(kw["invalidation_mode"].name) or True
assert warm.main([]) == 0
json.dump([sorted(sys.modules), seen], open({str(out)!r}, "w"))
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
    modules, seen = json.loads(out.read_text())
    assert "sympy" in modules
    assert not [m for m in modules if m == "torch" or m.startswith("torch.")]
    assert seen, "no folder compiled"
    assert set(seen) == {"TIMESTAMP"}  # as imports write them: SOURCE_DATE_EPOCH must not win


def test_it_refuses_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert warm.main(["--bogus"]) == 2
    assert "usage" in capsys.readouterr().err
