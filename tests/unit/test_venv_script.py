"""The venv build script for real, on this machine: uv, a hash-pinned wheel, no index.

Checks what the integration tests check on a host, in a second: a build marks its venv only
when complete, a failed build leaves the live venv alone, and the live link moves by rename.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from gpurig.facts.system import VenvState
from gpurig.hostlayout import MARKER
from gpurig.plan.steps import CHANGED
from gpurig.plan.venv import build_script, marker_json

UV = str(Path(sys.executable).with_name("uv"))
pytestmark = pytest.mark.skipif(not Path(UV).exists(), reason="needs the .venv's uv")


def make_wheel(folder: Path, version: str, extra: dict[str, str] | None = None) -> tuple[Path, str]:
    """A minimal pure wheel: module demo_pkg with VERSION, and a `demo` command printing it;
    `extra`: more files (path in the wheel: text)."""
    name = f"demo_pkg-{version}-py3-none-any.whl"
    info = f"demo_pkg-{version}.dist-info"
    files = {
        **(extra or {}),
        "demo_pkg/__init__.py": f"VERSION = {version!r}\n\ndef main():\n    print(VERSION)\n",
        f"{info}/entry_points.txt": "[console_scripts]\ndemo = demo_pkg:main\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: demo-pkg\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = []
    for path, content in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(content.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(content.encode())}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = "\n".join(record) + "\n"
    path = folder / name
    with zipfile.ZipFile(path, "w") as archive:
        for member, content in files.items():
            # A fixed date: the same version gives the same wheel (and venv id) every time.
            archive.writestr(zipfile.ZipInfo(member, date_time=(2020, 1, 1, 0, 0, 0)), content)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class Plan:
    link: str
    venvs_dir: str
    venv_dir: str
    marker: str
    script: str


def plan_for(
    root: Path,
    version: str,
    check: str | None = None,
    env_file: str | None = None,
    extra: dict[str, str] | None = None,
) -> Plan:
    wheels = root / "wheels"
    wheels.mkdir(exist_ok=True)
    _, sha = make_wheel(wheels, version, extra)
    requirements = root / f"req-{version}.txt"
    requirements.write_text(f"demo-pkg=={version} --hash=sha256:{sha}\n")
    identity = f"cpu-cp311-{sha[:12]}"
    link, venvs = str(root / "venv"), str(root / "venvs")
    marker = marker_json({"venv_id": identity})
    script = build_script(
        link=link,
        venvs_dir=venvs,
        venv_dir=f"{venvs}/{identity}",
        requirements_path=str(requirements),
        python=sys.executable,
        marker=marker,
        check=check or f"import demo_pkg; assert demo_pkg.VERSION == {version!r}",
        source_args=["--offline", "--no-index", "--find-links", str(wheels)],
        env={"UV_CACHE_DIR": str(root / "cache")},
        env_file=env_file,
        uv=UV,
    )
    return Plan(link, venvs, f"{venvs}/{identity}", marker, script)


def run(script: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


def state(plan: Plan):  # type: ignore[no-untyped-def]
    fact = VenvState()
    command = fact.command(link=plan.link, venvs_dir=plan.venvs_dir, marker=MARKER)
    out = run(command)
    assert out.returncode == 0, out.stderr
    return fact.process(out.stdout.splitlines())


def live_version(root: Path) -> str:
    python = root / "venv" / "bin" / "python"
    out = subprocess.run(
        [str(python), "-c", "import demo_pkg; print(demo_pkg.VERSION)"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def test_build_marks_the_venv_last_and_swaps_the_link(tmp_path: Path) -> None:
    plan = plan_for(tmp_path, "1.0")
    out = run(plan.script)
    assert out.returncode == 0, out.stderr
    assert os.readlink(plan.link) == plan.venv_dir
    assert live_version(tmp_path) == "1.0"
    facts = state(plan)
    assert facts.live == plan.venv_dir
    assert facts.markers == {plan.venv_dir: plan.marker}
    assert json.loads((Path(plan.venv_dir) / MARKER).read_text()) == json.loads(plan.marker)
    assert not any(p.stat().st_mode & 0o022 for p in Path(plan.venv_dir).rglob("*"))


def test_a_failed_build_leaves_the_live_venv_alone_then_a_rerun_converges(
    tmp_path: Path,
) -> None:
    first = plan_for(tmp_path, "1.0")
    assert run(first.script).returncode == 0
    broken = plan_for(tmp_path, "2.0", check="raise SystemExit('import check failed')")
    out = run(broken.script)
    assert out.returncode != 0
    assert "import check failed" in out.stderr
    assert os.readlink(first.link) == first.venv_dir  # still the old, complete venv
    assert live_version(tmp_path) == "1.0"
    assert broken.venv_dir not in state(broken).markers  # no marker: it will be rebuilt
    fixed = plan_for(tmp_path, "2.0")
    assert run(fixed.script).returncode == 0
    assert live_version(tmp_path) == "2.0"
    assert sorted(state(fixed).mtimes) == sorted([first.venv_dir, fixed.venv_dir])


def test_a_third_venv_removes_the_oldest(tmp_path: Path) -> None:
    plans = [plan_for(tmp_path, v) for v in ("1.0", "2.0", "3.0")]
    for plan in plans:
        assert run(plan.script).returncode == 0
    assert sorted(state(plans[2]).mtimes) == sorted([plans[1].venv_dir, plans[2].venv_dir])


def test_a_venv_completed_meanwhile_is_not_rebuilt(tmp_path: Path) -> None:
    # A cut-off run's install finished on the host after the controller went away.
    plan = plan_for(tmp_path, "1.0")
    assert run(plan.script).returncode == 0
    sentinel = Path(plan.venv_dir) / "sentinel"
    sentinel.write_text("kept")
    assert run(plan.script).returncode == 0
    assert sentinel.exists()


def test_a_converged_venv_changes_nothing_and_says_nothing(tmp_path: Path) -> None:
    plan = plan_for(tmp_path, "1.0")
    first = run(plan.script)
    assert first.returncode == 0, first.stderr
    assert f"{CHANGED}build {plan.venv_dir}" in first.stdout
    again = run(plan.script)
    assert again.returncode == 0, again.stderr
    assert CHANGED not in again.stdout  # what Ansible's changed_when reads


def test_a_dry_run_says_what_it_would_change_and_changes_nothing(tmp_path: Path) -> None:
    # A fresh host in check mode: the system stage has not written the environment file yet.
    plan = plan_for(tmp_path, "1.0", env_file=str(tmp_path / "no-environment"))
    out = run(plan.script, GPURIG_DRY_RUN="1")
    assert out.returncode == 0, out.stderr
    assert f"{CHANGED}build {plan.venv_dir}" in out.stdout
    assert f"{CHANGED}point {plan.link} at {plan.venv_dir}" in out.stdout
    assert not Path(plan.venvs_dir).exists()
    assert not os.path.lexists(plan.link)


def test_a_directory_at_the_live_path_is_kept_for_rollback(tmp_path: Path) -> None:
    plan = plan_for(tmp_path, "1.0")
    Path(plan.link).mkdir()
    (Path(plan.link) / "mine").write_text("someone's venv")
    out = run(plan.script)
    assert out.returncode == 0, out.stderr
    assert os.readlink(plan.link) == plan.venv_dir
    kept = [p for p in Path(plan.venvs_dir).iterdir() if p.name.startswith("replaced-")]
    assert [(p / "mine").read_text() for p in kept] == ["someone's venv"]


def break_marker(plan: Plan) -> None:
    """The live venv's marker differs from the plan's (or is missing): it must be rebuilt."""
    (Path(plan.venv_dir) / MARKER).write_text('{"venv_id": "something else"}\n')


def test_a_live_venv_whose_marker_differs_stays_live_when_its_rebuild_fails(
    tmp_path: Path,
) -> None:
    plan = plan_for(tmp_path, "1.0")
    assert run(plan.script).returncode == 0
    break_marker(plan)
    for wheel in (tmp_path / "wheels").iterdir():
        wheel.unlink()  # the rebuild's install fails: its wheel is gone
    out = run(plan.script)
    assert out.returncode != 0
    assert os.readlink(plan.link) == plan.venv_dir
    assert live_version(tmp_path) == "1.0"  # the live venv was not removed first
    assert (Path(plan.venv_dir) / MARKER).read_text().startswith('{"venv_id": "something')


def test_a_live_venv_whose_marker_differs_survives_a_killed_rebuild(tmp_path: Path) -> None:
    plan = plan_for(tmp_path, "1.0")
    assert run(plan.script).returncode == 0
    break_marker(plan)
    started = tmp_path / "check-started"
    slow = plan_for(
        tmp_path,
        "1.0",
        check=f"open({str(started)!r}, 'w').close(); import time; time.sleep(60)",
    )
    assert slow.venv_dir == plan.venv_dir  # the same venv, rebuilt
    build = subprocess.Popen(
        ["sh", "-c", slow.script],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not started.exists():  # the install is done; the import check is running
            assert build.poll() is None, "the rebuild ended before it was interrupted"
            assert time.monotonic() < deadline, "the rebuild never reached its import check"
            time.sleep(0.1)
        assert live_version(tmp_path) == "1.0"  # still live while the rebuild runs
    finally:
        os.killpg(build.pid, signal.SIGKILL)
        build.wait(timeout=30)
    assert os.readlink(plan.link) == plan.venv_dir
    assert live_version(tmp_path) == "1.0"
    out = run(plan.script)  # the next run rebuilds it and converges
    assert out.returncode == 0, out.stderr
    assert (Path(plan.venv_dir) / MARKER).read_text().strip() == plan.marker
    assert not (Path(plan.venvs_dir) / ".gpurig-build").exists()
    command = subprocess.run(
        [str(Path(plan.link) / "bin" / "demo")], capture_output=True, text=True, check=True
    )
    assert command.stdout.strip() == "1.0"  # a renamed build's commands still run


def fake_warm(record: Path, sleep_s: float) -> dict[str, str]:
    """A `bloomkit.warm` that says how it was started, then takes `sleep_s` to finish."""
    module = f"""
