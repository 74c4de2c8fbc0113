"""Stage 4, nvidia: the driver a GPU host needs, and nothing on a host without a GPU.

`nvidia_driver(verdict)` acts on preflight's verdict (host data `gpurig_verdict`): when
`verdict.install_driver`, it installs the spec's branch from the source that fits the OS,

    Ubuntu 22.04/24.04   Canonical's -server packages: DKMS, or with Secure Boot on (or unknown)
                         the signed precompiled modules (linux-modules-nvidia-<branch>-server-*)
    Debian 12/13         the archive's non-free packages when the branch is the archive's
                         (12: 535, 13: 550), else NVIDIA's CUDA repository through its
                         cuda-keyring package, the key's fingerprint checked first

with the running kernel's headers for DKMS builds, nouveau blacklisted, the module loaded
(modprobe when nothing holds the GPU, a reboot when an older module or nouveau does), and a
final check that nvidia-smi sees every GPU. Every failure comes out as a named diagnosis
(gpurig.diagnose) with its fix, not as dpkg's output; the full logs stay on the host under
/var/log/gpurig/. Then, on every GPU host: drift lock (packages held, unattended-upgrades told
to leave them alone), persistence mode, and nvcc when the spec asks for it.

Operations read the GPU fact afresh when they run (pyinfra 3 does not cache facts), so one
that follows the install sees the installed state; in a `--dry` plan they predict it.

Data: stack.yml's nvidia.* (host data gpurig_nvidia_* overrides them), plus two drift-lock
knobs that default to nvidia.hold_packages: gpurig_nvidia_hold_kernel (hold the kernel meta
packages too) and gpurig_nvidia_unattended_upgrades (the Package-Blacklist file).
"""

from __future__ import annotations

import hashlib
import re
import shlex
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

from pyinfra import logger
from pyinfra.api.command import PyinfraCommand, StringCommand
from pyinfra.api.deploy import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.api.host import Host
from pyinfra.api.operation import operation
from pyinfra.api.state import State
from pyinfra.connectors.util import CommandOutput, OutputLine
from pyinfra.context import host
from pyinfra.facts.apt import AptSources
from pyinfra.facts.server import LinuxDistribution
from pyinfra.operations import server

from gpurig import compat, diagnose
from gpurig.deploys import FACTS_KEY, VERDICT_KEY, host_stack
from gpurig.diagnose import Context, Diagnosis
from gpurig.facts import gpu
from gpurig.facts.gpu import GpuHost
from gpurig.model.host import GpuState, HostFacts
from gpurig.operations import control
from gpurig.operations.apt import apt_get
from gpurig.preflight import Verdict
from gpurig.spec import Nvidia, Stack

