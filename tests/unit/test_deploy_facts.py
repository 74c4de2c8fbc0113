"""The deploy's facts: their shell runs here as it runs on a host, and their parsing."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gpurig.facts import preflight_probe
from gpurig.facts.system import (
    FileSizes,
    FileState,
    HostProbe,
    Probe,
    VenvState,
    dpkg_lock_holder,
    to_host_facts,
)


def shell(command: str) -> list[str]:
    out = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_the_probe_runs_on_this_debian_machine() -> None:
    fact = HostProbe()
    facts = to_host_facts(fact.process(shell(fact.command(venv="/opt/no/such/venv"))))
    assert facts.os_id in {"debian", "ubuntu"}
    assert facts.arch == "x86_64"
    assert facts.python3 is not None
    assert facts.python3.startswith("3.")
    assert facts.glibc is not None
    assert facts.free_disk_gb > 0  # df ran on the nearest existing parent, /opt or /
    assert facts.memory_gb > 0.5


SAMPLE = [
    "os_id=ubuntu",
    "os_version=24.04",
    "arch=x86_64",
    "python3=3.12",
    "glibc=2.39",
    "disk_kb=104857600",
    "mem_kb=2097152000",
    "uid=1000",
    "sudo=1",
    "systemd=1",
    "dpkg_lock=812 unattended-upgr",
    "not a key value line",
]


def test_sample_probe_output_becomes_host_facts() -> None:
    probe = HostProbe().process(SAMPLE)
    facts = to_host_facts(probe)
    assert (facts.os_id, facts.os_version, facts.python3, facts.glibc) == (
        "ubuntu",
        "24.04",
        "3.12",
        "2.39",
    )
    assert facts.free_disk_gb == 100
    assert facts.memory_gb == pytest.approx(2000)
    assert facts.sudo
    assert facts.systemd
    assert facts.gpus == []  # the GPU layer's fact fills these
    assert dpkg_lock_holder(probe) == "812 unattended-upgr"


def test_an_empty_probe_is_safe_defaults() -> None:
    facts = to_host_facts(Probe({}))
    assert facts.os_id == "unknown"
    assert not facts.sudo
    assert facts.gpus == []
    assert facts.secure_boot is None


def test_venv_state_reads_link_markers_and_folders(tmp_path: Path) -> None:
    venvs = tmp_path / "venvs"
    (venvs / "a").mkdir(parents=True)
    (venvs / "b").mkdir()
    (venvs / "a" / "gpurig-venv.json").write_text('{"venv_id":"a"}\n')
    (tmp_path / "venv").symlink_to(venvs / "a")
    fact = VenvState()
    state = fact.process(
        shell(
            fact.command(
                link=str(tmp_path / "venv"), venvs_dir=str(venvs), marker="gpurig-venv.json"
            )
        )
    )
    assert state.live == str(venvs / "a")
    assert sorted(state.mtimes) == [str(venvs / "a"), str(venvs / "b")]
    assert state.markers == {str(venvs / "a"): '{"venv_id":"a"}'}


def test_file_state(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_text("x")
    target.chmod(0o640)
    fact = FileState()
    info = fact.process(shell(fact.command(path=str(target))))
    assert info is not None
    assert info.mode == "640"
    assert info.sha256 == "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"
    assert fact.process(shell(fact.command(path=str(tmp_path / "missing")))) is None


def test_file_sizes(tmp_path: Path) -> None:
    (tmp_path / "x.whl").write_bytes(b"12345")
    fact = FileSizes()
    assert fact.process(shell(fact.command(directory=str(tmp_path)))) == {"x.whl": 5}
    assert fact.process(shell(fact.command(directory=str(tmp_path / "missing")))) == {}


def _tool(folder: Path, name: str, body: str) -> None:
    (folder / name).write_text(f"#!/bin/sh\n{body}\n")
    (folder / name).chmod(0o755)


@pytest.mark.parametrize("sudo_works", [True, False])
def test_preflight_asks_sudo_once_for_both_the_test_and_the_kernel_log(
    tmp_path: Path, sudo_works: bool
) -> None:
    """One sudo answers whether the user has a passwordless root shell and reads the driver's
    kernel log lines (Debian's dmesg_restrict); without it, the user's own dmesg is tried."""
    calls = tmp_path / "sudo-calls"
    _tool(tmp_path, "dmesg", 'echo "[ 1.5] NVRM: loading 550.54.14"; echo "[ 2.0] eth0: up"')
    if sudo_works:
        _tool(tmp_path, "sudo", f'echo "$*" >> {calls}; [ "$1" = -n ] && shift; exec "$@"')
    else:
        _tool(tmp_path, "sudo", f'echo "$*" >> {calls}; echo "a password is required" >&2; exit 1')
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin"}
    script = preflight_probe.script("/opt/no/such/venv")
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    probed = preflight_probe.parse(out.stdout.splitlines())
    assert probed.facts.sudo is sudo_works
    assert probed.gpu.kernel_log == ["[ 1.5] NVRM: loading 550.54.14"]
    asked = calls.read_text().splitlines()
    assert len(asked) == 1  # without sudo, the log came from this user's own dmesg
    assert asked[0].startswith("-n /bin/sh -c ")
