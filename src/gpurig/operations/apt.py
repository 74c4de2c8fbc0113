"""apt packages with a bounded wait for the dpkg lock.

Fresh cloud VMs run unattended-upgrades at boot: plain apt-get fails at once on the lock
("Could not get lock /var/lib/dpkg/lock-frontend"); DPkg::Lock::Timeout makes it wait. Past the
bound, the failure reads as the named dpkg-lock diagnosis (gpurig.diagnose), not apt's output.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from pyinfra.api.operation import operation
from pyinfra.context import host
from pyinfra.facts.deb import DebPackages

from gpurig.diagnose import Context
from gpurig.operations.diagnosed import DiagnosedCommand
from gpurig.plan.system import APT_LOCK_TIMEOUT_S, apt_install


@operation()
def packages(
    packages: list[str], lock_timeout_s: int = APT_LOCK_TIMEOUT_S
) -> Generator[Any, None, None]:
    """Install the packages that are missing; refresh the package lists first when any is."""
    installed = host.get_fact(DebPackages)
    missing = [p for p in packages if p.split("=", 1)[0] not in installed]
    if not missing:
        host.noop(f"apt packages are installed: {', '.join(packages)}")
        return
    yield DiagnosedCommand(apt_install(missing, lock_timeout_s), Context(), None)
