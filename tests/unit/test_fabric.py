"""HGX boards: NVSwitches read from the PCI bus, and the fabric manager's scripts run under sh
against stand-ins for modinfo, dpkg-query, apt-cache, apt-get and systemctl."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gpurig import diagnose
from gpurig.facts.gpu import parse, parse_nvswitches
from gpurig.hostlayout import LOG_DIR
from gpurig.plan import fabric

LSPCI = [
    '0000:00:00.0 "0600" "8086" "1237" -r02 "1af4" "1100"',
    '0000:05:00.0 "0680" "10de" "22a3" -ra1 "10de" "1796"',
    '0000:18:00.0 "0302" "10de" "2330" -ra1 "10de" "16c1"',
    '0000:19:00.1 "0403" "10de" "22ba" -ra1 "10de" "16c1"',
    '0000:06:00.0 "0680" "10de" "1af1" -ra1 "10de" "1640"',
    '0000:07:00.0 "0680" "8086" "0998" "8086" "0000"',  # another vendor's bridge
]
FABRIC = fabric.Fabric(4, 580, "nvidia-fabricmanager-580", "cuda")
MADISON = """\
nvidia-fabricmanager-580 | 580.82.07-1 | https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64  Packages
nvidia-fabricmanager-580 | 580.65.06-1 | https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64  Packages
"""  # noqa: E501


def test_nvswitches_are_nvidia_bridges_of_class_0680() -> None:
    assert parse_nvswitches(LSPCI) == ["0000:05:00.0", "0000:06:00.0"]
    state = parse(["@@pci", "lspci", *LSPCI, "@@init", "systemd", "fabricmanager=failed,enabled"])
    assert [g.slot for g in state.gpus] == ["0000:18:00.0"]  # an NVSwitch is not a GPU
    assert state.nvswitches == ["0000:05:00.0", "0000:06:00.0"]
    assert state.fabricmanager == ("failed", "enabled")


def _bin(tmp_path: Path, **tools: str) -> Path:
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    for name, body in tools.items():
        path = folder / name.replace("_", "-")
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
    return folder


def _run(script: str, folder: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    script = script.replace(LOG_DIR, str(tmp_path / "log"))
    return subprocess.run(
        ["/bin/sh", "-c", script],
        env={"PATH": f"{folder}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_install_pins_the_madison_entry_of_the_drivers_version(tmp_path: Path) -> None:
    calls = tmp_path / "apt-get.calls"
    folder = _bin(
        tmp_path,
        modinfo="echo 580.65.06",
        dpkg_query="exit 1",
        apt_cache=f"cat <<'EOF'\n{MADISON}EOF",
        apt_get=f'echo "$*" >> {calls}',
    )
    run = _run(fabric.install_script(FABRIC), folder, tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    installed = calls.read_text().splitlines()
    assert installed[-1].endswith("-- nvidia-fabricmanager-580=580.65.06-1")  # not 580.82.07
    assert "--allow-change-held-packages" in installed[-1]


def test_install_is_unchanged_when_the_versions_match(tmp_path: Path) -> None:
    folder = _bin(
        tmp_path,
        modinfo="echo 580.65.06",
        dpkg_query="printf 'install ok installed|580.65.06-0ubuntu0.24.04.2'",
        apt_get="echo apt-get must not run; exit 9",
    )
    run = _run(fabric.install_script(FABRIC), folder, tmp_path)
    assert run.returncode == 0
    assert "gpurig: unchanged: nvidia-fabricmanager-580 580.65.06-0ubuntu0.24.04.2" in run.stdout


def test_no_package_at_the_drivers_version_is_named(tmp_path: Path) -> None:
    folder = _bin(
        tmp_path,
        modinfo="echo 580.95.05",
        dpkg_query="exit 1",
        apt_cache=f"cat <<'EOF'\n{MADISON}EOF",
        apt_get="exit 0",
    )
    run = _run(fabric.install_script(FABRIC), folder, tmp_path)
    assert run.returncode == 1
    (found,) = diagnose.from_output(run.stdout)
    assert found.name == diagnose.PACKAGE_MISSING
    assert found.message == "apt has no nvidia-fabricmanager-580 at version 580.95.05, the driver's"


@pytest.mark.parametrize("systemd", [True, False])
def test_a_service_that_does_not_start_is_the_named_diagnosis(
    systemd: bool, tmp_path: Path
) -> None:
    """What a systemd host without the GPUs (a pretend-HGX sandbox host) says: named, no crash;
    without systemd, the step says why it starts nothing."""
    script = fabric.service_script()
    if systemd:
        script = script.replace("/run/systemd/system", str(tmp_path))
    folder = _bin(
        tmp_path,
        systemctl=(
            'case "$1" in is-active) echo failed ;; is-enabled) echo disabled ;; '
            "start) echo 'Job for nvidia-fabricmanager.service failed because the control "
            "process exited with error code.' >&2; exit 1 ;; esac"
        ),
        journalctl="echo 'nv-fabricmanager: request to query NVSwitch device information failed'",
    )
    run = _run(script, folder, tmp_path)
    if not systemd:
        assert run.returncode == 0
        assert "gpurig: unchanged: no systemd" in run.stdout
        return
    assert run.returncode == 1
    (found,) = diagnose.from_output(run.stdout)
    assert found.name == diagnose.FABRIC_MANAGER == "fabric manager not running"
    assert "journalctl -u nvidia-fabricmanager" in found.fix


def test_a_pending_reboot_enables_the_service_and_starts_nothing(tmp_path: Path) -> None:
    """Driver 580.95.05 installed, 580.65.06 still loaded: the fabric manager matches the
    installed one, so it can start only after the reboot; it is enabled for that boot."""
    calls = tmp_path / "systemctl.calls"
    proc = tmp_path / "version"
    proc.write_text("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.65.06  Release\n")
    script = fabric.service_script().replace("/run/systemd/system", str(tmp_path))
    script = script.replace("/proc/driver/nvidia/version", str(proc))
    folder = _bin(
        tmp_path,
        modinfo="echo 580.95.05",
        systemctl=f'echo "$*" >> {calls}; case "$1" in is-active) echo inactive ;; esac',
    )
    run = _run(script, folder, tmp_path)
    assert run.returncode == 0, run.stdout
    assert "it starts once a reboot loads driver 580.95.05" in run.stdout
    assert "gpurig: unchanged" not in run.stdout  # it enabled the unit: a change
    assert "enable nvidia-fabricmanager" in calls.read_text()
    assert "start" not in calls.read_text()
