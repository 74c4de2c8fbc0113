"""The driver stage's operations: each reads the GPU fact afresh when it runs, compares with what
the plan (gpurig.plan.driver) wants, and yields commands or says why it need not.

pyinfra 3 does not cache facts, so an operation that follows the install sees the installed
state; in a `--dry` plan they predict it.
"""

from __future__ import annotations

import shlex
from collections.abc import Generator
from typing import Any

from pyinfra.api.operation import operation
from pyinfra.context import host

from gpurig import diagnose
from gpurig.diagnose import Context, Diagnosis
from gpurig.facts import gpu
from gpurig.facts.gpu import GpuHost
from gpurig.model.host import GpuState
from gpurig.operations.diagnosed import DiagnosedCommand, diagnoses_now, note, stop
from gpurig.operations.reboot import reboot
from gpurig.plan.driver import Driver, DriverPlan, logged, sha256, unit_command
from gpurig.plan.driver_scripts import install_found
from gpurig.plan.system import apt_install as apt_install_command
from gpurig.preflight import Verdict


@operation()
def managed_file(path: str, content: str, present: bool = True) -> Generator[Any, None, None]:
    """A small root-owned config file, compared by sha256 from the GPU fact."""
    current = host.get_fact(GpuHost).files.get(path)
    if not present:
        if current is None:
            host.noop(f"{path} is absent")
            return
        yield f"rm -f {shlex.quote(path)}"
        return
    if current == sha256(content):
        host.noop(f"{path} is up to date")
        return
    directory = path.rsplit("/", 1)[0]
    yield (
        f"mkdir -p {shlex.quote(directory)} && printf '%s' {shlex.quote(content)} > "
        f"{shlex.quote(path)} && chmod 644 {shlex.quote(path)}"
    )


@operation()
def blacklist_nouveau(content: str) -> Generator[Any, None, None]:
    """The modprobe.d file, and the initramfs rebuilt with it: nouveau loads from there too."""
    commands = list(managed_file._inner(path=gpu.NOUVEAU_CONF, content=content))
    if commands:
        commands.append("if command -v update-initramfs >/dev/null; then update-initramfs -u; fi")
    yield from commands


@operation()
def cuda_repository(driver: Driver, verdict: Verdict | None) -> Generator[Any, None, None]:
    """NVIDIA's CUDA repository through its cuda-keyring package, whose keys must be NVIDIA's."""
    if "cuda-keyring" in host.get_fact(GpuHost).packages:
        host.noop("cuda-keyring is installed")
        return
    assert driver.cuda_keyring_script is not None
    yield DiagnosedCommand(
        logged(driver.cuda_keyring_script, "cuda-repository"), driver.context, verdict
    )


@operation()
def apt_install(
    packages: list[str], log: str, context: Context, verdict: Verdict | None
) -> Generator[Any, None, None]:
    """Install what is missing, logged on the host, failures named."""
    installed = host.get_fact(GpuHost).packages
    missing = [p for p in packages if p not in installed]
    if not missing:
        host.noop(f"installed: {', '.join(packages)}")
        return
    yield DiagnosedCommand(logged(apt_install_command(missing), log), context, verdict)


@operation()
def kernel_headers(
    plan: DriverPlan, context: Context, verdict: Verdict | None
) -> Generator[Any, None, None]:
    """The running kernel's headers, for DKMS. An archive without them does not stop this step:
    the module build after the install then fails with the named diagnosis."""
    state = host.get_fact(GpuHost)
    running, *metas = plan.headers
    missing = [] if state.kernel_headers else [running]
    missing += [p for p in metas if p not in state.packages]
    if not missing:
        host.noop(f"headers for {state.kernel} are installed")
        return
    command = install_found(" ".join(shlex.quote(p) for p in missing))
    yield DiagnosedCommand(logged(command, "nvidia-headers"), context, verdict)


@operation()
def build_module(
    plan: DriverPlan, installing: bool, context: Context, verdict: Verdict | None
) -> Generator[Any, None, None]:
    """The DKMS module for the running kernel: built, or the reason it cannot be, by name."""
    state = host.get_fact(GpuHost)
    if state.module_version:
        host.noop(f"nvidia module {state.module_version} is built for {state.kernel}")
        return
    nvidia_dkms = [line for line in state.dkms if line.startswith("nvidia")]
    if not host.state.is_executing:  # the plan: what the install will leave to do
        if installing or nvidia_dkms:
            yield f"dkms autoinstall -k {state.kernel}"
        else:
            host.noop("no DKMS nvidia module to build")
        return
    if not nvidia_dkms:
        host.noop("no DKMS nvidia module to build")
        return
    if not state.kernel_headers:
        yield from stop(diagnoses_now(host, "", context), verdict)
        return
    command = logged(f"dkms autoinstall -k {shlex.quote(state.kernel)}", "nvidia-dkms")
    yield DiagnosedCommand(command, context, verdict)


@operation()
def secure_boot_key(verdict: Verdict | None) -> Generator[Any, None, None]:
    """Under Secure Boot a DKMS module loads only when DKMS's signing key is enrolled."""
    state = host.get_fact(GpuHost)
    if state.secure_boot is not True:
        host.noop("Secure Boot is off")
        return
    if state.dkms_mok_enrolled:
        host.noop(f"the DKMS signing key {diagnose.DKMS_MOK} is enrolled")
        return
    if state.dkms_mok_enrolled is False or not host.state.is_executing:
        message = f"DKMS signs the module with {diagnose.DKMS_MOK}, which is not enrolled"
    else:
        message = f"DKMS left no signing key at {diagnose.DKMS_MOK} to enroll"
    found = Diagnosis(diagnose.SECURE_BOOT_UNSIGNED, message, diagnose.ENROLL_MOK)
    yield from stop([found], verdict)


