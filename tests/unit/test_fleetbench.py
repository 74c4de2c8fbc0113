"""The benchmarks' shared helpers (bench/fleetbench.py): the figures in docs/BENCHMARKS.md come
from these, so what they parse and time is held here."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import fleetbench


def _printing(*lines: str, code: int = 0) -> list[str]:
    script = "".join(f"echo {line!r}; sleep 0.05; " for line in lines) + f"exit {code}"
    return ["/bin/sh", "-c", script]


def test_timed_ops_gives_each_pyinfra_operation_its_seconds() -> None:
    command = _printing(
        "--> Loading config...",
        "--> Starting operation: System | Trust the CA bundle",
        "    [sandbox-1] Success",
        "--> Starting operation: Python | Install uv",
        "--> Results:",
    )
    seconds, ops = fleetbench.timed_ops("run", command, {"PATH": "/usr/bin:/bin"})
    assert list(ops) == [
        "System | Trust the CA bundle",
        "Python | Install uv",
        "(before the first operation)",
    ]
    assert all(0 <= value <= seconds for value in ops.values())
    assert ops["System | Trust the CA bundle"] >= 0.1  # its two lines' sleeps, to one decimal


def test_a_failed_command_ends_the_benchmark_with_its_output() -> None:
    with pytest.raises(SystemExit, match="exit 3, expected 0:\nboom"):
        fleetbench.timed("run", _printing("boom", code=3), {"PATH": "/usr/bin:/bin"})
    with pytest.raises(SystemExit, match="failed"):
        fleetbench.timed_ops("run", _printing("boom", code=3), {"PATH": "/usr/bin:/bin"})


def test_timed_cpu_splits_the_controllers_cpu_from_the_rest() -> None:
    spin = [
        sys.executable,
        "-c",
        "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass",
    ]
    figures = fleetbench.timed_cpu("spin", spin, {"PATH": "/usr/bin:/bin"})
    assert figures["controller_cpu_s"] >= 0.25  # the command's own CPU, counted as the controller's
    assert figures["wall_s"] >= 0.25
    assert fleetbench.machine_cpu_s() > 0


def test_compile_sources_writes_bytecode_for_a_tree(tmp_path: Path) -> None:
    (tmp_path / "src" / "pkg").mkdir(parents=True)
    (tmp_path / "src" / "pkg" / "mod.py").write_text("X = 1\n")
    fleetbench.compile_sources(tmp_path)
    assert list((tmp_path / "src" / "pkg" / "__pycache__").glob("mod.*.pyc"))


def test_gpurig_deploy_limits_each_host() -> None:
    command = fleetbench.gpurig_deploy(["sandbox-1", "sandbox-2"], "--skip-smoke")
    assert command[-6:] == ["--skip-smoke", "--", "--limit", "sandbox-1", "--limit", "sandbox-2"]


def test_bench_cpu_counts_each_kind_of_process_and_each_python_alone() -> None:
    import bench_cpu

    hz = bench_cpu.HZ
    rows = [(0.0, "swapper", 0)] * hz + [(0.5, "tokio-rt-worker", 7)] * hz
    rows += [(1.2, "python", 40)] * (2 * hz) + [(1.7, "python", 41)] * hz
    rows += [(1.9, "sed", 50)] * (hz // 2)
    figures = bench_cpu.tally(rows)
    assert figures["cpu_s"] == {
        "python 40": 2.0,
        "idle": 1.0,
        "uv": 1.0,
        "python 41": 1.0,
        "other": 0.5,
    }
    by_second = figures["busy_cores_by_second"]
    assert isinstance(by_second, dict)
    assert by_second[0] == {"uv": 1.0}  # idle is not a busy core
    assert by_second[1] == {"python 40": 2.0, "python 41": 1.0, "other": 0.5}
