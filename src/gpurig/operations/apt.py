"""apt packages with a bounded wait for the dpkg lock, installed as a background job that a
later step waits for (gpurig.plan.apt_background).

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
from gpurig.plan.apt_background import start_script
from gpurig.plan.system import APT_LOCK_TIMEOUT_S, apt_install


@operation()
def packages(
    packages: list[str], lock_timeout_s: int = APT_LOCK_TIMEOUT_S, background: bool = False
) -> Generator[Any, None, None]:
    """Install the packages that are missing (the lists refreshed first): in the background
    when `background`, and then `wait` takes the result; else here and now."""
    installed = host.get_fact(DebPackages)
    missing = [p for p in packages if p.split("=", 1)[0] not in installed]
    if not missing:
        host.noop(f"apt packages are installed: {', '.join(packages)}")
        return
    install = apt_install(missing, lock_timeout_s)
    yield DiagnosedCommand(start_script(install) if background else install, Context(), None)