def _reboot_reason(state: GpuState, installing: bool) -> str | None:
    if state.nouveau_loaded:
        return "nouveau holds the GPU"
    if not state.nvidia_loaded:
        return None
    if not host.state.is_executing and installing:
        return f"driver {state.driver_version} is loaded and a new one is being installed"
    # The module a boot would load (modinfo, as the Ansible role's script reads it), else the
    # version the driver packages installed.
    installed = state.module_version or state.installed_driver
    if installed and state.driver_version and installed != state.driver_version:
        return f"the loaded module is {state.driver_version}, the installed driver {installed}"
    return None


@operation()
def load_driver(
    installing: bool, context: Context, verdict: Verdict | None
) -> Generator[Any, None, None]:
    """modprobe the driver when nothing holds the GPU (no reboot needed for a first install)."""
    state = host.get_fact(GpuHost)
    if state.nvidia_loaded:
        host.noop(f"nvidia {state.driver_version} is loaded")
        return
    if state.nouveau_loaded:
        host.noop("nouveau holds the GPU: a reboot loads nvidia")
        return
    if not (state.installed_driver or installing):
        host.noop("no driver is installed")
        return
    yield DiagnosedCommand("modprobe nvidia 2>&1", context, verdict)


@operation(is_idempotent=False)
def reboot_for_driver(
    allow: bool, installing: bool, timeout_s: int, verdict: Verdict | None
) -> Generator[Any, None, None]:
    """Reboot only when the installed driver is not the one loaded (or nouveau holds the GPU),
    then wait (bounded) for a new boot of the same host; where it cannot reboot (a container
    that is no VM stand-in, a host without systemd), say that a reboot is needed."""
    state = host.get_fact(GpuHost)
    why = _reboot_reason(state, installing)
    if why is None:
        host.noop("the loaded driver is the installed one: no reboot")
        return
    if not allow:
        note(verdict, f"reboot needed ({why}): nvidia.allow_reboot is false")
        return
    if not state.can_reboot:
        where = "it is a container" if state.container and state.systemd else "it has no systemd"
        note(verdict, f"reboot needed ({why}): gpurig cannot reboot this host ({where})")
        return
    yield from reboot._inner(timeout_s=timeout_s, verdict=verdict)


@operation()
def check_driver(
    gpus: int, pending: bool, allow_reboot: bool, context: Context, verdict: Verdict | None
) -> Generator[Any, None, None]:
    """nvidia-smi sees every GPU on the PCI bus; else the named reason, and the host stops."""
    if not host.state.is_executing and pending:
        host.noop("checked once the driver is installed and loaded")
        return
    state = host.get_fact(GpuHost)
    if state.smi_rc == 0 and len(state.smi_gpus) >= gpus:
        host.noop(f"driver {state.driver_version}: nvidia-smi sees {len(state.smi_gpus)} GPU(s)")
        return
    if _reboot_reason(state, False) and not (allow_reboot and state.can_reboot):
        host.noop("a reboot is needed before the driver can be checked")
        return
    found = diagnoses_now(host, state.smi_output, context)
    if state.smi_rc == 0 and not [d for d in found if d.name != diagnose.UNRECOGNISED]:
        found = [
            Diagnosis(
                diagnose.NO_DEVICE,
                f"nvidia-smi sees {len(state.smi_gpus)} of the {gpus} GPUs on the PCI bus",
                "check dmesg for NVRM errors; power-cycle a GPU that fell off the bus",
            )
        ]
    yield from stop(found, verdict)


@operation()
def hold(packages: list[str], held: bool) -> Generator[Any, None, None]:
    """apt-mark hold (or unhold) exactly these packages; the GPU fact lists current holds."""
    current = set(host.get_fact(GpuHost).held)
    change = [p for p in packages if (p in current) != held]
    if not change:
        host.noop(f"{'held' if held else 'not held'}: {', '.join(packages) or 'nothing'}")
        return
    yield f"apt-mark {'hold' if held else 'unhold'} {' '.join(shlex.quote(p) for p in change)}"


@operation()
def persistence(
    wanted: bool,
    dropin: str,
    installing: bool,
    verdict: Verdict | None,
    context: Context | None = None,
) -> Generator[Any, None, None]:
    """nvidia-persistenced in persistence mode, enabled and running; skipped without systemd.

    A daemon that does not start stops the host with the named reason: it needs the loaded
    driver, and a host where it fails is not ready for jobs."""
    state = host.get_fact(GpuHost)
    if not wanted:
        yield from managed_file._inner(path=gpu.PERSISTENCED_DROPIN, content="", present=False)
        return
    if not state.systemd:
        note(verdict, "no systemd: persistence mode not set (nvidia-persistenced needs it)")
        return
    unit_missing = state.persistenced[1] in ("", "not-found")
    if unit_missing and (host.state.is_executing or not installing):
        note(verdict, "nvidia-persistenced is not installed: persistence mode not set")
        return
    commands: list[Any] = []
    start = None
    if state.files.get(gpu.PERSISTENCED_DROPIN) != sha256(dropin):
        commands += list(managed_file._inner(path=gpu.PERSISTENCED_DROPIN, content=dropin))
        commands.append("systemctl daemon-reload")
        start = "restart"
    if state.persistenced[1] != "enabled":
        commands.append("systemctl enable nvidia-persistenced")
    if state.persistenced[0] != "active":
        start = start or "start"
    if start:
        command = unit_command(start, "nvidia-persistenced")
        commands.append(DiagnosedCommand(command, context or Context(), verdict))
    if not commands:
        host.noop("nvidia-persistenced runs in persistence mode")
    yield from commands
