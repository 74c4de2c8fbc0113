"""HGX/DGX boards: is the NVIDIA fabric manager why CUDA does not start?

On a board whose GPUs reach each other through NVSwitches, CUDA refuses every device with error
802 ("system not yet initialized") until nvidia-fabricmanager has set up the fabric. When CUDA
fails, `diagnosis` says "fabric manager not running" where that is the cause: CUDA's own 802,
or NVSwitches on the PCI bus (NVIDIA functions of class 0680) while the service is not active.
The sysfs folder and the command runner are parameters (PCI_DEVICES and `_run` by default), so
tests use doubles.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

PCI_DEVICES = Path("/sys/bus/pci/devices")
SERVICE = "nvidia-fabricmanager"
NAME = "fabric manager not running"  # gpurig's diagnosis of the same failure has this name
# CUDA's error 802, as torch's warning quotes it: "Error 802: system not yet initialized".
NOT_INITIALIZED = re.compile(r"\berror 802\b|system not yet initiali[sz]ed", re.I)

Runner = Callable[[list[str]], str | None]


def nvswitches(devices: Path | None = None) -> list[str]:
    """Slots of the NVSwitch devices: NVIDIA (0x10de) functions of PCI class 0x0680."""
    found = []
    for device in sorted((devices or PCI_DEVICES).glob("*")):
        try:
            vendor = (device / "vendor").read_text().strip().lower()
            pci_class = (device / "class").read_text().strip().lower()
        except OSError:
            continue
        if vendor == "0x10de" and pci_class.startswith("0x0680"):
            found.append(device.name)
    return found


def _run(command: list[str]) -> str | None:
    """A command's stdout (whatever its status: `systemctl is-active` exits 3 when inactive),
    or None when it cannot run here."""
    if shutil.which(command[0]) is None:
        return None
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def service_state(run: Runner | None = None) -> str | None:
    """`systemctl is-active nvidia-fabricmanager`: active, inactive, failed...; None: no systemd."""
    return (run or _run)(["systemctl", "is-active", SERVICE]) or None


def diagnosis(
    why: str | None, devices: Path | None = None, run: Runner | None = None
) -> str | None:
    """'fabric manager not running: ...' with the fix, when that is why CUDA failed; else None."""
    switches = nvswitches(devices)
    reported = bool(NOT_INITIALIZED.search(why or ""))
    if not switches and not reported:
        return None
    state = service_state(run)
    if state == "active" and not reported:
        return None
    board = f"{len(switches)} NVSwitch devices on the PCI bus" if switches else "CUDA error 802"
    service = f"{SERVICE} is {state}" if state else f"{SERVICE} cannot be asked (no systemd)"
    return (
        f"{NAME}: {board}, {service}, so CUDA does not initialise. Fix: "
        f"sudo systemctl enable --now {SERVICE} (its version must equal the driver's; "
        f"journalctl -u {SERVICE} says why it stopped)"
    )


def nvlink_hint(devices: Path | None = None, run: Runner | None = None) -> str:
    """What to look at when NVLink bandwidth is low: the fabric manager where it is the cause."""
    state = service_state(run) if nvswitches(devices) else None
    if state not in ("active", None):
        return f"{NAME}: {SERVICE} is {state}; nvidia-smi topo -m"
    return "nvidia-smi topo -m; on NVSwitch boards, nvidia-fabricmanager must be running"
