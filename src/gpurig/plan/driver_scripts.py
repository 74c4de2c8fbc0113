"""The driver steps as host-side scripts: what a front end without pyinfra's facts runs.

The pyinfra stage decides each step from the GPU fact it reads before the step (gpurig.operations
.driver); the Ansible nvidia role runs these scripts, which make the same decision on the host
itself and print `gpurig: unchanged` when there is nothing to do. Both act on one Driver
section (gpurig.plan.driver) and name failures with gpurig.diagnose.after_failure.
"""

from __future__ import annotations

import dataclasses
import shlex
from typing import Any

from gpurig.diagnose import DKMS_MOK
from gpurig.hostlayout import NONFREE_LIST, NOUVEAU_CONF, PERSISTENCED_DROPIN, UNATTENDED_CONF
from gpurig.plan import fabric
from gpurig.plan.driver import (
    BOOT_MARKER,
    CUDA_KEYRING,
    Driver,
    logged,
    unit_command,
)
from gpurig.plan.steps import UNCHANGED
from gpurig.plan.system import apt_get, apt_update

REBOOT_NEEDED = "gpurig: reboot needed: "


def _missing(packages: list[str]) -> str:
    """Sets $missing to the packages of `packages` that dpkg does not have installed."""
    names = " ".join(shlex.quote(p) for p in packages)
    return (
        f'missing=""; for p in {names}; do '
        "dpkg-query -W -f='${Status}' \"$p\" 2>/dev/null | grep -q 'ok installed' "
        '|| missing="$missing $p"; done'
    )


def install(packages: list[str], log: str) -> str:
    apt = apt_get()
    command = f"{apt_update()} && {apt} install -y --no-install-recommends -- $missing"
    return (
        f"{_missing(packages)}\n"
        f'if [ -z "$missing" ]; then echo "{UNCHANGED}"; exit 0; fi\n'
        f"{logged(command, log)}\n"
    )


def install_found(names: str) -> str:
    """After a refresh, each of `names` (shell words) the archives have, installed; one they
    lack is said and skipped (the module build then fails with the named diagnosis)."""
    apt = apt_get()
    return (
        f'{apt_update()} && for p in {names}; do if apt-cache show "$p" >/dev/null 2>&1; then '
        f'{apt} install -y --no-install-recommends -- "$p" || exit 1; '
        'else echo "gpurig: no $p in the archives"; fi; done'
    )


def headers(driver: Driver) -> str:
    """The running kernel's headers and the flavour's metas; a header package the archives lack
    does not stop this step (the module build then fails with the named diagnosis)."""
    running, *metas = driver.plan.headers
    command = install_found("$missing")
    return (
        f"{_missing(metas)}\n"
        f'[ -e "/lib/modules/$(uname -r)/build" ] || missing="{running} $missing"\n'
        f'if [ -z "${{missing# }}" ]; then echo "{UNCHANGED}"; exit 0; fi\n'
        f"{logged(command, 'nvidia-headers')}\n"
    )


def build_module() -> str:
    return (
        'PATH="$PATH:/usr/sbin:/sbin"; k=$(uname -r)\n'
        'if modinfo -k "$k" -F version nvidia >/dev/null 2>&1; then\n'
        f'  echo "{UNCHANGED}"; exit 0\n'
        "fi\n"
        "if ! dkms status 2>/dev/null | grep -q '^nvidia'; then\n"
        f'  echo "{UNCHANGED}: no DKMS nvidia module to build"; exit 0\n'
        "fi\n"
        'if [ ! -e "/lib/modules/$k/build" ]; then\n'
        '  echo "gpurig: no kernel headers for $k"; exit 1\n'
        "fi\n"
        f"{logged('dkms autoinstall -k $k', 'nvidia-dkms')}\n"
    )


def secure_boot_key() -> str:
    key = shlex.quote(DKMS_MOK)
    return (
        f"if [ ! -f {key} ]; then\n"
        f'  echo "gpurig: DKMS left no signing key at {DKMS_MOK}"; exit 1\n'
        "fi\n"
        f"if mokutil --test-key {key} 2>&1 | grep -q 'already enrolled'; then "
        f'echo "{UNCHANGED}"; exit 0; fi\n'
        f'echo "gpurig: DKMS signs the module with {DKMS_MOK}, which is not enrolled"; exit 1\n'
    )


def load() -> str:
    return (
        'PATH="$PATH:/usr/sbin:/sbin"\n'
        f'if [ -d /sys/module/nvidia ]; then echo "{UNCHANGED}"; exit 0; fi\n'
        "if [ -d /sys/module/nouveau ]; then\n"
        f'  echo "{UNCHANGED}: nouveau holds the GPU: a reboot loads nvidia"; exit 0\n'
        "fi\n"
        "modprobe nvidia 2>&1\n"
    )


def reboot_check() -> str:
    """Says why a reboot is needed (nouveau holds the GPU, or the loaded module is not the one
    installed for the running kernel), or nothing."""
    return (
        'PATH="$PATH:/usr/sbin:/sbin"\n'
        "if [ -d /sys/module/nouveau ]; then "
        f'echo "{REBOOT_NEEDED}nouveau holds the GPU"; exit 0; fi\n'
        "loaded=$(sed -n 's/.*Kernel Module[^0-9]*\\([0-9][0-9.]*\\).*/\\1/p' "
        "/proc/driver/nvidia/version 2>/dev/null | head -n 1)\n"
        '[ -n "$loaded" ] || loaded=$(cat /sys/module/nvidia/version 2>/dev/null)\n'
        "installed=$(modinfo -F version nvidia 2>/dev/null | head -n 1)\n"
        'if [ -n "$loaded" ] && [ -n "$installed" ] && [ "$loaded" != "$installed" ]; then\n'
        f'  echo "{REBOOT_NEEDED}the loaded module is $loaded, the installed driver $installed"\n'
        "fi\n"
    )


