"""Named diagnoses from real-looking output: every failure of ANCHORS.md's table, and more."""

from __future__ import annotations

import pytest

from gpurig import diagnose
from gpurig.diagnose import Context, Diagnosis
from gpurig.model.host import HostFacts, PciGpu
from helpers.facts import host_facts

KERNEL = "6.18.44-fc-v657"
H100 = PciGpu("0000:00:05.0", "2330", "NVIDIA H100 SXM5 80GB", "9.0")

# What these tools print, copied from real runs (the Debian one from a sandbox host here).
DEBIAN_DKMS_NO_HEADERS = f"""\
Setting up nvidia-kernel-dkms (535.309.01-0+deb12u1) ...
Loading new nvidia-current-535.309.01 DKMS files...
Sign command: /lib/modules/{KERNEL}/build/scripts/sign-file
Binary /lib/modules/{KERNEL}/build/scripts/sign-file not found, modules won't be signed
Error! Your kernel headers for kernel {KERNEL} cannot be found at /lib/modules/{KERNEL}/build or /lib/modules/{KERNEL}/source.
Please install the linux-headers-{KERNEL} package or use the --kernelsourcedir option to tell DKMS where it's located.
"""  # noqa: E501
UBUNTU_DKMS_SKIPPED = """\
Setting up nvidia-dkms-580-server (580.95.05-0ubuntu0.24.04.2) ...
Loading new nvidia-srv-580.95.05 DKMS files...
Building for 6.8.0-88-generic
Module build for kernel 6.8.0-88-generic was skipped since the
kernel headers for this kernel do not seem to be installed.
"""
DKMS_BAD_RETURN = """\
Building initial module for 6.14.0-29-generic
ERROR (dkms apport): kernel package linux-headers-6.14.0-29-generic is not supported
Error! Bad return status for module build on kernel: 6.14.0-29-generic (x86_64)
Consult /var/lib/dkms/nvidia-srv/535.261.03/build/make.log for more information.
dpkg: error processing package nvidia-dkms-535-server (--configure):
 installed nvidia-dkms-535-server package post-installation script subprocess returned error exit status 10
E: Sub-process /usr/bin/dpkg returned an error code (1)
"""  # noqa: E501
DPKG_LOCK = """\
E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 1234 (unattended-upgr)
E: Unable to acquire the dpkg frontend lock (/var/lib/dpkg/lock-frontend), is another process using it?
"""  # noqa: E501
NVML = """\
Failed to initialize NVML: Driver/library version mismatch
NVML library version: 580.95
"""
API_MISMATCH = """\
[ 1234.5678] NVRM: API mismatch: the client has the version 580.95.05, but
NVRM: this kernel module has the version 580.65.06.  Please
NVRM: make sure that this kernel module and all NVIDIA driver
NVRM: components have the same version.
"""
NOUVEAU_DMESG = """\
[    4.281537] NVRM: The NVIDIA probe routine was not called for 1 device(s).
[    4.281539] NVRM: This can occur when a driver such as:
               NVRM: nouveau, rivafb, nvidiafb or rivatv
               NVRM: was loaded and obtained ownership of the NVIDIA device(s).
"""
SECURE_BOOT = "modprobe: ERROR: could not insert 'nvidia': Key was rejected by service\n"
MODULE_NOT_FOUND = f"""\
modprobe: FATAL: Module nvidia-current not found in directory /lib/modules/{KERNEL}
modprobe: ERROR: ../libkmod/libkmod-module.c:1047 command_do() Error running install command 'modprobe -i nvidia-current ' for module nvidia: retcode 1
modprobe: ERROR: could not insert 'nvidia': Invalid argument
"""  # noqa: E501
NOT_PERMITTED = "modprobe: ERROR: could not insert 'nvidia': Operation not permitted\n"
XID_79 = "[ 8812.1] NVRM: Xid (PCI:0000:3b:00): 79, pid=0, name=, GPU has fallen off the bus.\n"
NO_DEVICES = "No devices were found\n"
SMI_NO_DRIVER = (
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure "
    "that the latest NVIDIA driver is installed and running.\n"
)
TORCH_TOO_OLD = (
    "UserWarning: CUDA initialization: The NVIDIA driver on your system is too old (found "
    "version 12020). Please update your GPU driver by downloading and installing a new version "
    "from the URL: http://www.nvidia.com/Download/index.aspx Alternatively, go to: "
    "https://pytorch.org to install a PyTorch version that has been compiled with your version "
    "of the CUDA driver.\n"
)
APT_NO_PACKAGE = "E: Unable to locate package nvidia-headless-580-server\n"
APT_NO_HEADERS = f"E: Unable to locate package linux-headers-{KERNEL}\n"
CURL_DNS = "curl: (6) Could not resolve host: developer.download.nvidia.com\n"
APT_FETCH = (
    "E: Failed to fetch https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/"
    "InRelease  403  Forbidden [IP: 10.0.0.1 3128]\n"
)
KEY_MISMATCH = (
    "gpurig: cuda-keyring key 0123ABCD, expected EB693B3035CD5710E231E123A4B469963BF863CC\n"
)
# systemctl and the unit's journal (gpurig.plan.driver.unit_command): the first from a systemd
# sandbox host here (Debian's nvidia-persistenced without the driver's libraries); the second
# as nvidia-persistenced's source words a host whose device files are missing.
PERSISTENCED_NO_LIBRARY = """\
Job for nvidia-persistenced.service failed because the control process exited with error code.
See "systemctl status nvidia-persistenced.service" and "journalctl -xeu nvidia-persistenced.service" for details.
nvidia-persistenced.service: Failed to get cgroup ID of cgroup /sys/fs/cgroup/unified/docker/68fc/system.slice/nvidia-persistenced.service, ignoring: Operation not permitted
Starting nvidia-persistenced.service - NVIDIA Persistence Daemon...
Started (1076)
Failed to open libnvidia-cfg.so.1: libnvidia-cfg.so.1: cannot open shared object file: No such file or directory
nvidia-persistenced failed to initialize. Check syslog for more details.
Shutdown (1076)
nvidia-persistenced.service: Control process exited, code=exited, status=1/FAILURE
nvidia-persistenced.service: Failed with result 'exit-code'.
Failed to start nvidia-persistenced.service - NVIDIA Persistence Daemon.
"""  # noqa: E501
PERSISTENCED_NO_DEVICES = """\
Job for nvidia-persistenced.service failed because the control process exited with error code.
Failed to query NVIDIA devices. Please ensure that the NVIDIA device files (/dev/nvidia*) exist, and that user 0 has read and write permissions for those files.
nvidia-persistenced failed to initialize. Check syslog for more details.
"""  # noqa: E501
PERSISTENCED_BARE = "Job for nvidia-persistenced.service failed because a timeout was exceeded.\n"


