"""The GPU layer's plan: which driver a host gets, from where, and the files that go with it.

Pure functions of the host's GPU state and the spec: the pyinfra driver stage and the Ansible
nvidia role both act on what `plan_driver` and `driver_section` decide.

    Ubuntu 22.04/24.04   Canonical's -server packages: DKMS, or with Secure Boot on (or unknown)
                         the signed precompiled modules (linux-modules-nvidia-<branch>-server-*)
    Debian 12/13         the archive's non-free packages when the branch is the archive's
                         (12: 535, 13: 550), else NVIDIA's CUDA repository through its
                         cuda-keyring package, the key's fingerprint checked first
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gpurig import compat
from gpurig.diagnose import Context
from gpurig.errors import GpurigError, UsageError
from gpurig.hostlayout import LOG_DIR
from gpurig.model.host import GpuState, HostFacts
from gpurig.plan.steps import UNCHANGED
from gpurig.plan.system import apt_get, apt_update
from gpurig.spec import Nvidia, Stack

if TYPE_CHECKING:
    from gpurig.plan.fabric import Fabric
    from gpurig.preflight import Verdict

# The archive's one driver branch per Debian release (bookworm 535.x, trixie 550.x).
DEBIAN_ARCHIVE_BRANCH = {"12": 535, "13": 550}
DEBIAN_CODENAME = {"12": "bookworm", "13": "trixie"}
# The distribution's own nvcc, used when it matches the torch build's CUDA version.
DISTRO_TOOLKIT = {
    "debian-12": "11.8",
    "debian-13": "12.4",
    "ubuntu-22.04": "11.5",
    "ubuntu-24.04": "12.0",
}
CUDA_REPO = "https://developer.download.nvidia.com/compute/cuda/repos/{distro}/x86_64/"
CUDA_KEYRING = "cuda-keyring_1.1-1_all.deb"
# NVIDIA's CUDA repository signing key since 2022 (3bf863cc), as its install guide gives it.
CUDA_KEY_FINGERPRINT = "EB693B3035CD5710E231E123A4B469963BF863CC"
REBOOT_TIMEOUT_S = 900  # servers with many GPUs and a long POST take minutes
ENV_REBOOT_TIMEOUT = "GPURIG_REBOOT_TIMEOUT_S"
# What changes with every boot: the kernel's boot id (a VM's reboot), and PID 1's start time in
# clock ticks since the kernel booted (also a container that its engine restarts: the sandbox's
# VM stand-ins). Both front ends compare it before and after a reboot.
BOOT_MARKER = "cat /proc/sys/kernel/random/boot_id; cut -d' ' -f22 /proc/1/stat"
# Lines of an apt/dkms log worth a diagnosis; the rest stays in the log file on the host.
LOG_SIGNATURES = (
    r"E: |error|warning: |dkms|headers|rejected|could not get lock|bad return|make\.log|"
    r"unable to|fatal|gpurig:|skipped|not found|curl: |failed to fetch"
)


@dataclass(frozen=True)
class DriverPlan:
    """What the driver stage installs on one host, from its OS, kernel and Secure Boot state."""

    os_name: str  # ubuntu-24.04
    source: str  # ubuntu, debian (the archive), or cuda (NVIDIA's CUDA repository)
    branch: int
    open_modules: bool
    packages: list[str]  # what apt installs
    headers: list[str] = field(default_factory=list)  # for DKMS builds; none with precompiled
    precompiled: bool = False  # Canonical's signed modules: no DKMS, no headers
    mok: bool = False  # DKMS under Secure Boot: its signing key must be enrolled
    kernel_holds: list[str] = field(default_factory=list)  # installed kernel meta packages
    persistenced_user: str = "nvidia-persistenced"

    @property
    def cuda_repo(self) -> str:
        distro = self.os_name.replace("-", "").replace(".", "")  # debian12, ubuntu2404
        return CUDA_REPO.format(distro=distro)

    def describe(self) -> str:
        source = {
            "ubuntu": "Canonical's -server packages",
            "debian": "Debian's non-free archive",
            "cuda": "NVIDIA's CUDA repository",
        }[self.source]
        modules = "open " if self.open_modules else ""
        build = "signed precompiled modules" if self.precompiled else f"{modules}DKMS modules"
        return f"driver {self.branch} from {source}, {build}"


def _kernel_flavour(kernel: str) -> str:
    """6.8.0-45-generic -> generic; 6.1.0-25-cloud-amd64 -> cloud-amd64."""
    return re.sub(r"^\d+\.\d+\.\d+-\d+(?:\.\d+)?-", "", kernel)


def kernel_metas(installed: dict[str, str]) -> list[str]:
    """Installed kernel meta packages (linux-image-amd64, linux-headers-generic-hwe-24.04...):
    the ones that move a host to a new kernel, which a DKMS module must follow."""
    metas = []
    for name in installed:
        match = re.match(r"^linux-(image|headers)-([a-z][a-z0-9.+-]*)$", name)
        if match and not re.search(r"\d+\.\d+\.\d+-\d+", name):
            metas.append(name)
    return sorted(metas)


def plan_driver(os_id: str, os_version: str, state: GpuState, nvidia: Nvidia) -> DriverPlan:
    """The packages for this OS, branch, kernel and Secure Boot state; DeployError elsewhere."""
    branch = nvidia.driver_branch
    kernel = state.kernel
    metas = kernel_metas(state.packages)
    flavour = _kernel_flavour(kernel)
    # Meta flavours of the running kernel: generic, generic-hwe-24.04, cloud-amd64.
    flavours = sorted(
        {
            m.split("-", 2)[2]
            for m in metas
            if m.startswith("linux-image-")
            and (m[12:] == flavour or m[12:].startswith(flavour + "-"))
        }
    )
    os_name = f"{os_id}-{os_version}"
    if os_id == "ubuntu" and os_version in ("22.04", "24.04"):
        suffix = "-server-open" if nvidia.open_kernel_modules else "-server"
        utils = f"nvidia-utils-{branch}-server"
        # Secure Boot on, or unknown: Canonical's signed modules load either way.
        if state.secure_boot is not False:
            modules = [f"linux-modules-nvidia-{branch}{suffix}-{kernel}"]
            modules += [f"linux-modules-nvidia-{branch}{suffix}-{f}" for f in flavours]
            return DriverPlan(
                os_name,
                "ubuntu",
                branch,
                nvidia.open_kernel_modules,
                [f"nvidia-headless-no-dkms-{branch}{suffix}", utils, *modules],
                precompiled=True,
                kernel_holds=metas,
            )
        return DriverPlan(
            os_name,
            "ubuntu",
            branch,
            nvidia.open_kernel_modules,
            [f"nvidia-headless-{branch}{suffix}", utils],
            headers=_headers(kernel, flavours),
            kernel_holds=metas,
        )
    if os_id == "debian" and os_version in DEBIAN_ARCHIVE_BRANCH:
        mok = state.secure_boot is True
        if branch == DEBIAN_ARCHIVE_BRANCH[os_version]:
            dkms = "nvidia-open-kernel-dkms" if nvidia.open_kernel_modules else "nvidia-kernel-dkms"
            return DriverPlan(
                os_name,
                "debian",
                branch,
                nvidia.open_kernel_modules,
                [dkms, "nvidia-smi", "libcuda1", "nvidia-persistenced"],
                headers=_headers(kernel, flavours),
                mok=mok,
                kernel_holds=metas,
                persistenced_user="nvpd",
            )
        packages = [f"cuda-drivers-{branch}"]
        if nvidia.open_kernel_modules:
            packages.append("nvidia-kernel-open-dkms")
        return DriverPlan(
            os_name,
            "cuda",
            branch,
            nvidia.open_kernel_modules,
            packages,
            headers=_headers(kernel, flavours),
            mok=mok,
            kernel_holds=metas,
        )
    raise GpurigError(
        f"the NVIDIA driver stage supports Ubuntu 22.04/24.04 and Debian 12/13, not {os_name}"
    )


def _headers(kernel: str, flavours: list[str]) -> list[str]:
    # The running kernel's, and the flavour's meta so that a later kernel gets them too.
    return [f"linux-headers-{kernel}", *(f"linux-headers-{f}" for f in flavours)]


def toolkit_packages(plan: DriverPlan, variant: str | None) -> tuple[list[str], str]:
    """nvcc matching the torch build's CUDA: the distribution's when its version is the same,
    else NVIDIA's cuda-toolkit-X-Y (which needs the CUDA repository)."""
    cuda = compat.cuda_version(variant) if variant else None
    if cuda is None:
        return [], "the host runs a CPU build of torch: no CUDA toolkit"
    if DISTRO_TOOLKIT.get(plan.os_name) == cuda:
        return ["nvidia-cuda-toolkit"], f"the distribution's nvidia-cuda-toolkit ({cuda})"
    return [f"cuda-toolkit-{cuda.replace('.', '-')}"], f"NVIDIA's cuda-toolkit {cuda}"


