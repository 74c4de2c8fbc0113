"""HGX/DGX boards: the NVIDIA fabric manager their NVSwitches need, at the driver's version.

On a board whose GPUs reach each other through NVSwitches, CUDA does not initialise (error 802,
"system not yet initialized") until nvidia-fabricmanager has set up the fabric, and the fabric
manager starts only when its version is exactly the driver's (NVIDIA's Fabric Manager user
guide). So on such a host the driver stage installs it at the driver's version, holds it with
the driver and enables its service.

Which package, per driver source (gpurig.plan.driver):

    ubuntu   Canonical's nvidia-fabricmanager-<branch> (multiverse; source fabric-manager-<branch>,
             versions <driver>-0ubuntu0.<release>.N), beside the -server driver
    cuda     NVIDIA's nvidia-fabricmanager-<branch> from the CUDA repository (<driver>-1)
    debian   none: Debian packages no fabric manager, so the plan refuses and names the fix
             (a branch from NVIDIA's CUDA repository)

The version is read on the host when the step runs (the module installed for the running
kernel, else the loaded one), so a driver the deploy has just installed is matched too.
"""

from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass

from gpurig.errors import GpurigError
from gpurig.model.host import GpuState
from gpurig.plan.driver import Driver, DriverPlan, logged
from gpurig.plan.steps import UNCHANGED
from gpurig.plan.system import apt_get, apt_update

SERVICE = "nvidia-fabricmanager"
NOT_RUNNING = "gpurig: nvidia-fabricmanager is not running"  # the diagnosis signature's anchor
NO_VERSION = "gpurig: no {package} at driver version"


@dataclass(frozen=True)
class Fabric:
    """The fabric manager of one HGX host: which package, for which branch, from where."""

    nvswitches: int  # NVSwitch devices on the PCI bus
    branch: int  # the driver branch it must match: installed now, or the one kept
    package: str  # nvidia-fabricmanager-<branch>
    source: str  # ubuntu or cuda, as the driver's

    def describe(self) -> str:
        where = "Ubuntu's archive" if self.source == "ubuntu" else "NVIDIA's CUDA repository"
        return (
            f"{self.package} from {where} for its {self.nvswitches} NVSwitches, at the driver's "
            "version"
        )


def kept_branch(state: GpuState) -> int | None:
    """The branch of the driver already on the host (loaded, else installed)."""
    version = state.driver_version or state.module_version or state.installed_driver
    return int(version.split(".", 1)[0]) if version else None


def fabric_section(plan: DriverPlan, state: GpuState, install: bool) -> Fabric | None:
    """The fabric manager for a host with NVSwitches; None without; GpurigError where no
    packaging gives one at the driver's version."""
    if not state.nvswitches:
        return None
    branch = plan.branch if install else (kept_branch(state) or plan.branch)
    if plan.source == "debian":
        raise GpurigError(
            f"this host has {len(state.nvswitches)} NVSwitch devices (an HGX board), where CUDA "
            f"needs nvidia-fabricmanager at the driver's exact version, and Debian's own "
            f"{plan.branch} driver has no fabric manager package in any Debian archive: set "
            "nvidia.driver_branch to a branch from NVIDIA's CUDA repository (580: the plan then "
            "installs cuda-drivers-580 and nvidia-fabricmanager-580 together)"
        )
    return Fabric(len(state.nvswitches), branch, f"nvidia-fabricmanager-{branch}", plan.source)


def with_fabric(driver: Driver, state: GpuState) -> Driver:
    """The driver section with its fabric manager, which the drift lock holds with the driver."""
    fabric = fabric_section(driver.plan, state, driver.install)
    if fabric is None:
        return driver
    held = [*driver.driver_packages, fabric.package]
    return dataclasses.replace(driver, fabric=fabric, driver_packages=held)


