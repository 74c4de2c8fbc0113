"""The driver stage run as pyinfra operation tests: facts in, commands out (pyinfra-testing style).

`run_stage` injects the GPU fact (and the others the stage reads) into a real pyinfra State,
runs `nvidia_driver` to make the plan, and keeps each operation's commands; `Run.execute` runs
the operations' generators again with the state an install left (facts read at execution).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from pyinfra.api import Config, Inventory, State
from pyinfra.api.command import StringCommand
from pyinfra.api.deploy import add_deploy
from pyinfra.api.host import Host
from pyinfra.context import ctx_host, ctx_state
from pyinfra.facts.apt import AptSources
from pyinfra.facts.server import LinuxDistribution

from gpurig import spec
from gpurig.deploys import FACTS_KEY
from gpurig.deploys import nvidia as stage
from gpurig.facts import gpu
from gpurig.facts.gpu import GpuHost
from gpurig.lock import Target
from gpurig.model.host import GpuState, SmiGpu, pci_gpu
from gpurig.plan import HostPlan
from gpurig.plan import driver as driver_plan
from gpurig.preflight import Verdict
from helpers.facts import host_facts

H100 = pci_gpu("0000:3b:00.0", "2330")
UBUNTU_KERNEL = "6.8.0-45-generic"
DEBIAN_KERNEL = "6.1.0-25-cloud-amd64"
PREFIX = "NVIDIA driver | "
APT = "DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=120 -o Dpkg::Use-Pty=0"
APT_UPDATE = (
    f"{APT} -o Acquire::CompressionTypes::Order::=gz "
    "$(ls /var/lib/apt/lists 2>/dev/null | grep -q _Translation- "
    "|| echo -o Acquire::Languages=none) update"
)


def stack(branch: int = 580, variants: list[str] | None = None, **nvidia: object) -> spec.Stack:
    return spec.Stack.model_validate(
        {
            "python": ["3.11", "3.12", "3.13"],
            "torch": {"version": "2.13.0", "variants": variants or ["cu130", "cpu"]},
            "nvidia": {"driver_branch": branch, **nvidia},
        }
    )


def verdict(install: bool = True, variant: str = "cu130") -> Verdict:
    target = Target(f"{variant}-cp311", variant, "3.11", "x.txt", "", "", None, [], {})
    return Verdict(target=target, python="3.11", install_driver=install)


def fresh(os_id: str = "debian", **fields: Any) -> GpuState:
    """A GPU host as a cloud image boots: no driver, nothing held, systemd running."""
    kernel = UBUNTU_KERNEL if os_id == "ubuntu" else DEBIAN_KERNEL
    meta = "linux-image-generic" if os_id == "ubuntu" else "linux-image-cloud-amd64"
    base: dict[str, Any] = {
        "gpus": [H100],
        "secure_boot": False,
        "kernel": kernel,
        "kernel_headers": False,
        "packages": {meta: "1", "unattended-upgrades": "2.9"},
        "systemd": True,
    }
    return GpuState(**{**base, **fields})


def converged(plan: driver_plan.DriverPlan, **fields: Any) -> GpuState:
    """The host after a good run: driver loaded, everything held and written."""
    before = fresh(plan.os_name.split("-")[0])
    dropin = driver_plan.persistenced_dropin(plan.persistenced_user)
    ok = "installed"
    packages = {**before.packages, **dict.fromkeys(plan.packages, "580.95.05-1")}
    packages["libcuda1" if plan.source != "ubuntu" else "libnvidia-compute-580-server"] = (
        "580.95.05-1"
    )
    base: dict[str, Any] = {
        "driver_version": "580.95.05",
        "smi_rc": 0,
        "smi_gpus": [SmiGpu(H100.slot, "NVIDIA H100 80GB HBM3", "580.95.05", "9.0")],
        "modules": ["nvidia", "nvidia_uvm"],
        "kernel_headers": True,
        "module_version": "580.95.05",
        "packages": packages,
        "held": sorted({*plan.packages, *plan.kernel_holds}),
        "dkms": [] if plan.precompiled else [f"nvidia/580.95.05, {before.kernel}, x86_64: {ok}"],
        "files": {
            gpu.NOUVEAU_CONF: driver_plan.sha256(driver_plan.NOUVEAU_BLACKLIST),
            gpu.UNATTENDED_CONF: driver_plan.sha256(driver_plan.unattended_upgrades_file(True)),
            gpu.PERSISTENCED_DROPIN: driver_plan.sha256(dropin),
        },
        "persistenced": ("active", "enabled"),
    }
    return replace(before, **{**base, **fields})


OS = {
    "ubuntu-22.04": ("ubuntu", "22.04", "3.10"),
    "ubuntu-24.04": ("ubuntu", "24.04", "3.12"),
    "debian-12": ("debian", "12", "3.11"),
    "debian-13": ("debian", "13", "3.13"),
}
DEBIAN_SOURCES = [
    {"type": "deb", "url": "http://deb.debian.org/debian", "distribution": "bookworm",
     "components": ["main"], "options": {}},
    {"type": "deb", "url": "http://deb.debian.org/debian-security",
     "distribution": "bookworm-security", "components": ["main"], "options": {}},
]  # fmt: skip


@dataclass
class Run:
    """A planned stage: op name -> commands, and the changes the plan shows."""

    state: State
    host: Host
    facts: dict[type, Any]
    ops: dict[str, list[str]] = field(default_factory=dict)
    changing: list[str] = field(default_factory=list)
    hashes: dict[str, str] = field(default_factory=dict)

    def execute(self, after: GpuState) -> dict[str, list[str]]:
        """Each operation's commands when it runs, reading `after` (the post-install state)."""
        self.facts[GpuHost] = after
        self.state.is_executing = True
        try:
            return {name: self._commands(h) for name, h in self.hashes.items()}
        finally:
            self.state.is_executing = False

    def _commands(self, op_hash: str) -> list[str]:
        with ctx_state.use(self.state), ctx_host.use(self.host):
            data = self.state.ops[self.host][op_hash]
            return [text(c) for c in data.command_generator()]