@pytest.mark.parametrize(
    ("text", "name", "in_message", "in_fix"),
    [
        (DEBIAN_DKMS_NO_HEADERS, diagnose.DKMS_FAILED, f"no kernel headers for {KERNEL}",
         f"linux-headers-{KERNEL}"),
        (UBUNTU_DKMS_SKIPPED, diagnose.DKMS_FAILED, "no kernel headers for 6.8.0-88-generic",
         "linux-headers-6.8.0-88-generic"),
        (DKMS_BAD_RETURN, diagnose.DKMS_FAILED, "kernel 6.14.0-29-generic (see /var/lib/dkms/",
         "newer branch"),
        (DPKG_LOCK, diagnose.DPKG_LOCKED, "unattended-upgr, pid 1234", "unattended-upgrades"),
        (NVML, diagnose.NVML_MISMATCH, "libraries are 580.95", "reboot"),
        (API_MISMATCH, diagnose.NVML_MISMATCH, "580.95.05, the loaded kernel module 580.65.06",
         "reboot"),
        (NOUVEAU_DMESG, diagnose.NOUVEAU, "nouveau driver holds the GPU", "blacklist nouveau"),
        (SECURE_BOOT, diagnose.SECURE_BOOT_REJECTED, "not signed", "mokutil --import"),
        (MODULE_NOT_FOUND, diagnose.MODULE_MISSING, f"nvidia-current module is installed for "
         f"kernel {KERNEL}", "dkms autoinstall"),
        (NOT_PERMITTED, diagnose.NO_MODULE_LOADING, "not permitted", "container host"),
        (XID_79, diagnose.FELL_OFF_BUS, "0000:3b:00", "power-cycle"),
        (NO_DEVICES, diagnose.NO_DEVICE, "exposes no GPU", "driver_branch"),
        (SMI_NO_DRIVER, diagnose.NOT_LOADED, "cannot reach the driver", "modprobe nvidia"),
        (TORCH_TOO_OLD, diagnose.TOO_OLD, "supports CUDA 12.2", "driver_branch"),
        (APT_NO_PACKAGE, diagnose.PACKAGE_MISSING, "nvidia-headless-580-server", "non-free"),
        (APT_NO_HEADERS, diagnose.DKMS_FAILED, f"no kernel headers for {KERNEL} in the archives",
         f"linux-headers-{KERNEL}"),
        (CURL_DNS, diagnose.REPO_UNREACHABLE, "curl error 6: Could not resolve host",
         "developer.download.nvidia.com"),
        (APT_FETCH, diagnose.REPO_UNREACHABLE, "InRelease: 403  Forbidden", "network.proxy"),
        (KEY_MISMATCH, diagnose.REPO_KEY, "0123ABCD, not NVIDIA's EB693B", "nothing was installed"),
        (PERSISTENCED_NO_LIBRARY, diagnose.PERSISTENCED_FAILED,
         "did not start: Failed to open libnvidia-cfg.so.1: libnvidia-cfg.so.1: cannot open",
         "journalctl -u nvidia-persistenced"),
        (PERSISTENCED_NO_DEVICES, diagnose.PERSISTENCED_FAILED,
         "did not start: Failed to query NVIDIA devices. Please ensure", "/dev/nvidia*"),
        (PERSISTENCED_BARE, diagnose.PERSISTENCED_FAILED, "the daemon did not start",
         "nvidia.persistence_mode: false"),
    ],
)  # fmt: skip
def test_each_failure_gets_its_name_and_fix(
    text: str, name: str, in_message: str, in_fix: str
) -> None:
    found = diagnose.from_output(text)
    assert found, f"no diagnosis for {text!r}"
    assert found[0].name == name
    assert in_message in found[0].message
    assert in_fix in found[0].fix
    assert str(found[0]).startswith(f"{name}: ")
    assert "Fix: " in str(found[0])


