"""Engine discovery and the errors when there is none; no Docker engine needed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gpurig import cli
from gpurig.errors import GpurigError, UsageError
from gpurig.sandbox import engine
from gpurig.sandbox.engine import EnginePaths


@pytest.fixture
def nowhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An engine dir with no engine, and DOCKER_HOST on a socket nobody serves."""
    monkeypatch.setenv("GPURIG_ENGINE_DIR", str(tmp_path / "engine"))
    monkeypatch.setenv("GPURIG_SANDBOX_DIR", str(tmp_path / "sandbox"))
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/nobody.sock")
    return tmp_path


def test_paths_live_under_the_engine_dir_except_a_short_exec_root(tmp_path: Path) -> None:
    paths = EnginePaths(tmp_path / ("deep" * 10) / "engine")
    for path in (paths.data_root, paths.socket, paths.pidfile, paths.log):
        assert path.parent in (paths.root, paths.root / "data")
    assert paths.url == f"unix://{paths.root}/docker.sock"
    # dockerd nests 64-hex-named sockets under the exec-root: it must stay short
    assert len(str(paths.exec_root)) <= 30
    assert paths.exec_root != EnginePaths(tmp_path / "other").exec_root


def test_a_socket_path_too_long_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="set GPURIG_ENGINE_DIR to a shorter directory"):
        EnginePaths(tmp_path / ("x" * 120)).check()
    EnginePaths(Path("/tmp/e")).check()


def test_no_engine_is_one_clear_error(nowhere: Path) -> None:
    assert engine.endpoint() is None
    with pytest.raises(GpurigError, match=r"run `gpurig sandbox engine` \(or `make engine`\)"):
        engine.docker_client()
    with pytest.raises(GpurigError, match="no Docker engine reachable"):
        engine.docker_env()


def test_an_unanswering_docker_host_is_not_replaced_silently(nowhere: Path) -> None:
    with pytest.raises(GpurigError, match="does not answer: start that engine, or unset"):
        engine.ensure_engine()


def test_the_cli_prints_one_line_not_a_traceback(
    nowhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["sandbox", "up", "1"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("gpurig sandbox: no Docker engine reachable: run `gpurig sandbox engine`")


def test_sandbox_list_without_hosts_needs_no_engine(
    nowhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["sandbox", "list"]) == 0
    assert "no sandbox hosts" in capsys.readouterr().out


def test_a_pidfile_counts_only_when_it_names_a_live_dockerd(nowhere: Path) -> None:
    paths = engine.engine_paths()
    paths.root.mkdir(parents=True)
    assert engine.our_pid(paths) is None
    paths.pidfile.write_text("not a pid\n")
    assert engine.our_pid(paths) is None
    paths.pidfile.write_text(f"{os.getpid()}\n")  # alive, but pytest is no dockerd
    assert engine.our_pid(paths) is None
    assert engine.stop_engine() is None
