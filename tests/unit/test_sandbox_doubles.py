"""The hardware test doubles: a fake `lspci -Dnmm` per GPU SKU, and a fake mokutil."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gpurig import diagnose
from gpurig.errors import UsageError
from gpurig.sandbox import doubles

EXPECTED_IDS = {
    "H100": ("0302", "2330"),
    "H100-PCIE": ("0302", "2331"),
    "H200": ("0302", "2335"),
    "A100": ("0302", "20b2"),
    "L4": ("0302", "27b8"),
    "L40S": ("0302", "26b9"),
    "A10": ("0302", "2236"),
    "RTX4090": ("0300", "2684"),
    "HGX-H100": ("0302", "2330"),
    "H100-535": ("0302", "2330"),
    "HGX-H100-535": ("0302", "2330"),
}


def run_lspci(tmp_path: Path, sku: str, *args: str) -> list[str]:
    script = tmp_path / "lspci"
    script.write_text(doubles.lspci_script(doubles.resolve_sku(sku)))
    script.chmod(0o755)
    result = subprocess.run([str(script), *args], capture_output=True, text=True, check=True)
    return result.stdout.splitlines()


def test_every_sku_has_the_right_pci_ids() -> None:
    assert set(doubles.GPU_SKUS) == set(EXPECTED_IDS)
    for name, (pci_class, device) in EXPECTED_IDS.items():
        line = doubles.GPU_SKUS[name].lspci_line()
        assert line.startswith(f'0000:00:05.0 "{pci_class}" "10de" "{device}" -ra1 "10de" ')


@pytest.mark.parametrize(
    ("given", "name"),
    [("H100", "H100"), ("h100-sxm", "H100"), ("H100 PCIe", "H100-PCIE"), ("rtx_4090", "RTX4090")],
)
def test_sku_names_are_forgiving(given: str, name: str) -> None:
    assert doubles.resolve_sku(given).name == name


def test_an_unknown_sku_lists_the_known_ones() -> None:
    with pytest.raises(UsageError, match=r"unknown GPU SKU 'B200'.*H100, H100-PCIE"):
        doubles.resolve_sku("B200")


def test_lspci_prints_machine_readable_numeric_lines(tmp_path: Path) -> None:
    lines = run_lspci(tmp_path, "H100", "-Dnmm")
    assert lines[-1] == '0000:00:05.0 "0302" "10de" "2330" -ra1 "10de" "16c1"'
    assert lines == doubles.lspci_output(doubles.resolve_sku("H100")).splitlines()
    assert len(lines) == 4  # a VM's host bridge, ISA bridge and NIC besides the GPU


@pytest.mark.parametrize(
    ("args", "count"),
    [(("-d", "10de:"), 1), (("-d10de:2684",), 1), (("-d", "10de:2330"), 0), (("-d", "8086:"), 2)],
)
def test_lspci_honours_device_filters(tmp_path: Path, args: tuple[str, ...], count: int) -> None:
    assert len(run_lspci(tmp_path, "RTX4090", "-nmm", *args)) == count


def test_host_files_per_flag() -> None:
    assert doubles.host_files(None, False) == {}
    files = doubles.host_files("A100", True)
    assert sorted(files) == [doubles.MARKER_PATH, doubles.LSPCI_PATH, doubles.MOKUTIL_PATH]
    assert files[doubles.LSPCI_PATH][0] == 0o755
    assert "pci_id=10de:20b2" in files[doubles.MARKER_PATH][1]


def test_mokutil_says_secure_boot_is_on(tmp_path: Path) -> None:
    script = tmp_path / "mokutil"
    script.write_text(doubles.MOKUTIL_SCRIPT)
    script.chmod(0o755)
    result = subprocess.run([str(script), "--sb-state"], capture_output=True, text=True, check=True)
    assert result.stdout == "SecureBoot enabled\n"


def test_the_hgx_shape_has_eight_gpus_and_four_nvswitches(tmp_path: Path) -> None:
    lines = run_lspci(tmp_path, "hgx-h100", "-Dnmm", "-d", "10de:")
    assert len(lines) == 12
    assert sum('"0302" "10de" "2330"' in line for line in lines) == 8
    assert lines[-4:] == [f'0000:00:{n}.0 "0680" "10de" "22a3" -ra1 "10de" "1796"'
                          for n in (10, 11, 12, 13)]  # fmt: skip
    assert "nvswitches=4" in doubles.marker_text(doubles.resolve_sku("HGX-H100"))


def test_the_535_shapes_answer_nvidia_smi_as_a_loaded_535_driver(tmp_path: Path) -> None:
    files = doubles.host_files("HGX-H100-535", False)
    assert doubles.host_files("HGX-H100", False).keys() == {doubles.LSPCI_PATH, doubles.MARKER_PATH}
    mode, text = files[doubles.NVIDIA_SMI_PATH]
    script = tmp_path / "nvidia-smi"
    script.write_text(text)
    script.chmod(mode)
    query = [str(script), "--query-gpu=index,driver_version,memory.total,power.limit",
             "--format=csv,noheader,nounits"]  # fmt: skip
    rows = subprocess.run(query, capture_output=True, text=True, check=True).stdout.splitlines()
    assert rows[0] == "0, 535.261.03, 81559, [N/A]"
    assert len(rows) == 8


def test_pretend_driver_files_and_their_modinfo(tmp_path: Path) -> None:
    assert doubles.pretend_driver_files("H100", None) == {}
    files = doubles.pretend_driver_files("H100", "535.261.03")
    assert files[doubles.PRETEND_DRIVER_PATH] == (0o644, "535.261.03\n")
    assert files[doubles.NVIDIA_SMI_PATH][0] == files[doubles.MODINFO_PATH][0] == 0o755
    # modinfo answers for nvidia from the installed version's file, and passes the rest on.
    script = doubles.MODINFO_SCRIPT.replace(doubles.PRETEND_DRIVER_PATH, str(tmp_path / "v"))
    (tmp_path / "v").write_text("535.261.03\n")
    modinfo = tmp_path / "modinfo"
    modinfo.write_text(script.replace("exec /sbin/modinfo", "echo real"))
    modinfo.chmod(0o755)

    def run(*args: str) -> str:
        return subprocess.run(
            [str(modinfo), *args], capture_output=True, text=True, check=True
        ).stdout

    assert run("-F", "version", "nvidia") == "535.261.03\n"
    assert run("-k", "6.1.0", "-F", "version", "nvidia") == "535.261.03\n"
    assert run("-F", "version", "ext4") == "real -F version ext4\n"


def test_pretend_nvidia_smi_speaks_nvidia_smis_words_without_a_module(tmp_path: Path) -> None:
    """Here no /sys/module/nvidia exists: the stand-in says what nvidia-smi says then."""
    smi = tmp_path / "nvidia-smi"
    smi.write_text(doubles.nvidia_smi_script(doubles.resolve_sku("H100")))
    smi.chmod(0o755)
    result = subprocess.run([str(smi)], capture_output=True, text=True, check=False)
    assert result.returncode == 9
    assert [d.name for d in diagnose.from_output(result.stdout)] == [diagnose.NOT_LOADED]
