"""The GPU fact: its script runs under the host's sh, and its parser reads what hosts print."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import pytest

from gpurig.facts import gpu
from gpurig.facts.gpu import GpuHost, normalise_bus_id, parse
from gpurig.model.host import GpuState, HostFacts
from gpurig.sandbox import doubles

SAMPLE = """\
@@pci
lspci
0000:00:00.0 "0600" "8086" "1237" -r02 "1af4" "1100"
0000:3b:00.0 "0302" "10de" "2330" -ra1 "10de" "16c1"
0000:3c:00.0 "0302" "10de" "2330" -ra1 "10de" "16c1"
0000:3d:00.1 "0403" "10de" "22ba" -ra1 "10de" "16c1"
0000:3e:00.0 "0680" "10de" "22a3" -ra1 "10de" "1796"
@@driver
NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.65.06  Release Build  (dvs-builder@U16-I2-C03-12-4)  Sun Jul 27 06:54:38 UTC 2025
GCC version:  gcc version 13.3.0 (Ubuntu 13.3.0-6ubuntu2~24.04)
@@smi
rc=0
00000000:3B:00.0, NVIDIA H100 80GB HBM3, 580.65.06, 9.0
00000000:3C:00.0, NVIDIA H100 80GB HBM3, 580.65.06, 9.0
@@secureboot
SecureBoot enabled
@@modules
nvidia_uvm
nvidia_drm
nvidia_modeset
nvidia
@@kernel
6.8.0-45-generic
headers
module=580.65.06
@@packages
ii |libnvidia-compute-580-server:amd64|580.65.06-0ubuntu0.24.04.2
hi |nvidia-headless-580-server|580.65.06-0ubuntu0.24.04.2
ii |linux-image-generic|6.8.0.45.45
rc |nvidia-utils-535-server|535.183.01-0ubuntu0.24.04.1
@@dkms
nvidia-srv/580.65.06, 6.8.0-45-generic, x86_64: installed
@@mok
/var/lib/dkms/mok.pub is already enrolled
@@log
[    5.1] nvidia: loading out-of-tree module taints kernel.
@@blacklist
/etc/modprobe.d/gpurig-blacklist-nouveau.conf
@@files
4f2a  /etc/modprobe.d/gpurig-blacklist-nouveau.conf
@@init
systemd
persistenced=active,enabled
"""  # noqa: E501


def test_parse_a_provisioned_ubuntu_host() -> None:
    state = parse(SAMPLE.splitlines())
    assert [(g.slot, g.device_id, g.name, g.compute_capability) for g in state.gpus] == [
        ("0000:3b:00.0", "2330", "NVIDIA H100 SXM5 80GB", "9.0"),
        ("0000:3c:00.0", "2330", "NVIDIA H100 SXM5 80GB", "9.0"),
    ]  # the HDMI-audio function and the NVSwitch bridge are not GPUs
    assert state.driver_version == "580.65.06"
    assert state.smi_rc == 0
    assert [g.bus_id for g in state.smi_gpus] == ["0000:3b:00.0", "0000:3c:00.0"]
    assert state.secure_boot is True
    assert state.nvidia_loaded
    assert not state.nouveau_loaded
    assert (state.kernel, state.kernel_headers, state.module_version) == (
        "6.8.0-45-generic",
        True,
        "580.65.06",
    )
    assert state.packages == {
        "libnvidia-compute-580-server": "580.65.06-0ubuntu0.24.04.2",
        "nvidia-headless-580-server": "580.65.06-0ubuntu0.24.04.2",
        "linux-image-generic": "6.8.0.45.45",
    }  # removed (rc) packages are not installed
    assert state.held == ["nvidia-headless-580-server"]
    assert state.installed_driver == "580.65.06"
    assert state.dkms_mok_enrolled is True
    assert state.nouveau_blacklisted
    assert state.files == {gpu.NOUVEAU_CONF: "4f2a"}
    assert state.systemd
    assert not state.container
    assert state.can_reboot
    assert state.persistenced == ("active", "enabled")


def test_parse_a_fresh_container_host_read_through_sysfs() -> None:
    output = """\