def unattended_upgrades_file(kernel: bool) -> str:
    patterns = [
        "nvidia-",
        "libnvidia-",
        "libcuda",
        "cuda-drivers",
        "linux-modules-nvidia-",
        "linux-signatures-nvidia-",
    ]
    if kernel:
        patterns += [
            "linux-image-",
            "linux-headers-",
            "linux-modules-",
            "linux-(generic|virtual|lowlatency|aws|azure|gcp|oracle|nvidia)",
        ]
    lines = "\n".join(f'    "{p}";' for p in patterns)
    return (
        "// Written by gpurig (stack.yml nvidia.hold_packages): unattended-upgrades leaves the\n"
        "// NVIDIA driver and the kernel alone, so no driver changes under a loaded module.\n"
        f"Unattended-Upgrade::Package-Blacklist {{\n{lines}\n}};\n"
    )


NOUVEAU_BLACKLIST = (
    "# Written by gpurig: the nvidia driver cannot bind a GPU that nouveau holds.\n"
    "blacklist nouveau\noptions nouveau modeset=0\n"
)


def persistenced_dropin(user: str) -> str:
    # Some packagings start the daemon with --no-persistence-mode; this makes it keep the driver
    # loaded between jobs (NVIDIA's own driver role does the same).
    return (
        "# Written by gpurig (stack.yml nvidia.persistence_mode).\n[Service]\nExecStart=\n"
        f"ExecStart=/usr/bin/nvidia-persistenced --user {user} --persistence-mode --verbose\n"
    )