def smi_check(gpus: int) -> str:
    return (
        "out=$(nvidia-smi --query-gpu=pci.bus_id --format=csv,noheader 2>&1); rc=$?\n"
        "n=$(printf '%s\\n' \"$out\" | grep -c '^[0-9A-Fa-f]*:')\n"
        f'if [ "$rc" -eq 0 ] && [ "$n" -ge {int(gpus)} ]; then '
        f'echo "{UNCHANGED}: nvidia-smi sees $n GPU(s)"; exit 0; fi\n'
        "printf '%s\\n' \"$out\"\n"
        f'echo "gpurig: nvidia-smi sees $n of the {int(gpus)} GPUs on the PCI bus"; exit 1\n'
    )


def persistence() -> str:
    """nvidia-persistenced enabled and running, as the pyinfra stage leaves it. Its drop-in is a
    file step before this one; the role puts `restart=1; ` in front of the script when that step
    changed it. A daemon that does not start fails the step with its journal, which names it."""
    unit = "nvidia-persistenced"
    return (
        f"enabled=$(systemctl is-enabled {unit} 2>/dev/null)\n"
        'case "$enabled" in ""|not-found)\n'
        f'  echo "{UNCHANGED}: {unit} is not installed: persistence mode not set"; exit 0 ;;\n'
        "esac\n"
        'changed=""\n'
        'if [ "$enabled" != enabled ]; then\n'
        f"  systemctl enable {unit} 2>&1 || exit 1; changed=1\n"
        "fi\n"
        'if [ -n "${restart:-}" ]; then\n'
        f"  systemctl daemon-reload\n  {unit_command('restart', unit)}\n  changed=1\n"
        f'elif [ "$(systemctl is-active {unit} 2>/dev/null)" != active ]; then\n'
        f"  {unit_command('start', unit)}\n  changed=1\n"
        "fi\n"
        f'[ -n "$changed" ] || echo "{UNCHANGED}"\n'
    )


def scripts(driver: Driver) -> dict[str, str]:
    """Step name -> script, in the order the stage runs them (absent: not this host's step)."""
    out: dict[str, str] = {}
    target = driver.plan
    if driver.install:
        if target.headers:
            out["headers"] = headers(driver)
        out["install"] = install(target.packages, "nvidia-driver")
        if not target.precompiled:
            out["build_module"] = build_module()
        if target.mok:
            out["secure_boot_key"] = secure_boot_key()
        out["load"] = load()
    out["reboot_check"] = reboot_check()
    out["smi_check"] = smi_check(driver.gpus)
    if driver.fabric:
        out |= fabric_scripts(driver.fabric)
    if driver.persistence:
        out["persistence"] = persistence()
    if driver.toolkit:
        out["toolkit"] = install(driver.toolkit, "cuda-toolkit")
    return out


def fabric_scripts(target: fabric.Fabric) -> dict[str, str]:
    """HGX boards: the fabric manager at the driver's version, then its service."""
    return {
        "fabric_install": fabric.install_script(target),
        "fabric_service": fabric.service_script(),
    }


def names(driver: Driver) -> dict[str, str]:
    """Step -> the name both front ends give it (pyinfra operations, Ansible's reports)."""
    target = driver.plan
    return {
        "headers": f"Install kernel headers for {driver.context.kernel}",
        "install": f"Install NVIDIA {target.describe()}",
        "build_module": f"Build the NVIDIA module for kernel {driver.context.kernel}",
        "secure_boot_key": "Check the DKMS signing key is enrolled",
        "load": "Load the NVIDIA driver",
        "reboot_check": "Reboot into the NVIDIA driver if an old module holds the GPU",
        "smi_check": "Check nvidia-smi sees every GPU",
        "toolkit": f"Install nvcc: {driver.toolkit_source}",
        "fabric_install": "Install the fabric manager at the driver's version",
        "fabric_service": "Start the fabric manager (nvidia-fabricmanager)",
        "persistence": "Enable persistence mode (nvidia-persistenced)",
    }


def driver_json(driver: Driver) -> dict[str, Any]:
    """The driver section as the plan's JSON: the section, its scripts and step names, and the
    paths of its files (what the Ansible nvidia role acts on)."""
    data = dataclasses.asdict(driver)
    data["describe"] = driver.plan.describe()
    data["cuda_keyring_url"] = driver.plan.cuda_repo + CUDA_KEYRING
    data["scripts"] = scripts(driver)
    data["names"] = names(driver)
    data["boot_marker"] = BOOT_MARKER  # how the Ansible reboot tells a new boot
    data["paths"] = {
        "nonfree_list": NONFREE_LIST,
        "nouveau_conf": NOUVEAU_CONF,
        "unattended_conf": UNATTENDED_CONF,
        "persistenced_dropin": PERSISTENCED_DROPIN,
    }
    return data