def text(command: Any) -> str:
    return str(command) if isinstance(command, StringCommand) else repr(command)


def run_stage(
    state: GpuState,
    os_name: str = "debian-12",
    the_stack: spec.Stack | None = None,
    the_verdict: Verdict | None = None,
    data: dict[str, Any] | None = None,
    sources: list[dict[str, Any]] | None = None,
) -> Run:
    os_id, os_version, python = OS[os_name]
    inventory = Inventory((["gpu-1"], {}))
    pyinfra_state = State(inventory, Config())
    host = inventory.get_host("gpu-1")
    facts: dict[type, Any] = {
        GpuHost: state,
        AptSources: DEBIAN_SOURCES if sources is None else sources,
        LinuxDistribution: {"release_meta": {"ID": os_id, "VERSION_ID": os_version}},
    }

    def get_fact(cls: type, *args: Any, **kwargs: Any) -> Any:
        return facts[cls]

    host.get_fact = get_fact  # type: ignore[method-assign]
    probed = host_facts(os_id=os_id, os_version=os_version, python3=python)
    for key, value in {FACTS_KEY: probed, **(data or {})}.items():
        setattr(host.data, key, value)
    pyinfra_state.activate_host(host)
    the_verdict = the_verdict or verdict()
    knobs = {k: v for k, v in (data or {}).items() if k.startswith("gpurig_nvidia_")}
    the_stack = the_stack or stack()
    # As preflight plans it: a host with no GPU on the PCI bus gets no driver section.
    section = (
        driver_plan.driver_section(the_stack, probed, state, the_verdict, facts[AptSources], knobs)
        if state.gpus
        else None
    )
    plan = HostPlan(the_stack, probed, the_verdict, driver=section)
    add_deploy(pyinfra_state, stage.nvidia_driver, plan)
    result = Run(pyinfra_state, host, facts)
    for op_hash in pyinfra_state.get_op_order():
        name = sorted(pyinfra_state.op_meta[op_hash].names)[0].removeprefix(PREFIX)
        result.hashes[name] = op_hash
        result.ops[name] = result._commands(op_hash)
        if pyinfra_state.ops[host][op_hash].operation_meta._maybe_is_change:
            result.changing.append(name)
    return result


def install_command(packages: str, log: str = "nvidia-driver") -> str:
    return driver_plan.logged(
        f"{APT_UPDATE} && {APT} install -y --no-install-recommends -- {packages}", log
    )