def logged(command: str, name: str) -> str:
    """Run `command` into /var/log/gpurig/<name>.log; print only the lines worth a diagnosis
    (and the last few: the failing step is usually there)."""
    log = f"{LOG_DIR}/{name}.log"
    return (
        f"mkdir -p {LOG_DIR} && ( {command} ) >{log} 2>&1; rc=$?; "
        f"grep -aiE {shlex.quote(LOG_SIGNATURES)} {log} | tail -n 60; tail -n 5 {log}; exit $rc"
    )


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def nonfree_list(sources: Iterable[Mapping[str, Any]], codename: str) -> str | None:
    """The apt list that adds contrib, non-free and non-free-firmware to each Debian suite the
    host already uses (pyinfra's AptSources entries); None when the sources have them already."""
    entries = []
    for repo in sources:
        url, suite, components = repo["url"], repo["distribution"], set(repo["components"])
        if repo["type"] != "deb" or not suite.startswith(codename):
            continue
        if {"contrib", "non-free"} <= components:
            return None
        signed = repo["options"].get("signed-by")
        option = f" [signed-by={signed}]" if isinstance(signed, str) else ""
        entries.append(f"deb{option} {url} {suite} contrib non-free non-free-firmware")
    if not entries:
        raise GpurigError(f"no Debian {codename} apt source to add non-free to: add one")
    content = "# Written by gpurig: Debian's NVIDIA driver lives in non-free.\n"
    return content + "\n".join(dict.fromkeys(entries)) + "\n"


