"""bloomkit.warm imports what the smoke imports: its list is held to a real smoke's modules."""

from __future__ import annotations

import json
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


# What gpurig's import check imports (gpurig.plan.venv.import_check): compiled by the check.
CHECK_IMPORTS = "import importlib.metadata, torch, transformers, bloomkit"
# Source files loaded, one path a line, after `code` ran.
FILES = """
import sys
exec(sys.argv[2])
files = (getattr(m, "__file__", None) for m in list(sys.modules.values()))
open(sys.argv[1], "w").write("\\n".join(sorted({f for f in files if f and f.endswith(".py")})))
"""


def _files(tmp_path: Path, label: str, code: str) -> set[Path]:
    out = tmp_path / f"{label}.files"
    done = subprocess.run(
        [sys.executable, "-c", FILES, str(out), code],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return {Path(line).resolve() for line in out.read_text().split()}


@pytest.mark.slow
def test_beside_the_check_covers_most_of_what_the_smoke_compiles(tmp_path: Path) -> None:
    import sysconfig

    from bloomkit import warm

    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    check = _files(tmp_path, "check", CHECK_IMPORTS)
    smoke = _files(tmp_path, "smoke", f"{CHECK_IMPORTS}\nimport bloomkit.warm as w; w.main([])")
    imported = _files(tmp_path, "imports", f"import {', '.join(warm.BESIDE_CHECK_IMPORTS)}")
    left = smoke - check  # what the smoke would compile after the check
    size = {f: f.stat().st_size for f in left}
    covered = {f for f in left if f in imported}
    for folder, levels in warm.folders(site):
        if not folder.is_dir():  # bloomkit is an editable install here
            continue
        files = set(folder.glob("*.py") if levels == 0 else folder.rglob("*.py"))
        used = sum(size.get(f.resolve(), 0) for f in files)
        # Half or more of each folder is what the smoke loads: no folder compiled in vain.
        assert used >= sum(f.stat().st_size for f in files) / 2, folder
        covered |= {f.resolve() for f in files} & left
    share = sum(size[f] for f in covered) / sum(size.values())
    assert share >= 0.85, f"beside the check: {share:.0%} of the smoke's bytes to compile"


def test_beside_the_check_imports_no_torch(tmp_path: Path) -> None:
    """The check compiles torch's modules meanwhile: importing torch here would do it twice."""
    out = tmp_path / "beside.out"
    code = f"""
import compileall, sys
from bloomkit import warm
seen = []
compileall.compile_dir = lambda folder, **kw: seen.append(kw["invalidation_mode"].name) or True
assert warm.main(["--beside-check"]) == 0
json.dump([sorted(sys.modules), seen], open({str(out)!r}, "w"))
"""
    subprocess.run([sys.executable, "-c", "import json\n" + code], check=True, timeout=300)
    modules, seen = json.loads(out.read_text())
    assert "sympy" in modules
    assert not [m for m in modules if m == "torch" or m.startswith("torch.")]
    assert seen, "no folder compiled"
    assert set(seen) == {"TIMESTAMP"}  # as imports write them: SOURCE_DATE_EPOCH must not win


def test_warm_refuses_unknown_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    from bloomkit import warm

    assert warm.main(["--bogus"]) == 2
    assert "usage" in capsys.readouterr().err