def test_a_wall_of_dpkg_output_becomes_one_line() -> None:
    wall = "\n".join(f"Unpacking libfoo{i} (1.{i}) ..." for i in range(400))
    found = diagnose.explain(wall + "\n" + DEBIAN_DKMS_NO_HEADERS + wall)
    assert [d.name for d in found] == [diagnose.DKMS_FAILED]
    assert len(str(found[0]).splitlines()) == 1


def test_fixes_follow_the_os() -> None:
    ubuntu = diagnose.from_output(SECURE_BOOT, Context(os_id="ubuntu"))[0]
    debian = diagnose.from_output(SECURE_BOOT, Context(os_id="debian"))[0]
    assert "linux-modules-nvidia-" in ubuntu.fix
    assert "mokutil --import /var/lib/dkms/mok.pub" in debian.fix
    ubuntu_headers = diagnose.from_output(APT_NO_HEADERS, Context(os_id="ubuntu"))[0]
    assert "precompiled" in ubuntu_headers.fix
    apt_ubuntu = diagnose.from_output(APT_NO_PACKAGE, Context(os_id="ubuntu"))[0]
    assert "restricted" in apt_ubuntu.fix


def test_root_cause_first_and_symptoms_dropped() -> None:
    found = diagnose.from_output(MODULE_NOT_FOUND + DEBIAN_DKMS_NO_HEADERS + SMI_NO_DRIVER)
    assert [d.name for d in found] == [diagnose.DKMS_FAILED]
    found = diagnose.from_output(SECURE_BOOT + SMI_NO_DRIVER + XID_79)
    assert [d.name for d in found] == [diagnose.SECURE_BOOT_REJECTED, diagnose.FELL_OFF_BUS]


