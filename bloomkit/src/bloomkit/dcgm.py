"""The smoke test's DCGM stage: `dcgmi diag -r LEVEL -j` on a datacenter GPU, its JSON read.

DCGM's diagnostics (levels 1 to 4: seconds to hours) check the deployment, then PCIe, memory,
compute and power under load. The JSON (`-j`) is read test by test: DCGM 3 names the top object
"DCGM GPU Diagnostic", DCGM 4 "DCGM Diagnostic"; both hold test_categories, each with tests,
each with per-GPU results whose status is Pass, Fail, Warn or Skip. A test fails when a result
does; warnings are kept. Skipped, with the reason in the report: no --dcgm-diag, no GPU, no
datacenter GPU (GeForce, Quadro and RTX workstation cards), no dcgmi on PATH.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

from bloomkit.report import StageResult
from bloomkit.stages import Fail, SmokeContext

# Seconds a diag level may take before the stage gives up (NVIDIA's guide: level 1 is about a
# minute, 2 a few minutes, 3 about half an hour, 4 one to two hours).
TIMEOUT_S = {1: 300, 2: 900, 3: 3600, 4: 3 * 3600}
NOT_DATACENTER = ("GeForce", "Quadro", "RTX ")


def datacenter(name: str) -> bool:
    """A datacenter GPU by the name the driver gives it ("NVIDIA H100 80GB HBM3")."""
    bare = name.removeprefix("NVIDIA ").strip()
    return bool(bare) and not bare.startswith(NOT_DATACENTER) and "GeForce" not in bare


def skip_reason(ctx: SmokeContext) -> str | None:
    """Why the stage does not run here, or None."""
    if ctx.args.dcgm_diag is None:
        return "no --dcgm-diag given"
    names = [str(g.get("name") or "") for g in ctx.env.get("gpus") or []]
    if not names:
        return "no GPU"
    if not any(datacenter(n) for n in names):
        return f"not a datacenter GPU ({', '.join(sorted(set(names)))}): DCGM diag skipped"
    if shutil.which("dcgmi") is None:
        return "dcgmi not found: install DCGM (stack.yml dcgm.enabled) to run its diagnostics"
    return None


def _diagnostic(data: dict[str, Any]) -> dict[str, Any]:
    found = next((v for k, v in data.items() if "Diagnostic" in k and isinstance(v, dict)), None)
    if found is None:
        raise Fail(f"dcgmi diag -j gave no diagnostic object (keys: {', '.join(data) or 'none'})")
    return found


def _warnings(result: dict[str, Any]) -> list[str]:
    raw = result.get("warnings") or result.get("warning") or []
    items = raw if isinstance(raw, list) else [raw]
    out = []
    for item in items:
        text = item.get("warning") or item.get("message") if isinstance(item, dict) else item
        if text:
            out.append(" ".join(str(text).split()))
    return out


def _where(result: dict[str, Any]) -> str:
    gpu = result.get("entity_id", result.get("gpu_id", result.get("gpu_ids")))
    return f" on GPU {gpu}" if gpu not in (None, "", []) else ""


def parse(data: dict[str, Any]) -> tuple[dict[str, str], list[str], list[str]]:
    """Test -> status (lower case), the failures and the warnings, one line each."""
    tests: dict[str, str] = {}
    failures: list[str] = []
    warnings: list[str] = []
    for category in _diagnostic(data).get("test_categories") or []:
        for test in category.get("tests") or []:
            name = str(test.get("name") or "?")
            results = [r for r in test.get("results") or [] if isinstance(r, dict)]
            statuses = [str(r.get("status") or "").lower() for r in results]
            if "fail" in statuses:
                tests[name] = "fail"
            elif test.get("status"):  # DCGM 4 also gives the test's own
                tests[name] = str(test["status"]).lower()
            else:
                tests[name] = "warn" if "warn" in statuses else (statuses or ["unknown"])[0]
            for result in results:
                said = _warnings(result)
                if str(result.get("status") or "").lower() == "fail":
                    failures.append(f"{name}{_where(result)}: {'; '.join(said) or 'failed'}")
                else:
                    warnings += [f"{name}{_where(result)}: {w}" for w in said]
    if not tests:
        raise Fail("dcgmi diag -j listed no tests")
    return tests, failures, warnings


def stage_dcgm(ctx: SmokeContext, result: StageResult) -> None:
    level = int(ctx.args.dcgm_diag or 1)
    argv = ["dcgmi", "diag", "-r", str(level), "-j"]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=TIMEOUT_S[level], check=False
        )
    except subprocess.TimeoutExpired:
        raise Fail(f"`{' '.join(argv)}` did not finish within {TIMEOUT_S[level]} s") from None
    text = done.stdout
    try:
        data = json.loads(text[text.find("{") : text.rfind("}") + 1])
    except ValueError:
        said = (done.stderr or done.stdout).strip().splitlines()
        raise Fail(
            f"`{' '.join(argv)}` exited {done.returncode} without JSON"
            + (f": {said[-1][:200]}" if said else "")
            + " (is nv-hostengine running? systemctl status nvidia-dcgm)"
        ) from None
    tests, failures, warnings = parse(data)
    result.figures = {"level": level, "tests": tests, "failures": failures, "warnings": warnings}
    if failures:
        raise Fail(f"dcgmi diag -r {level}: " + "; ".join(failures[:5]))
    result.reason = f"dcgmi diag -r {level}: {len(tests)} tests, none failed" + (
        f" ({len(warnings)} warning(s))" if warnings else ""
    )