@@pci
sysfs
0000:00:05.0 "0302" "10de" "2335"
@@driver
@@secureboot
no-efi
@@modules
nouveau
@@kernel
6.18.44-fc-v657
module=
@@init
container
""".splitlines()
    state = parse(output)
    assert state.pci_source == "sysfs"
    assert [g.name for g in state.gpus] == ["NVIDIA H200 SXM 141GB"]
    assert state.driver_version is None
    assert state.smi_rc is None
    assert state.secure_boot is False
    assert state.nouveau_loaded
    assert not state.kernel_headers
    assert state.module_version is None
    assert not state.can_reboot


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (["SecureBoot enabled"], True),
        (["SecureBoot disabled"], False),
        (["This system doesn't support Secure Boot"], False),
        (["EFI variables are not supported on this system"], False),
        (["no-efi"], False),
        (["efivar=1"], True),
        (["efivar=0"], False),
        (["efivar="], None),
        ([], None),
    ],
)
def test_secure_boot(lines: list[str], expected: bool | None) -> None:
    assert gpu.parse_secure_boot(lines) is expected


def test_smi_failures_keep_their_text() -> None:
    rc, text, gpus = gpu.parse_smi(
        ["rc=18", "Failed to initialize NVML: Driver/library version mismatch", "NVML library "
         "version: 580.95"]
    )  # fmt: skip
    assert (rc, gpus) == (18, [])
    assert "Driver/library version mismatch" in text
    assert gpu.parse_smi([]) == (None, "", [])


def test_bus_ids() -> None:
    assert normalise_bus_id("00000000:3B:00.0") == "0000:3b:00.0"
    assert normalise_bus_id("00000001:C1:00.0") == "0001:c1:00.0"


def test_apply_fills_the_gpu_fields_of_host_facts() -> None:
    base = HostFacts("ubuntu", "24.04", "x86_64", "3.12", "2.39", 100.0, 64.0, True, True)
    facts = gpu.apply(base, parse(SAMPLE.splitlines()))
    assert len(facts.gpus) == 2
    assert facts.driver_version == "580.65.06"
    assert facts.secure_boot is True
    assert facts.kernel == "6.8.0-45-generic"
    assert facts.kernel_headers
    assert facts.nvidia_smi is not None
    assert facts.nvidia_smi_rc == 0
    assert facts.dkms == ["nvidia-srv/580.65.06, 6.8.0-45-generic, x86_64: installed"]
    assert facts.os_name == "ubuntu-24.04"  # the rest is kept


def _run_script(path: str) -> GpuState:
    run = subprocess.run(
        ["/bin/sh", "-c", GpuHost().command()],
        env={**os.environ, "PATH": path},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    return GpuHost().process(run.stdout.splitlines())


def test_the_script_runs_under_sh_on_this_machine() -> None:
    state = _run_script(os.environ.get("PATH", "/usr/bin:/bin"))
    assert state.kernel == platform.release()
    assert state.gpus == []  # no GPU on the build machines


def test_without_lspci_the_script_reads_each_pci_device_from_sysfs(tmp_path: Path) -> None:
    """The sysfs walk (a host without pciutils), over a copy of its layout: the NVIDIA display
    controller is found among other vendors' devices and an unreadable one."""
    devices = tmp_path / "devices"
    for slot, vendor, cls, device in [
        ("0000:00:01.0", "0x8086", "0x060000", "0x1237"),
        ("0000:17:00.0", "0x10de", "0x030200", "0x2330"),
        ("0000:18:00.0", None, "0x020000", "0x1000"),
    ]:
        folder = devices / slot
        folder.mkdir(parents=True)
        if vendor:
            (folder / "vendor").write_text(vendor + "\n")
        (folder / "class").write_text(cls + "\n")
        (folder / "device").write_text(device + "\n")
    script = GpuHost().command().replace("/sys/bus/pci/devices", str(devices))
    script = script.replace("command -v lspci", "false")
    run = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    state = GpuHost().process(run.stdout.splitlines())
    assert state.pci_source == "sysfs"
    assert [g.slot for g in state.gpus] == ["0000:17:00.0"]


def test_the_script_finds_the_sandbox_gpu_double(tmp_path: Path) -> None:
    """The fake lspci a `--pretend-gpu` sandbox host gets, found first on PATH."""
    fake = tmp_path / "lspci"
    fake.write_text(doubles.lspci_script(doubles.resolve_sku("L40S")))
    fake.chmod(0o755)
    state = _run_script(f"{tmp_path}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    assert state.pci_source == "lspci"
    assert [(g.slot, g.name, g.compute_capability) for g in state.gpus] == [
        (doubles.GPU_SLOT, "NVIDIA L40S", "8.9")
    ]


@pytest.mark.parametrize("shape", ["HGX-H100", "HGX-H100-535", "H100-535"])
def test_the_script_reads_the_sandbox_shapes_as_fact_lines_says(tmp_path: Path, shape: str) -> None:
    """The pretend HGX board and the loaded-535 stand-in, run as a sandbox host runs them: the
    GPU fact reads what `doubles.fact_lines` (the plan tests' fixtures) says it reads."""
    sku = doubles.resolve_sku(shape)
    for name, (mode, text) in doubles.host_files(shape, False).items():
        if name.startswith("/usr/local/bin/"):
            path = tmp_path / Path(name).name
            path.write_text(text)
            path.chmod(mode)
    state = _run_script(f"{tmp_path}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    expected = parse(doubles.fact_lines(sku))
    assert state.gpus == expected.gpus
    assert len(state.gpus) == sku.gpus
    assert state.nvswitches == expected.nvswitches
    assert len(state.nvswitches) == sku.nvswitches
    assert state.smi_gpus == expected.smi_gpus
    if sku.driver:  # no /proc/driver/nvidia here: the version comes from nvidia-smi
        assert state.driver_version == expected.driver_version == "535.261.03"
        assert [g.bus_id for g in state.smi_gpus] == [g.slot for g in state.gpus]


def test_a_sandbox_vm_standin_may_reboot_and_other_containers_may_not() -> None:
    """The marker of `gpurig sandbox up`'s systemd hosts (hostlayout.VM_STANDIN_MARKER); the
    loaded module read from sysfs, as the pretend driver gives it."""
    lines = ["@@driver", "Kernel Module 535.247.01", "@@modules", "nvidia", "@@init", "systemd"]
    standin = parse([*lines, "persistenced=failed,enabled", "container", "vm-standin"])
    assert standin.driver_version == "535.247.01"
    assert standin.nvidia_loaded
    assert (standin.container, standin.vm_standin, standin.can_reboot) == (True, True, True)
    container = parse([*lines, "container"])
    assert (container.container, container.vm_standin, container.can_reboot) == (
        True,
        False,
        False,
    )
    # Without systemd nothing reboots it, marker or not.
    assert not parse(["@@init", "container", "vm-standin"]).can_reboot


def test_the_script_prints_the_vm_standin_marker_only_where_it_is() -> None:
    script = GpuHost().command()
    assert f"[ -f {gpu.VM_STANDIN_MARKER} ] && echo vm-standin" in script
    assert "__VM_STANDIN__" not in script
