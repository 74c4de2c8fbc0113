"""Stage 4, nvidia: the driver a GPU host needs, and nothing on a host without a GPU.

`nvidia_driver(plan)` renders the plan's driver section (gpurig.plan.driver: which branch,
from which source, the files and the drift lock): when the verdict says to install, the
source and the packages with the running kernel's headers for DKMS builds, nouveau
blacklisted, the module built and loaded (modprobe when nothing holds the GPU, a reboot when
an older module or nouveau does), and a final check that nvidia-smi sees every GPU. Every
failure comes out as a named diagnosis (gpurig.diagnose) with its fix, not as dpkg's output;
the full logs stay on the host under /var/log/gpurig/. Then, on every GPU host: the drift lock
(packages held, unattended-upgrades told to leave them alone), persistence mode, and nvcc when
the spec asks for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pyinfra import logger
from pyinfra.api.deploy import deploy
from pyinfra.context import host

from gpurig.deploys import host_plan
from gpurig.facts import gpu
from gpurig.operations import driver as ops
from gpurig.operations import fabric as fabric_ops
from gpurig.plan import driver_scripts
from gpurig.plan.driver import CUDA_KEY_FINGERPRINT

if TYPE_CHECKING:
    from gpurig.plan import HostPlan

_SUDO: dict[str, Any] = {"_sudo": True}  # changes are made as root whatever the deploy sets


@deploy("NVIDIA driver")  # no spec defaults: the plan carries everything
def nvidia_driver(plan: HostPlan | None = None) -> None:
    """The GPU layer for a host that passed preflight: install, load, check, lock, persist."""
    plan = plan or host_plan()
    verdict = plan.verdict
    driver = plan.driver
    if not verdict.ok:
        return
    if driver is None:
        host.noop("no NVIDIA GPU on the PCI bus: GPU stage skipped")
        return
    target, context = driver.plan, driver.context
    name = driver_scripts.names(driver)  # the Ansible role runs the same steps by these names
    if driver.install:
        logger.info(f"{host.print_prefix}NVIDIA: {target.describe()}")
        if driver.nonfree_list:
            ops.managed_file(
                name="Enable Debian's contrib and non-free",
                path=gpu.NONFREE_LIST,
                content=driver.nonfree_list,
                **_SUDO,
            )
    if driver.cuda_keyring_script:
        ops.cuda_repository(
            name=f"Add NVIDIA's CUDA repository (key {CUDA_KEY_FINGERPRINT[-8:]} checked)",
            driver=driver,
            verdict=verdict,
            **_SUDO,
        )
    if driver.install:
        ops.blacklist_nouveau(name="Blacklist nouveau", content=driver.nouveau_blacklist, **_SUDO)
        if target.headers:
            ops.kernel_headers(
                name=name["headers"],
                plan=target,
                context=context,
                verdict=verdict,
                **_SUDO,
            )
        ops.apt_install(
            name=name["install"],
            packages=target.packages,
            log="nvidia-driver",
            context=context,
            verdict=verdict,
            **_SUDO,
        )
        if not target.precompiled:
            ops.build_module(
                name=name["build_module"],
                plan=target,
                installing=driver.installing,
                context=context,
                verdict=verdict,
                **_SUDO,
            )
        if target.mok:
            ops.secure_boot_key(name=name["secure_boot_key"], verdict=verdict)
        ops.load_driver(
            name=name["load"],
            installing=driver.installing,
            context=context,
            verdict=verdict,
            **_SUDO,
        )
    ops.reboot_for_driver(
        name=name["reboot_check"],
        allow=driver.allow_reboot,
        installing=driver.installing,
        timeout_s=driver.reboot_timeout_s,
        verdict=verdict,
        **_SUDO,
    )
    ops.check_driver(
        name=name["smi_check"],
        gpus=driver.gpus,
        pending=driver.install,
        allow_reboot=driver.allow_reboot,
        context=context,
        verdict=verdict,
    )
    if driver.fabric:  # HGX boards: CUDA starts only once the fabric manager runs
        fabric_ops.fabric_manager(
            name=name["fabric_install"],
            fabric=driver.fabric,
            context=context,
            verdict=verdict,
            **_SUDO,
        )
        fabric_ops.fabric_service(
            name=name["fabric_service"], context=context, verdict=verdict, **_SUDO
        )
    # Drift lock: the packages that make up the driver, and the kernel metas a DKMS module follows.
    ops.hold(
        name="Hold the NVIDIA driver packages" if driver.hold else "Release driver holds",
        packages=driver.driver_packages,
        held=driver.hold,
        **_SUDO,
    )
    ops.hold(
        name="Hold the kernel packages" if driver.hold_kernel else "Release kernel holds",
        packages=target.kernel_holds,
        held=driver.hold_kernel,
        **_SUDO,
    )
    ops.managed_file(
        name="Keep unattended-upgrades off the driver"
        if driver.unattended
        else "Let unattended-upgrades upgrade the driver",
        path=gpu.UNATTENDED_CONF,
        content=driver.unattended_upgrades,
        present=driver.unattended,
        **_SUDO,
    )
    ops.persistence(
        name=name["persistence"],
        wanted=driver.persistence,
        dropin=driver.persistenced_dropin,
        installing=driver.installing,
        verdict=verdict,
        context=context,
        **_SUDO,
    )
    if driver.toolkit:
        ops.apt_install(
            name=name["toolkit"],
            packages=driver.toolkit,
            log="cuda-toolkit",
            context=context,
            verdict=verdict,
            **_SUDO,
        )
    elif driver.toolkit_source and driver.toolkit_source not in verdict.notes:
        verdict.notes.append(driver.toolkit_source)