def key_fingerprints(folder: str) -> str:
    """sh: the primary-key fingerprints of every key file anywhere under folder, one a line,
    sorted (a subkey belongs to its primary key; a second primary key is another signer)."""
    keys = f"find {folder} -type f \\( -name '*.gpg' -o -name '*.asc' \\)"
    show = "-exec gpg --show-keys --with-colons {} + 2>/dev/null"
    primaries = "awk -F: '/^pub/ {p=1; next} /^sub/ {p=0} /^fpr/ && p {print $10; p=0}'"
    return f"{keys} {show} | {primaries} | sort -u"


def cuda_keyring_script(plan: DriverPlan) -> str:
    """NVIDIA's CUDA repository through its cuda-keyring package, installed only when every key
    inside is NVIDIA's (the fingerprint pinned here)."""
    url = plan.cuda_repo + CUDA_KEYRING
    return f"""set -e
if dpkg-query -W -f='${{Status}}' cuda-keyring 2>/dev/null | grep -q 'ok installed'; then echo "{UNCHANGED}"; exit 0; fi
apt_get() {{ {apt_get()} "$@"; }}
command -v curl >/dev/null && command -v gpg >/dev/null || {{ {apt_update()}; apt_get install -y --no-install-recommends curl gpg ca-certificates; }}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
curl -fsSL --retry 3 -o "$tmp/keyring.deb" {shlex.quote(url)}
dpkg-deb -x "$tmp/keyring.deb" "$tmp/x"
fprs=$({key_fingerprints('"$tmp/x"')})
if [ "$fprs" != {CUDA_KEY_FINGERPRINT} ]; then echo "gpurig: cuda-keyring key $(echo $fprs | tr ' ' ,), expected {CUDA_KEY_FINGERPRINT}"; exit 1; fi
dpkg -i "$tmp/keyring.deb"
"""  # noqa: E501


@dataclass(frozen=True)
class Driver:
    """The driver stage of one GPU host: what to install and the drift lock around it.

    The steps that depend on what the install leaves (the DKMS build, modprobe, the reboot,
    the nvidia-smi check) read the host's GPU state again when they run; this says what they
    act on and how their failures are named (`context`).
    """

    plan: DriverPlan
    context: Context
    gpus: int  # on the PCI bus: nvidia-smi must see every one
    install: bool  # the verdict: the driver is missing or too old, and nvidia.install_driver
    installing: bool  # install, and some driver package is not installed yet
    nonfree_list: str | None  # Debian's contrib/non-free list, when the sources lack it
    cuda_keyring_script: str | None  # when NVIDIA's CUDA repository is needed
    nouveau_blacklist: str
    hold: bool  # nvidia.hold_packages
    driver_packages: list[str]  # held (or released) with `hold`
    hold_kernel: bool  # the kernel metas too (gpurig_nvidia_hold_kernel)
    unattended: bool  # the unattended-upgrades blacklist (gpurig_nvidia_unattended_upgrades)
    unattended_upgrades: str
    persistence: bool  # nvidia.persistence_mode
    persistenced_dropin: str
    toolkit: list[str]  # nvcc packages, when nvidia.cuda_toolkit
    toolkit_source: str
    allow_reboot: bool
    can_reboot: bool  # a machine of its own under systemd (a container cannot)
    reboot_timeout_s: int = field(default_factory=lambda: reboot_timeout_s())
    fabric: Fabric | None = None  # HGX boards: gpurig.plan.fabric.with_fabric fills it


def _flag(values: Mapping[str, Any], key: str, fallback: bool) -> bool:
    value = values.get(key)
    return fallback if value is None else bool(value)