NVIDIA_DEFAULTS: dict[str, Any] = {
    "gpurig_nvidia_hold_kernel": None,  # None: as nvidia.hold_packages
    "gpurig_nvidia_unattended_upgrades": None,  # None: as nvidia.hold_packages
}
LOG_DIR = "/var/log/gpurig"
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
# Lines of an apt/dkms log worth a diagnosis; the rest stays in the log file on the host.
LOG_SIGNATURES = (
    r"E: |error|warning: |dkms|headers|rejected|could not get lock|bad return|make\.log|"
    r"unable to|fatal|gpurig:|skipped|not found|curl: |failed to fetch"
)
_SUDO: dict[str, Any] = {"_sudo": True}  # changes are made as root whatever the deploy sets


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
    raise DeployError(
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


# Diagnoses: recorded for the fleet report and the verdict, printed instead of raw output.


def _facts_now(target: Host, state: GpuState) -> HostFacts:
    base = target.data.get(FACTS_KEY)
    if not isinstance(base, HostFacts):
        base = HostFacts("unknown", "unknown", "x86_64", None, None, 0.0, 0.0, True, state.systemd)
    return gpu.apply(base, state)


def diagnoses_now(target: Host, text: str, context: Context) -> list[Diagnosis]:
    """The named diagnoses of a failed command: its output, then the host's state right now."""
    try:
        state = target.get_fact(GpuHost)
    except Exception:  # the connection may be what failed; the output alone still says much
        state = None
    found = diagnose.from_output(text, context)
    if state is not None:
        found += diagnose.from_facts(_facts_now(target, state))
    return diagnose.ranked(found) or [diagnose.unrecognised(text, f"{LOG_DIR}/")]


def record(target: Host, found: list[Diagnosis], verdict: Verdict | None) -> None:
    control.record_failure(target.name, str(found[0]))
    if verdict is not None:
        verdict.diagnoses += [d for d in found if d not in verdict.diagnoses]
        verdict.problems += [str(d) for d in found if str(d) not in verdict.problems]


class DiagnosedCommand(StringCommand):
    """A shell command whose failure reads as named diagnoses, not as its raw output."""

    def __init__(self, command: str, context: Context, verdict: Verdict | None) -> None:
        super().__init__(command)
        self.context = context
        self.verdict = verdict

    def execute(self, state: State, host: Host, connector_arguments: Any) -> Any:
        status, output = super().execute(state, host, connector_arguments)
        if status:
            return status, output
        found = diagnoses_now(host, "\n".join(output.output_lines), self.context)
        record(host, found, self.verdict)
        # pyinfra prints a failed command's output: make that the diagnoses.
        return False, CommandOutput([OutputLine("stderr", str(d)) for d in found])


class Stop(PyinfraCommand):
    """Fail the host with named diagnoses: recorded for the report, printed one line each."""

    def __init__(self, found: list[Diagnosis], verdict: Verdict | None) -> None:
        super().__init__()
        self.found = found
        self.verdict = verdict

    def __repr__(self) -> str:
        return f"Stop({' | '.join(str(d) for d in self.found)})"

    def execute(self, state: State, host: Host, connector_arguments: Any) -> bool:
        record(host, self.found, self.verdict)
        for diagnosis in self.found:
            host.log_styled(str(diagnosis), fg="red", log_func=logger.error)
        return False  # a failed operation takes the host out of the run


def _stop(found: list[Diagnosis], verdict: Verdict | None) -> Generator[Any, None, None]:
    yield Stop(found, verdict)


def _note(verdict: Verdict | None, text: str) -> None:
    """Say it in the report (once: generators also run when the plan is made)."""
    host.noop(text)
    if verdict is not None and host.state.is_executing and text not in verdict.notes:
        verdict.notes.append(text)


# Operations. Each reads the GPU fact, compares, and yields commands or says why it need not.


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
def blacklist_nouveau() -> Generator[Any, None, None]:
    """The modprobe.d file, and the initramfs rebuilt with it: nouveau loads from there too."""
    commands = list(managed_file._inner(path=gpu.NOUVEAU_CONF, content=NOUVEAU_BLACKLIST))
    if commands:
        commands.append("if command -v update-initramfs >/dev/null; then update-initramfs -u; fi")
    yield from commands


@operation()
def debian_nonfree(codename: str) -> Generator[Any, None, None]:
    """contrib, non-free and non-free-firmware for each Debian suite the host already uses."""
    sources = host.get_fact(AptSources)
    entries = []
    for repo in sources:
        url, suite, components = repo["url"], repo["distribution"], set(repo["components"])
        if repo["type"] != "deb" or not suite.startswith(codename):
            continue
        if {"contrib", "non-free"} <= components:
            host.noop(f"{url} {suite} already has contrib and non-free")
            return
        signed = repo["options"].get("signed-by")
        option = f" [signed-by={signed}]" if isinstance(signed, str) else ""
        entries.append(f"deb{option} {url} {suite} contrib non-free non-free-firmware")
    if not entries:
        raise DeployError(f"no Debian {codename} apt source to add non-free to: add one")
    content = "# Written by gpurig: Debian's NVIDIA driver lives in non-free.\n"
    content += "\n".join(dict.fromkeys(entries)) + "\n"
    yield from managed_file._inner(path=gpu.NONFREE_LIST, content=content)


@operation()
def cuda_repository(plan: DriverPlan, verdict: Verdict | None) -> Generator[Any, None, None]:
    """NVIDIA's CUDA repository through its cuda-keyring package, whose key must be NVIDIA's."""
    if "cuda-keyring" in host.get_fact(GpuHost).packages:
        host.noop("cuda-keyring is installed")
        return
    url = plan.cuda_repo + CUDA_KEYRING
    script = f"""set -e
apt_get() {{ {apt_get()} "$@"; }}
command -v curl >/dev/null && command -v gpg >/dev/null || {{ apt_get update; apt_get install -y --no-install-recommends curl gpg ca-certificates; }}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
curl -fsSL --retry 3 -o "$tmp/keyring.deb" {shlex.quote(url)}
dpkg-deb -x "$tmp/keyring.deb" "$tmp/x"
fpr=$(gpg --show-keys --with-colons "$tmp"/x/usr/share/keyrings/*.gpg 2>/dev/null | awk -F: '/^fpr/ {{print $10; exit}}')
if [ "$fpr" != {CUDA_KEY_FINGERPRINT} ]; then echo "gpurig: cuda-keyring key $fpr, expected {CUDA_KEY_FINGERPRINT}"; exit 1; fi
dpkg -i "$tmp/keyring.deb"
"""  # noqa: E501
    context = Context(os_id=plan.os_name.split("-")[0], branch=plan.branch)
    yield DiagnosedCommand(logged(script, "cuda-repository"), context, verdict)


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
    apt = apt_get()
    names = " ".join(shlex.quote(p) for p in missing)
    command = f"{apt} update && {apt} install -y --no-install-recommends {names}"
    yield DiagnosedCommand(logged(command, log), context, verdict)


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
    apt = apt_get()
    quoted = " ".join(shlex.quote(p) for p in missing)
    command = (
        f"{apt} update && for p in {quoted}; do "
        f'if apt-cache show "$p" >/dev/null 2>&1; then {apt} install -y --no-install-recommends '
        f'"$p" || exit 1; else echo "gpurig: no $p in the archives"; fi; done'
    )
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
        yield from _stop(diagnoses_now(host, "", context), verdict)
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
    yield from _stop([found], verdict)


def _reboot_reason(state: GpuState, installing: bool) -> str | None:
    if state.nouveau_loaded:
        return "nouveau holds the GPU"
    if not state.nvidia_loaded:
        return None
    if not host.state.is_executing and installing:
        return f"driver {state.driver_version} is loaded and a new one is being installed"
    installed = state.installed_driver
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
    allow: bool, installing: bool, verdict: Verdict | None
) -> Generator[Any, None, None]:
    """Reboot only when the installed driver is not the one loaded (or nouveau holds the GPU),
    then wait for the host; where it cannot reboot (a container), say that a reboot is needed."""
    state = host.get_fact(GpuHost)
    why = _reboot_reason(state, installing)
    if why is None:
        host.noop("the loaded driver is the installed one: no reboot")
        return
    if not allow:
        _note(verdict, f"reboot needed ({why}): nvidia.allow_reboot is false")
        return
    if not state.can_reboot:
        where = "it is a container" if state.container else "it has no systemd"
        _note(verdict, f"reboot needed ({why}): gpurig cannot reboot this host ({where})")
        return
    yield from server.reboot._inner(delay=15, interval=5, reboot_timeout=REBOOT_TIMEOUT_S)


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
    yield from _stop(found, verdict)


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
    wanted: bool, plan: DriverPlan, installing: bool, verdict: Verdict | None
) -> Generator[Any, None, None]:
    """nvidia-persistenced in persistence mode, enabled and running; skipped without systemd."""
    state = host.get_fact(GpuHost)
    dropin = persistenced_dropin(plan.persistenced_user)
    if not wanted:
        yield from managed_file._inner(path=gpu.PERSISTENCED_DROPIN, content="", present=False)
        return
    if not state.systemd:
        _note(verdict, "no systemd: persistence mode not set (nvidia-persistenced needs it)")
        return
    unit_missing = state.persistenced[1] in ("", "not-found")
    if unit_missing and (host.state.is_executing or not installing):
        _note(verdict, "nvidia-persistenced is not installed: persistence mode not set")
        return
    commands = []
    if state.files.get(gpu.PERSISTENCED_DROPIN) != sha256(dropin):
        commands += list(managed_file._inner(path=gpu.PERSISTENCED_DROPIN, content=dropin))
        commands += ["systemctl daemon-reload", "systemctl restart nvidia-persistenced"]
    if state.persistenced[1] != "enabled":
        commands.append("systemctl enable nvidia-persistenced")
    if (
        state.persistenced[0] != "active"
        and "systemctl restart nvidia-persistenced" not in commands
    ):
        commands.append("systemctl start nvidia-persistenced")
    if not commands:
        host.noop("nvidia-persistenced runs in persistence mode")
    yield from commands


