"""The table of failure signatures: one regex of a command's output -> one named diagnosis."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from gpurig.diagnose.names import (
    DKMS_FAILED,
    DPKG_LOCKED,
    FABRIC_MANAGER,
    FELL_OFF_BUS,
    MODULE_MISSING,
    NO_DEVICE,
    NO_MODULE_LOADING,
    NOT_LOADED,
    NOUVEAU,
    NOUVEAU_FIX,
    NOUVEAU_MESSAGE,
    NVML_MISMATCH,
    PACKAGE_MISSING,
    PERSISTENCED_FAILED,
    REPO_KEY,
    REPO_UNREACHABLE,
    SECURE_BOOT_REJECTED,
    TOO_OLD,
    Context,
    Diagnosis,
    headers_fix,
    secure_boot_fix,
)

REPO_MESSAGE = "the host cannot download from NVIDIA's CUDA repository"
REPO_FIX = (
    "let it reach developer.download.nvidia.com (network.proxy and network.ca_bundle for a "
    "proxy), or install the branch the Debian archive carries (nvidia.driver_branch 535 on "
    "Debian 12, 550 on Debian 13, with a CUDA variant it runs)"
)
TOO_OLD_MESSAGE = "torch's CUDA runtime is newer than the driver"
TOO_OLD_FIX = (
    "choose an older CUDA variant in torch.variants, or raise nvidia.driver_branch "
    "(`gpurig preflight` names both)"
)


FABRIC_FIX = (
    "`journalctl -u nvidia-fabricmanager` says why: its version must be the driver's exactly "
    "(`dpkg -l 'nvidia-fabricmanager*'` against `modinfo -F version nvidia`; gpurig installs the "
    'match), and every NVSwitch must be visible (`lspci -nd 10de: | grep -c " 0680:"` on an HGX '
    "board: 4 on H100/H200); a host without the GPUs (a test VM, a container) cannot start it"
)


def _package_fix(package: str, context: Context) -> str:
    if context.os_id == "ubuntu":
        return (
            "enable the restricted component and run apt update; `apt-cache search "
            "nvidia-headless` lists the branches this release carries"
        )
    if "cuda" in package:
        return "check that NVIDIA's CUDA repository for this release is configured and reachable"
    return "enable contrib, non-free and non-free-firmware and run apt update"


def _nvml_detail(text: str) -> str:
    api = re.search(r"client has the version (\S+), but\s+(?:NVRM: )?this kernel module has the "
                    r"version (\S+?)\.?\s", text)  # fmt: skip
    library = re.search(r"NVML library version: (\S+)", text)
    if api:
        return f"the libraries are {api[1]}, the loaded kernel module {api[2]}"
    if library:
        return f"the libraries are {library[1]}, the loaded kernel module is older"
    return "the driver libraries were upgraded under a loaded kernel module"


# The daemon's own reason in its journal ("Failed to query NVIDIA devices...", "Failed to open
# libnvidia-cfg.so.1: ..."), not systemd's "Failed to start" about it.
_PERSISTENCED_REASON = re.compile(
    r"^(?:\S.*nvidia-persistenced\[\d+\]: )?(Failed to (?!start )[^\n]*?)\.?$", re.M
)


def _persistenced_detail(text: str) -> str:
    reason = _PERSISTENCED_REASON.search(text)
    return "the daemon did not start" + (f": {reason[1]}" if reason else "")


def _cuda_of(found: str) -> str:
    # torch's "found version 12020" is major*1000 + minor*10.
    number = int(found)
    return f"{number // 1000}.{number % 1000 // 10}"


Match = re.Match[str]


@dataclass(frozen=True)
class Signature:
    """A failure recognised by one regex in a command's output.

    `message` and `fix` turn the match (and the whole text, and the host's context) into words;
    `when` narrows the regex's first match further. Several signatures may share a name: the
    first that matches names the failure.
    """

    name: str
    pattern: re.Pattern[str]
    message: Callable[[Match, str, Context], str]
    fix: Callable[[Match, Context], str]
    when: Callable[[Match], bool] = lambda match: True

    def diagnose(self, text: str, context: Context) -> Diagnosis | None:
        match = self.pattern.search(text)
        if match is None or not self.when(match):
            return None
        return Diagnosis(self.name, self.message(match, text, context), self.fix(match, context))


def _said(text: str) -> Callable[[Match, str, Context], str]:
    return lambda match, output, context: text


def _fix(text: str) -> Callable[[Match, Context], str]:
    return lambda match, context: text


def _package(match: Match) -> str:
    return match["a"] or match["b"]


_MISSING_PACKAGE = re.compile(
    r"E: (?:Unable to locate package (?P<a>\S+)|Package '(?P<b>[^']+)' has no installation "
    r"candidate)"
)

# The table, root cause first: a missing header makes DKMS fail, which makes modprobe fail,
# which makes nvidia-smi fail; the first name is the one that matters (see PRIORITY).
SIGNATURES = (
    Signature(
        DPKG_LOCKED,
        # At once: "E: Could not get lock L. It is held by process N (NAME)". After a bounded
        # wait (DPkg::Lock::Timeout): "Waiting for cache lock: Could not get lock L. It is held
        # by process N (NAME)..." lines, then "E: Unable to acquire the dpkg frontend lock (L)".
        re.compile(
            r"Could not get lock (?P<lock>\S+?)\.?(?: It is held by process (?P<pid>\d+) "
            r"\((?P<name>[^)]*)\))?(?:\.\.\.)?$"
            r"|Unable to acquire the dpkg frontend lock \((?P<frontend>\S+)\)",
            re.M,
        ),
        lambda m, text, c: (
            f"another package manager holds {m['lock'] or m['frontend']}"
            + (f" (held by {m['name']}, pid {m['pid']})" if m["pid"] else "")
        ),
        _fix(
            "wait for it to finish (on a fresh VM it is unattended-upgrades' first run), or stop "
            "it with `systemctl stop unattended-upgrades`, then re-run"
        ),
    ),
    Signature(
        REPO_UNREACHABLE,
        re.compile(r"^curl: \((\d+)\) (.+)$", re.M),
        lambda m, text, c: f"{REPO_MESSAGE} (curl error {m[1]}: {m[2].strip()})",
        _fix(REPO_FIX),
    ),
    Signature(
        REPO_UNREACHABLE,
        re.compile(r"^[EW]: Failed to fetch (\S*nvidia\.com\S*)\s+(.*)$", re.M),
        lambda m, text, c: f"{REPO_MESSAGE} ({m[1]}: {m[2].strip()})",
        _fix(REPO_FIX),
    ),
    Signature(
        REPO_KEY,
        re.compile(r"gpurig: cuda-keyring key (\S*), expected (\S+)"),
        lambda m, text, c: (
            f"the cuda-keyring package carries key {m[1] or '(none)'}, not NVIDIA's {m[2]}"
        ),
        _fix("check the download (a proxy or mirror may have replaced it); nothing was installed"),
    ),
    Signature(
        DKMS_FAILED,
        _MISSING_PACKAGE,
        lambda m, text, c: (
            f"no kernel headers for {_package(m).removeprefix('linux-headers-')} in the archives"
        ),
        lambda m, c: headers_fix(_package(m).removeprefix("linux-headers-"), c),
        when=lambda m: _package(m).startswith("linux-headers-"),
    ),
    Signature(
        PACKAGE_MISSING,
        _MISSING_PACKAGE,
        lambda m, text, c: f"apt has no {_package(m)}",
        lambda m, c: _package_fix(_package(m), c),
        when=lambda m: not _package(m).startswith("linux-headers-"),
    ),
    Signature(
        DKMS_FAILED,
        re.compile(
            r"(?:Your kernel headers for kernel (?P<a>\S+) cannot be found"
            r"|Module build for kernel (?P<b>\S+) was skipped since the\s+kernel headers)"
        ),
        lambda m, text, c: f"no kernel headers for {m['a'] or m['b']}",
        lambda m, c: headers_fix(m["a"] or m["b"], c),
    ),
    Signature(
        DKMS_FAILED,
        re.compile(r"Bad return status for module build on kernel: (\S+)"),
        lambda m, text, c: (
            f"the nvidia module did not compile for kernel {m[1]}"
            + (f" (see {log[1]})" if (log := re.search(r"Consult (\S+make\.log)", text)) else "")
        ),
        _fix(
            "a kernel newer than the driver branch supports needs a newer branch "
            "(nvidia.driver_branch); a compiler mismatch needs the gcc the kernel was built "
            "with; on Ubuntu, Canonical's precompiled modules avoid the build"
        ),
    ),
    Signature(
        SECURE_BOOT_REJECTED,
        re.compile(
            r"Key was rejected by service|Loading of unsigned module is rejected"
            r"|unsigned module loading is restricted"
            r"|module verification failed.*required key missing"
        ),
        _said("the kernel refused the nvidia module: it is not signed by a key Secure Boot trusts"),
        lambda m, c: secure_boot_fix(c),
    ),
    Signature(
        NOUVEAU,
        re.compile(
            r"NVRM: The NVIDIA probe routine was not called"
            r"|nouveau, rivafb, nvidiafb or rivatv\s+(?:NVRM:\s+)?was loaded"
        ),
        _said(NOUVEAU_MESSAGE),
        _fix(NOUVEAU_FIX),
    ),
    Signature(
        MODULE_MISSING,
        re.compile(r"Module (nvidia\S*) not found in directory /lib/modules/(\S+)"),
        lambda m, text, c: (
            f"no {m[1]} module is installed for kernel {m[2]} (DKMS did not "
            "build it, or the kernel was upgraded after the driver)"
        ),
        lambda m, c: headers_fix(m[2], c) + "; then `dkms autoinstall` builds it",
    ),
    Signature(
        NO_MODULE_LOADING,
        re.compile(r"could not insert 'nvidia\S*': Operation not permitted"),
        _said("modprobe is not permitted here (a container, or kernel lockdown)"),
        _fix("load the driver on the machine that owns the kernel (the container host or VM)"),
    ),
    Signature(
        NVML_MISMATCH,
        re.compile(r"Driver/library version mismatch|NVRM: API mismatch"),
        lambda m, text, c: _nvml_detail(text),
        _fix(
            "reboot the host so the new module loads (gpurig reboots when nvidia.allow_reboot "
            "is true); hold the driver packages (nvidia.hold_packages) so it does not recur"
        ),
    ),
    Signature(
        FELL_OFF_BUS,
        re.compile(r"Xid \(PCI:(\S+?)\): 79\b|GPU has fallen off the bus"),
        lambda m, text, c: (
            f"the GPU{f' at {m[1]}' if m[1] else ''} stopped answering on the PCI bus (Xid 79)"
        ),
        _fix(
            "power-cycle the host (a warm reboot is often not enough); if it recurs, check PCIe "
            "seating, power and cooling with the provider"
        ),
    ),
    Signature(
        NO_DEVICE,
        re.compile(r"^No devices were found", re.M),
        _said("the driver is loaded but exposes no GPU"),
        _fix(
            "check dmesg for NVRM errors: a GPU newer than the driver branch (raise "
            "nvidia.driver_branch), a GPU that fell off the bus (power-cycle), or a VM whose GPU "
            "is not passed through"
        ),
    ),
    Signature(
        NOT_LOADED,
        re.compile(re.escape("couldn't communicate with the NVIDIA driver")),
        lambda m, text, c: (
            "nvidia-smi cannot reach the driver: no nvidia module is loaded on "
            f"{c.kernel or 'the running kernel'}"
        ),
        _fix(
            "`sudo modprobe nvidia` shows why; usually the kernel was upgraded and the module not "
            "rebuilt (install its headers, `dkms autoinstall`) or the host needs a reboot"
        ),
    ),
    Signature(
        PACKAGE_MISSING,
        re.compile(r"gpurig: no (\S+) at driver version (\S+)"),
        lambda m, text, c: f"apt has no {m[1]} at version {m[2]}, the driver's",
        _fix(
            "the fabric manager must match the driver exactly: apt update, or move the driver "
            "and fabric manager together to a version the repository has (re-run gpurig)"
        ),
    ),
    Signature(
        FABRIC_MANAGER,
        re.compile(
            r"gpurig: nvidia-fabricmanager is not running \(systemctl is-active: (\S*)\)"
            r"|Job for nvidia-fabricmanager\.service failed"
        ),
        lambda m, text, c: (
            "nvidia-fabricmanager did not start, so CUDA cannot initialise on this board's "
            f"NVSwitches{f' (systemctl is-active: {m[1]})' if m[1] else ''}"
        ),
        _fix(FABRIC_FIX),
    ),
    Signature(
        TOO_OLD,
        re.compile(r"The NVIDIA driver on your system is too old \(found version (\d+)\)"),
        lambda m, text, c: (
            f"{TOO_OLD_MESSAGE} (it supports CUDA {_cuda_of(m[1])}), so torch runs on the CPU"
        ),
        _fix(TOO_OLD_FIX),
    ),
    Signature(
        TOO_OLD,
        re.compile(r"CUDA driver version is insufficient for CUDA runtime version"),
        _said(f"{TOO_OLD_MESSAGE}, so torch runs on the CPU"),
        _fix(TOO_OLD_FIX),
    ),
    Signature(
        PERSISTENCED_FAILED,
        re.compile(
            r"nvidia-persistenced failed to initialize"
            r"|Failed to start nvidia-persistenced|Job for nvidia-persistenced\.service failed"
        ),
        lambda m, text, c: _persistenced_detail(text),
        _fix(
            "it needs the NVIDIA driver loaded, its libraries and the device files /dev/nvidia*: "
            "fix what it names (`journalctl -u nvidia-persistenced`), then re-run; "
            "nvidia.persistence_mode: false leaves it off"
        ),
    ),
)