_LOADED = (
    "loaded=$(sed -n 's/.*Kernel Module[^0-9]*\\([0-9][0-9.]*\\).*/\\1/p' "
    "/proc/driver/nvidia/version 2>/dev/null | head -n 1)\n"
)
# The module installed for the running kernel (what runs after a pending reboot), else the
# loaded one.
_DRIVER_VERSION = (
    f"{_LOADED}"
    "driver=$(modinfo -F version nvidia 2>/dev/null | head -n 1)\n"
    '[ -n "$driver" ] || driver=$loaded\n'
)


def install_script(fabric: Fabric) -> str:
    """The package at exactly the driver's upstream version (apt-cache madison's entry whose
    version, without epoch and Debian revision, is the driver's); a hold on an older one is
    moved with it, and the drift lock holds it again."""
    package = shlex.quote(fabric.package)
    apt = apt_get()
    missing = NO_VERSION.format(package=fabric.package)
    pick = (
        f"version=$(apt-cache madison {package} | awk -F'|' '{{gsub(/ /, \"\", $2); print $2}}' "
        '| while read -r v; do u=${v#*:}; [ "${u%%-*}" = "$driver" ] && { echo "$v"; break; }; '
        "done)"
    )
    command = (
        f"{apt_update()} || exit 1; {pick}; "
        f'[ -n "$version" ] || {{ echo "{missing} $driver in the apt sources"; exit 1; }}; '
        f"{apt} install -y --no-install-recommends --allow-change-held-packages -- "
        f'"{fabric.package}=$version"'
    )
    return (
        'PATH="$PATH:/usr/sbin:/sbin"\n'
        f"{_DRIVER_VERSION}"
        'if [ -z "$driver" ]; then '
        f'echo "gpurig: no NVIDIA driver on this host to match {fabric.package} to"; exit 1; fi\n'
        f"have=$(dpkg-query -W -f='${{Status}}|${{Version}}' {package} 2>/dev/null)\n"
        'case "$have" in *"ok installed|"*)\n'
        "  v=${have#*|}; u=${v#*:}\n"
        f'  if [ "${{u%%-*}}" = "$driver" ]; then echo "{UNCHANGED}: {fabric.package} $v"; '
        "exit 0; fi ;;\n"
        "esac\n"
        f"{logged(command, 'nvidia-fabricmanager')}\n"
    )


def service_script() -> str:
    """Enabled and started under systemd; where it does not stay up, its journal and the line
    the diagnosis names. Only enabled while a reboot is pending (the loaded module is not the
    installed one the fabric manager matches). Without systemd: said, not failed."""
    return (
        "if [ ! -d /run/systemd/system ]; then "
        f'echo "{UNCHANGED}: no systemd: start {SERVICE} yourself; CUDA waits for it"; '
        "exit 0; fi\n"
        f'if [ "$(systemctl is-active {SERVICE})" = active ] && '
        f'[ "$(systemctl is-enabled {SERVICE} 2>/dev/null)" = enabled ]; then '
        f'echo "{UNCHANGED}: {SERVICE} is active and enabled"; exit 0; fi\n'
        f"systemctl enable {SERVICE} 2>&1 || exit 1\n"
        'PATH="$PATH:/usr/sbin:/sbin"\n'
        f"{_LOADED}"
        "installed=$(modinfo -F version nvidia 2>/dev/null | head -n 1)\n"
        'if [ -n "$loaded" ] && [ -n "$installed" ] && [ "$loaded" != "$installed" ]; then '
        f'echo "gpurig: {SERVICE} enabled; it starts once a reboot loads driver $installed"; '
        "exit 0; fi\n"
        f"systemctl start {SERVICE} 2>&1\n"
        f'state=$(systemctl is-active {SERVICE}); [ "$state" = active ] && exit 0\n'
        f"journalctl -u {SERVICE} -n 15 --no-pager 2>&1 | tail -n 15\n"
        f'echo "{NOT_RUNNING} (systemctl is-active: $state)"; exit 1\n'
    )