def _flag(key: str, fallback: bool) -> bool:
    value = host.data.get(key)
    return fallback if value is None else bool(value)


@deploy("NVIDIA driver", data_defaults=NVIDIA_DEFAULTS)
def nvidia_driver(verdict: Verdict | None = None, stack: Stack | None = None) -> None:
    """The GPU layer for a host that passed preflight: install, load, check, lock, persist."""
    verdict = verdict if verdict is not None else host.data.get(VERDICT_KEY)
    if not isinstance(verdict, Verdict):
        raise DeployError(f"{VERDICT_KEY} is missing: run the preflight deploy first")
    if not verdict.ok:
        return
    stack = stack or host_stack()
    nvidia = stack.nvidia
    state = host.get_fact(GpuHost)
    if not state.gpus:
        host.noop("no NVIDIA GPU on the PCI bus: GPU stage skipped")
        return
    facts = host.data.get(FACTS_KEY)
    os_id, os_version = (facts.os_id, facts.os_version) if isinstance(facts, HostFacts) else _os()
    plan = plan_driver(os_id, os_version, state, nvidia)
    context = Context(state.kernel, os_id, state.secure_boot, nvidia.driver_branch)
    installing = verdict.install_driver and any(p not in state.packages for p in plan.packages)
    variant = verdict.target.variant if verdict.target else None
    toolkit, toolkit_source = toolkit_packages(plan, variant) if nvidia.cuda_toolkit else ([], "")
    needs_cuda_repo = plan.source == "cuda" or any(p.startswith("cuda-toolkit") for p in toolkit)

    if verdict.install_driver:
        logger.info(f"{host.print_prefix}NVIDIA: {plan.describe()}")
        if plan.source == "debian":
            debian_nonfree(
                name="Enable Debian's contrib and non-free",
                codename=DEBIAN_CODENAME[os_version],
                **_SUDO,
            )
    if needs_cuda_repo:
        cuda_repository(
            name=f"Add NVIDIA's CUDA repository (key {CUDA_KEY_FINGERPRINT[-8:]} checked)",
            plan=plan,
            verdict=verdict,
            **_SUDO,
        )
    if verdict.install_driver:
        blacklist_nouveau(name="Blacklist nouveau", **_SUDO)
        if plan.headers:
            kernel_headers(
                name=f"Install kernel headers for {state.kernel}",
                plan=plan,
                context=context,
                verdict=verdict,
                **_SUDO,
            )
        apt_install(
            name=f"Install NVIDIA {plan.describe()}",
            packages=plan.packages,
            log="nvidia-driver",
            context=context,
            verdict=verdict,
            **_SUDO,
        )
        if not plan.precompiled:
            build_module(
                name=f"Build the NVIDIA module for kernel {state.kernel}",
                plan=plan,
                installing=installing,
                context=context,
                verdict=verdict,
                **_SUDO,
            )
        if plan.mok:
            secure_boot_key(name="Check the DKMS signing key is enrolled", verdict=verdict)
        load_driver(
            name="Load the NVIDIA driver",
            installing=installing,
            context=context,
            verdict=verdict,
            **_SUDO,
        )
    reboot_for_driver(
        name="Reboot into the NVIDIA driver if an old module holds the GPU",
        allow=nvidia.allow_reboot,
        installing=installing,
        verdict=verdict,
        **_SUDO,
    )
    check_driver(
        name="Check nvidia-smi sees every GPU",
        gpus=len(state.gpus),
        pending=verdict.install_driver,
        allow_reboot=nvidia.allow_reboot,
        context=context,
        verdict=verdict,
    )

    # Drift lock: the packages that make up the driver, and the kernel metas a DKMS module follows.
    kernel = _flag("gpurig_nvidia_hold_kernel", nvidia.hold_packages)
    will_have = set(state.packages) | (set(plan.packages) if verdict.install_driver else set())
    driver_packages = [p for p in plan.packages if p in will_have]
    hold(
        name="Hold the NVIDIA driver packages" if nvidia.hold_packages else "Release driver holds",
        packages=driver_packages,
        held=nvidia.hold_packages,
        **_SUDO,
    )
    hold(
        name="Hold the kernel packages" if kernel else "Release kernel holds",
        packages=plan.kernel_holds,
        held=kernel,
        **_SUDO,
    )
    unattended = _flag("gpurig_nvidia_unattended_upgrades", nvidia.hold_packages)
    managed_file(
        name="Keep unattended-upgrades off the driver"
        if unattended
        else "Let unattended-upgrades upgrade the driver",
        path=gpu.UNATTENDED_CONF,
        content=unattended_upgrades_file(kernel),
        present=unattended,
        **_SUDO,
    )
    persistence(
        name="Enable persistence mode (nvidia-persistenced)",
        wanted=nvidia.persistence_mode,
        plan=plan,
        installing=installing,
        verdict=verdict,
        **_SUDO,
    )
    if toolkit:
        apt_install(
            name=f"Install nvcc: {toolkit_source}",
            packages=toolkit,
            log="cuda-toolkit",
            context=context,
            verdict=verdict,
            **_SUDO,
        )
    elif nvidia.cuda_toolkit and toolkit_source not in verdict.notes:
        verdict.notes.append(toolkit_source)


def _os() -> tuple[str, str]:
    meta = host.get_fact(LinuxDistribution)["release_meta"]
    return str(meta.get("ID", "unknown")), str(meta.get("VERSION_ID", "unknown"))
