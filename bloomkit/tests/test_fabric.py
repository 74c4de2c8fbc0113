"""The smoke names "fabric manager not running" when CUDA fails on an NVSwitch board: sysfs and
systemctl are doubles (a folder laid out as /sys/bus/pci/devices, a runner that answers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bloomkit import env, fabric, smoke
from bloomkit.config import SmokeArgs
from bloomkit.report import StageResult
from bloomkit.stages import Fail, SmokeContext

# torch's warning on an HGX board whose fabric manager is not running.
ERROR_802 = (
    "CUDA initialization: Unexpected error from cudaGetDeviceCount(). Did you run some cuda "
    "functions before calling NumCudaDevices() that might have already set an error? Error 802: "
    "system not yet initialized"
)


def _bus(tmp_path: Path, switches: int) -> Path:
    """An HGX H100 board's PCI functions: one GPU (class 0302), `switches` NVSwitches (0680)."""
    devices = tmp_path / "devices"
    rows = [("0000:00:00.0", "0x8086", "0x060000"), ("0000:18:00.0", "0x10de", "0x030200")]
    rows += [(f"0000:0{5 + i}:00.0", "0x10de", "0x068000") for i in range(switches)]
    for slot, vendor, pci_class in rows:
        (devices / slot).mkdir(parents=True)
        (devices / slot / "vendor").write_text(vendor + "\n")
        (devices / slot / "class").write_text(pci_class + "\n")
    return devices


def _systemctl(state: str | None):
    calls = []

    def run(command: list[str]) -> str | None:
        calls.append(command)
        return state

    run.calls = calls  # type: ignore[attr-defined]
    return run


def test_nvswitches_are_nvidia_functions_of_class_0680(tmp_path: Path) -> None:
    assert fabric.nvswitches(_bus(tmp_path, 4)) == [f"0000:0{n}:00.0" for n in (5, 6, 7, 8)]


@pytest.mark.parametrize("state", ["inactive", "failed"])
def test_an_nvswitch_board_with_the_service_down_is_named(tmp_path: Path, state: str) -> None:
    run = _systemctl(state)
    found = fabric.diagnosis("torch.cuda.is_available() is False", _bus(tmp_path, 4), run)
    assert found is not None
    assert found.startswith("fabric manager not running: 4 NVSwitch devices on the PCI bus, ")
    assert f"nvidia-fabricmanager is {state}" in found
    assert "systemctl enable --now nvidia-fabricmanager" in found
    assert run.calls == [["systemctl", "is-active", "nvidia-fabricmanager"]]  # type: ignore[attr-defined]


def test_error_802_is_named_even_where_sysfs_shows_no_switch(tmp_path: Path) -> None:
    found = fabric.diagnosis(ERROR_802, _bus(tmp_path, 0), _systemctl(None))
    assert found is not None
    assert found.startswith("fabric manager not running: CUDA error 802, ")
    assert "cannot be asked (no systemd)" in found


@pytest.mark.parametrize(
    ("switches", "state", "why"),
    [
        (0, "inactive", "no NVIDIA driver loaded"),  # no NVSwitch: another cause
        (4, "active", "torch.cuda.is_available() is False"),  # running: another cause
        (0, None, "torch 2.13.0+cpu is a CPU-only build (2.13.0.802)"),  # 802, not error 802
    ],
)
def test_other_causes_are_left_alone(
    tmp_path: Path, switches: int, state: str | None, why: str
) -> None:
    assert fabric.diagnosis(why, _bus(tmp_path, switches), _systemctl(state)) is None


def test_low_nvlink_bandwidth_names_a_stopped_fabric_manager(tmp_path: Path) -> None:
    bus = _bus(tmp_path, 4)
    hint = fabric.nvlink_hint(bus, _systemctl("failed"))
    assert hint == "fabric manager not running: nvidia-fabricmanager is failed; nvidia-smi topo -m"
    assert "must be running" in fabric.nvlink_hint(bus, _systemctl("active"))


def test_the_cuda_stage_fails_with_the_named_cause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The smoke's cuda stage on an HGX board whose fabric manager is down (torch says 802)."""
    monkeypatch.setattr(env, "cuda_status", lambda: (False, ERROR_802))
    monkeypatch.setattr(fabric, "PCI_DEVICES", _bus(tmp_path, 4))
    monkeypatch.setattr(fabric, "_run", _systemctl("failed"))
    ctx = SmokeContext(args=SmokeArgs(require_gpu=True))
    with pytest.raises(Fail) as failed:
        smoke.stage_cuda(ctx, StageResult("cuda"))
    message = str(failed.value)
    assert message.startswith(
        "fabric manager not running: 4 NVSwitch devices on the PCI bus, "
        "nvidia-fabricmanager is failed, so CUDA does not initialise."
    )
    assert message.endswith(f"({ERROR_802})")
