"""bloomkit.warm's list is held to what a real smoke loads beyond gpurig's import check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import bloomkit
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


RECORD = "BLOOMKIT_WARM_RECORD"  # set to 1: write the list from this smoke


def _relative(files: set[Path], site: Path) -> dict[str, int]:
    """Site-packages-relative names and sizes (bloomkit's own files by its package's parent:
    an editable install here, site-packages on a host)."""
    package_parent = Path(bloomkit.__file__).resolve().parent.parent
    out = {}
    for f in files:
        for root in (site, package_parent):
            if f.is_relative_to(root):
                out[f.relative_to(root).as_posix()] = f.stat().st_size
    return out


@pytest.mark.slow
def test_the_list_is_what_the_smoke_loads_beyond_the_check(tmp_path: Path) -> None:
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    check = _files(tmp_path, "check", CHECK_IMPORTS)
    # As the deploy runs it (stack.yml: smoke.model tiny).
    report = str(tmp_path / "report.json")
    smoke = _files(tmp_path, "smoke", "", "bloomkit", "smoke", "--json", report, "--model", "tiny")
    left = _relative(smoke - check, site)  # what the smoke compiles after the check
    listed = set(warm.listed())
    if os.environ.get(RECORD) == "1":
        path = Path(warm.__file__).with_name(warm.LIST)
        path.write_text("".join(f"{name}\n" for name in sorted(left)))
        listed = set(left)
    hint = f"the locked versions moved: record the list again with {RECORD}=1 pytest {__file__}"
    covered = sum(size for name, size in left.items() if name in listed)
    assert covered >= 0.95 * sum(left.values()), hint
    # Nothing compiled in vain, and none of the check's own modules (it compiles them then).
    assert len(listed - set(left)) <= 0.05 * len(listed), hint
    assert not listed & set(_relative(check, site)), hint


def test_the_list_ships_with_the_package() -> None:
    names = warm.listed()
    assert names == sorted(names)
    assert all(not n.startswith("/") and ".." not in n and n.endswith(".py") for n in names)
    assert any(n.startswith("torch/_dynamo/") for n in names)
    assert "torch/__init__.py" not in names  # the check compiles it


def test_it_imports_no_torch(tmp_path: Path) -> None:
    """The check compiles torch's modules meanwhile: importing torch here would do it twice."""
    out = tmp_path / "warm.json"
    code = f"""
import compileall, json, sys
import bloomkit
from bloomkit import warm
seen = []
compileall.compile_file = lambda path, **kw: seen.append(kw["invalidation_mode"].name) or True
assert warm.main([]) == 0
json.dump([sorted(sys.modules), seen], open({str(out)!r}, "w"))
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
    modules, seen = json.loads(out.read_text())
    assert not [m for m in modules if m in ("torch", "sympy", "transformers")]
    assert not [m for m in modules if m.startswith(("torch.", "transformers."))]
    assert len(seen) > 500, "the list's files, those this venv has"
    assert set(seen) == {"TIMESTAMP"}  # as imports write them: SOURCE_DATE_EPOCH must not win


def test_it_refuses_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert warm.main(["--bogus"]) == 2
    assert "usage" in capsys.readouterr().err
