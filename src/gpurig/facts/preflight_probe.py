"""Preflight's facts in one round trip: the system probe, the GPU layer's fact and the apt
sources, run as the SSH user (the system probe tests passwordless sudo itself).

Both front ends send this script and parse its output with the same code: pyinfra as the
`PreflightProbe` fact, the Ansible preflight action through gpurig.ansible_bridge. One round
trip instead of three is what a fleet's no-change run saves on every host.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

from pyinfra.api.facts import FactBase
from pyinfra.facts.apt import AptSources

from gpurig.facts import gpu
from gpurig.facts.system import HostProbe, Probe, to_host_facts
from gpurig.model.host import GpuState, HostFacts

# One sudo for two answers (each sudo is a PAM session and a journal entry on every host of
# every run): whether the SSH user runs a root shell without a password, as every step after
# preflight does (pyinfra's `sudo -n sh -c`), and the kernel log's driver lines, which Debian
# keeps from other users (dmesg_restrict). The system and GPU probes read the answers from
# _gpurig_sudo and _gpurig_klog instead of asking again.
SUDO_AND_KERNEL_LOG = (
    "_gpurig_sudo=0\n"
    "if command -v sudo >/dev/null 2>&1 && _gpurig_klog=$(sudo -n /bin/sh -c "
    + shlex.quote(f"echo gpurig-root; dmesg 2>/dev/null | {gpu.KLOG_FILTER}")
    + " 2>/dev/null); then\n"
    "  case $_gpurig_klog in gpurig-root*) _gpurig_sudo=1 ;; esac\n"
    "fi\n"
    'if [ "$_gpurig_sudo" = 1 ]; then _gpurig_klog=${_gpurig_klog#gpurig-root}; '
    "_gpurig_klog=${_gpurig_klog#?}; else unset _gpurig_klog; fi"
)

# Section headers between the three probes' outputs.
GPU_SECTION = "@@gpurig-gpu-fact"
SOURCES_SECTION = "@@gpurig-apt-sources"


def script(venv: str, hub: str = "") -> str:
    """The probes as one POSIX sh script. hub: the Hub test's lines (the controller's
    `hub_probe`), "" when the host's models need none. A failing system probe fails the
    script, as it failed its own fact before; apt sources are best effort (absent on non-apt
    hosts, which preflight refuses by name)."""
    system = HostProbe().command(venv, hub).strip()
    gpus = gpu.GpuHost().command().strip()
    sources = AptSources().command().strip()
    return (
        f"{SUDO_AND_KERNEL_LOG}\n"
        f"(\n{system}\n) || exit $?\necho {GPU_SECTION}\n(\n{gpus}\n) || exit $?\n"
        f"echo {SOURCES_SECTION}\n{sources} 2>/dev/null\ntrue"
    )


@dataclass(frozen=True)
class Probed:
    probe: Probe  # the system probe's values (the dpkg lock holder is read from them)
    facts: HostFacts  # system and GPU facts together
    gpu: GpuState
    sources: list[Any]  # pyinfra AptRepo entries


def parse(lines: list[str]) -> Probed:
    gpu_at = lines.index(GPU_SECTION) if GPU_SECTION in lines else len(lines)
    sources_at = lines.index(SOURCES_SECTION) if SOURCES_SECTION in lines else len(lines)
    probe = HostProbe().process(lines[:gpu_at])
    state = gpu.GpuHost().process(lines[gpu_at + 1 : sources_at])
    sources = AptSources().process(lines[sources_at + 1 :]) if sources_at < len(lines) else []  # type: ignore[no-untyped-call]
    return Probed(probe, gpu.apply(to_host_facts(probe), state), state, list(sources))


class PreflightProbe(FactBase[Probed]):
    """`script`'s output, parsed; run it with `_sudo=False`."""

    def command(self, venv: str, hub: str = "") -> str:
        return script(venv, hub)

    @staticmethod
    def default() -> Probed:
        return parse([])

    def process(self, output: list[str]) -> Probed:
        return parse([line.rstrip("\n") for line in output])