def test_a_daemon_that_needs_a_driver_that_is_not_loaded_names_the_driver() -> None:
    found = diagnose.from_output(PERSISTENCED_NO_DEVICES + SMI_NO_DRIVER)
    assert [d.name for d in found] == [diagnose.NOT_LOADED]


def test_unrecognised_output_is_still_short_and_points_to_the_log() -> None:
    text = "\n".join(["Reading package lists...", "E: Sub-process returned an error code (100)"])
    found = diagnose.explain(text, log="/var/log/gpurig/nvidia-driver.log")
    assert [d.name for d in found] == [diagnose.UNRECOGNISED]
    assert "E: Sub-process returned an error code (100)" in found[0].message
    assert "/var/log/gpurig/nvidia-driver.log" in found[0].fix
    assert diagnose.explain("")[0].message == "no output"


def _facts(**fields: object) -> HostFacts:
    return host_facts(**{"gpus": [H100], "kernel": KERNEL, **fields})


def test_facts_of_a_host_whose_dkms_module_never_built() -> None:
    facts = _facts(
        kernel_headers=False,
        dkms=["nvidia-current/535.309.01: added"],
        nvidia_smi=SMI_NO_DRIVER,
        nvidia_smi_rc=9,
    )
    found = diagnose.from_facts(facts)
    assert [d.name for d in found] == [diagnose.DKMS_FAILED]
    assert found[0].message.startswith(f"no kernel headers for {KERNEL}")


def test_facts_of_a_host_upgraded_to_a_kernel_without_the_module() -> None:
    facts = _facts(
        kernel_headers=True,
        dkms=["nvidia/580.65.06, 6.8.0-40-generic, x86_64: installed"],
        kernel="6.8.0-45-generic",
    )
    found = diagnose.from_facts(facts)
    assert [d.name for d in found] == [diagnose.MODULE_MISSING]
    assert "dkms autoinstall -k 6.8.0-45-generic" in found[0].fix


def test_facts_name_nouveau_secure_boot_and_nvml() -> None:
    assert [d.name for d in diagnose.from_facts(_facts(nouveau_loaded=True))] == [diagnose.NOUVEAU]
    unsigned = diagnose.from_facts(_facts(secure_boot=True, dkms_mok_enrolled=False))
    assert unsigned[0] == Diagnosis(
        diagnose.SECURE_BOOT_UNSIGNED, unsigned[0].message, diagnose.ENROLL_MOK
    )
    assert "mokutil --import /var/lib/dkms/mok.pub" in str(unsigned[0])
    mismatch = diagnose.from_facts(
        _facts(driver_version="580.65.06", nvidia_smi=NVML, nvidia_smi_rc=18)
    )
    assert [d.name for d in mismatch] == [diagnose.NVML_MISMATCH]
    dmesg = diagnose.from_facts(_facts(kernel_log=NOUVEAU_DMESG.splitlines()))
    assert [d.name for d in dmesg] == [diagnose.NOUVEAU]


def test_healthy_or_gpu_less_hosts_have_nothing_to_diagnose() -> None:
    smi = "00000000:00:05.0, NVIDIA H100 80GB HBM3, 580.65.06, 9.0"
    healthy = _facts(driver_version="580.65.06", nvidia_smi=smi, nvidia_smi_rc=0)
    assert diagnose.from_facts(healthy) == []
    assert diagnose.from_facts(_facts(gpus=[], nouveau_loaded=True)) == []


def test_too_old_names_both_fixes() -> None:
    found = diagnose.too_old(
        "535.183.01", "torch 2.13.0 cu130", "13.0", "580.65.06",
        "choose the cu126 variant, or set driver branch 580",
    )  # fmt: skip
    assert str(found) == (
        "driver too old for the wheel: driver 535.183.01 cannot run the torch 2.13.0 cu130 "
        "wheel (CUDA 13.0 needs 580.65.06 or newer): torch would fall back to the CPU. "
        "Fix: choose the cu126 variant, or set driver branch 580"
    )