def driver_section(
    stack: Stack,
    facts: HostFacts,
    state: GpuState,
    verdict: Verdict,
    apt_sources: Iterable[Mapping[str, Any]],
    knobs: Mapping[str, Any],
) -> Driver:
    """The driver stage's decisions for a GPU host; GpurigError where it cannot be planned."""
    nvidia = stack.nvidia
    plan = plan_driver(facts.os_id, facts.os_version, state, nvidia)
    context = Context(state.kernel, facts.os_id, state.secure_boot, nvidia.driver_branch)
    installing = verdict.install_driver and any(p not in state.packages for p in plan.packages)
    variant = verdict.target.variant if verdict.target else None
    toolkit, toolkit_source = toolkit_packages(plan, variant) if nvidia.cuda_toolkit else ([], "")
    needs_cuda_repo = plan.source == "cuda" or any(p.startswith("cuda-toolkit") for p in toolkit)
    nonfree = None
    if verdict.install_driver and plan.source == "debian":
        nonfree = nonfree_list(apt_sources, DEBIAN_CODENAME[facts.os_version])
    hold_kernel = _flag(knobs, "gpurig_nvidia_hold_kernel", nvidia.hold_packages)
    will_have = set(state.packages) | (set(plan.packages) if verdict.install_driver else set())
    return Driver(
        plan=plan,
        context=context,
        gpus=len(state.gpus),
        install=verdict.install_driver,
        installing=installing,
        nonfree_list=nonfree,
        cuda_keyring_script=cuda_keyring_script(plan) if needs_cuda_repo else None,
        nouveau_blacklist=NOUVEAU_BLACKLIST,
        hold=nvidia.hold_packages,
        driver_packages=[p for p in plan.packages if p in will_have],
        hold_kernel=hold_kernel,
        unattended=_flag(knobs, "gpurig_nvidia_unattended_upgrades", nvidia.hold_packages),
        unattended_upgrades=unattended_upgrades_file(hold_kernel),
        persistence=nvidia.persistence_mode,
        persistenced_dropin=persistenced_dropin(plan.persistenced_user),
        toolkit=toolkit,
        toolkit_source=toolkit_source,
        allow_reboot=nvidia.allow_reboot,
        can_reboot=state.can_reboot,
    )


def reboot_timeout_s() -> int:
    """The reboot's bound: REBOOT_TIMEOUT_S, or the controller's GPURIG_REBOOT_TIMEOUT_S (tests
    of a host that does not come back shorten it)."""
    text = os.environ.get(ENV_REBOOT_TIMEOUT, "").strip()
    if not text:
        return REBOOT_TIMEOUT_S
    if not text.isdigit() or int(text) < 1:
        raise UsageError(f"{ENV_REBOOT_TIMEOUT}={text!r}: give whole seconds, 1 or more")
    return int(text)


def unit_command(action: str, unit: str) -> str:
    """`systemctl ACTION UNIT.service`; when it fails, what the journal holds about it since the
    action, after systemctl's own words (which say only "see journalctl"): the daemon's reason
    is what names the failure. The daemon's lines are matched by its syslog identifier too
    (the unit's name): journald cannot tell the unit of a process that has already exited. It
    may not have read them yet either: sync and a second's grace, on failure only."""
    service = shlex.quote(f"{unit}.service")
    matches = f"_SYSTEMD_UNIT={service} + UNIT={service} + SYSLOG_IDENTIFIER={shlex.quote(unit)}"
    return (  # plain words even on a terminal (Ansible's become runs in one)
        f"export SYSTEMD_COLORS=0; since=$(date +%s); systemctl {action} {service} 2>&1 || {{ "
        "rc=$?; journalctl --sync 2>/dev/null; sleep 1; "
        f'journalctl --since "@$since" -n 20 --no-pager -o cat {matches} 2>&1; exit $rc; }}'
    )
