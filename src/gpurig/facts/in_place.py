"""What a host already has, read once in preflight: the one round trip of a no-change re-run.

Each install operation reads its own fact when it runs (a stat and a checksum, getent, dpkg):
fifteen round trips on a host that needs nothing. `InPlace` asks everything in one script run
as root: the plan steps the Ansible preflight probes too (gpurig.plan.converged: files by
sha256, owner, group and mode; folders; apt packages; the service user; the pushed wheels), the
venvs (`VenvState`'s script) and whether files that must be absent exist. The stages skip the
steps it shows in place (pyinfra's `_if`), and a step it cannot judge still reads its own fact
when it runs: every check is still made, in one round trip instead of one each.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pyinfra.api.facts import FactBase

from gpurig.facts.system import Venvs, VenvState
from gpurig.plan import HostPlan, converged
from gpurig.plan.steps import Venv, Wheels

if TYPE_CHECKING:
    from pyinfra.api.host import Host

_VENVS = "@@gpurig-venvs"
_PRESENT = "@@gpurig-present"


@dataclass(frozen=True)
class Probed:
    """The script's output, in its three parts."""

    steps: str = ""  # gpurig.plan.converged's probe output
    venvs: Venvs | None = None  # None: not asked
    present: frozenset[str] = frozenset()  # the paths asked about that exist


@dataclass(frozen=True)
class HostInPlace:
    """What preflight read: the plan steps in place, the venvs, which paths exist. Empty when
    no preflight ran: then nothing is known to be in place."""

    steps: frozenset[str] = frozenset()
    venvs: Venvs | None = None
    asked: frozenset[str] = frozenset()
    present: frozenset[str] = frozenset()
    wheels: Mapping[str, int] = field(default_factory=dict)  # the wheel folder's file sizes

    def absent(self, path: str) -> bool:
        """Known to be absent (asked about, and not there)."""
        return path in self.asked and path not in self.present


def probe_script(probe: str, venv: Venv | None, paths: Iterable[str]) -> str:
    """probe: converged.probe_command's; venv: the plan's venv step; paths: files whose
    presence a later stage needs."""
    parts = [probe]
    if venv is not None:
        parts += [
            f"echo {_VENVS}",
            VenvState().command(link=venv.link, venvs_dir=venv.venvs_dir, marker=venv.marker_file),
        ]
    parts.append(f"echo {_PRESENT}")
    for path in paths:
        quoted = shlex.quote(path)
        parts.append(f"if [ -e {quoted} ] || [ -L {quoted} ]; then echo {quoted}; fi")
    return "\n".join(parts) + "\ntrue"


class InPlace(FactBase[Probed]):
    def command(self, script: str) -> str:
        return script

    @staticmethod
    def default() -> Probed:
        return Probed()

    def process(self, output: list[str]) -> Probed:
        sections: dict[str, list[str]] = {"": []}
        current = ""
        for line in output:
            if line.strip() in (_VENVS, _PRESENT):
                current = line.strip()
                sections[current] = []
            else:
                sections[current].append(line)
        venvs = VenvState().process(sections[_VENVS]) if _VENVS in sections else None
        present = frozenset(line.strip() for line in sections.get(_PRESENT, []) if line.strip())
        return Probed("\n".join(sections[""]), venvs, present)


def read(host: Host, plan: HostPlan, paths: Iterable[str] = ()) -> HostInPlace:
    """One round trip for `plan`'s host, as root (the probe compares the service user's
    password field on the host and hashes 0600 files)."""
    paths = sorted(paths)
    steps, folders = plan.steps(), plan.folders()
    venv = next((s for s in steps if isinstance(s, Venv)), None)
    script = probe_script(converged.probe_command(steps, folders), venv, paths)
    probed = host.get_fact(InPlace, script=script)
    ids = converged.converged(steps, folders, probed.steps)
    wheels = next((s for s in steps if isinstance(s, Wheels)), None)
    sizes = converged.sizes(wheels, probed.steps) if wheels else {}
    return HostInPlace(frozenset(ids), probed.venvs, frozenset(paths), probed.present, sizes)