import json, os, sys, time
record = {str(record)!r}
started = dict(argv=sys.argv[1:], isolated=sys.flags.isolated, cwd=os.getcwd(),
               env=sorted(os.environ), pid=os.getpid())
json.dump(started, open(record + ".started", "w"))
time.sleep({sleep_s})
open(record + ".done", "w").close()
"""
    return {"bloomkit/__init__.py": "", "bloomkit/warm.py": module}


def test_the_build_compiles_beside_its_check_and_waits_for_it(tmp_path: Path) -> None:
    record = tmp_path / "warm"
    plan = plan_for(tmp_path, "1.0", extra=fake_warm(record, 1.0))
    out = run(plan.script, PYTHONPATH="/nowhere", SECRET_TOKEN="x")
    assert out.returncode == 0, out.stderr
    started = json.loads(Path(f"{record}.started").read_text())
    assert started["argv"] == []
    assert started["isolated"] == 1  # no cwd or user site on root's import path
    assert started["cwd"] == "/"
    assert set(started["env"]) <= {"PATH", "LC_CTYPE"}  # a clean environment (PEP 538 adds one)
    assert Path(f"{record}.done").exists()  # the venv went live after it finished


def test_a_failed_check_stops_the_compile_beside_it(tmp_path: Path) -> None:
    record = tmp_path / "warm"
    started = Path(f"{record}.started")
    # The check waits until the compile beside it has started, then fails.
    check = (
        "import os, time\n"
        f"while not os.path.exists({str(started)!r}): time.sleep(0.05)\n"
        "raise SystemExit('import check failed')"
    )
    plan = plan_for(tmp_path, "1.0", check=check, extra=fake_warm(record, 60))
    began = time.monotonic()
    out = run(plan.script)
    assert out.returncode != 0
    assert "import check failed" in out.stderr
    assert time.monotonic() - began < 60  # not held by the compile
    pid = json.loads(started.read_text())["pid"]
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and "Z" not in _state(pid):
        assert time.monotonic() < deadline, "the compile beside the failed check kept running"
        time.sleep(0.1)
    assert not Path(f"{record}.done").exists()


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return "Z"
