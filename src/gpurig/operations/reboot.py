"""Reboot a host and wait, bounded, until the same host answers SSH from a new boot.

pyinfra's own server.reboot sleeps a fixed delay and then compares /proc/uptime, which a
container shares with the machine it runs on: the sandbox's VM stand-ins (restarted by their
engine) would never look rebooted. A new boot is told here by the kernel's boot id or by PID 1's
start time (gpurig.plan.driver.BOOT_MARKER, which the Ansible role's reboot reads too): a VM
changes both, a restarted container the second. The reconnect goes through the same
inventory, so host keys are checked as strictly as on the first connection.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from typing import Any

from pyinfra import logger
from pyinfra.api.command import FunctionCommand, StringCommand
from pyinfra.api.facts import FactBase
from pyinfra.api.host import Host
from pyinfra.api.operation import operation
from pyinfra.api.state import State
from pyinfra.connectors.util import clear_askpass_cache, remove_any_sudo_askpass_file

from gpurig import diagnose
from gpurig.diagnose import Diagnosis
from gpurig.operations.diagnosed import record
from gpurig.plan.driver import BOOT_MARKER
from gpurig.preflight import Verdict

POLL_S = 1.0


class BootMarker(FactBase[str]):
    """What changes with every boot of the host (see gpurig.plan.driver.BOOT_MARKER)."""

    def command(self) -> str:
        return BOOT_MARKER

    def process(self, output: list[str]) -> str:
        return " ".join(line.strip() for line in output)


def did_not_come_back(name: str, timeout_s: int) -> Diagnosis:
    return Diagnosis(
        diagnose.NO_REBOOT,
        f"{name} did not answer SSH from a new boot within {timeout_s} s of its reboot",
        "look at the host's console (a stuck firmware POST, a kernel that does not boot, a "
        "network that does not come up); GPURIG_REBOOT_TIMEOUT_S sets the bound",
    )


@contextmanager
def _quiet_ssh() -> Iterator[None]:
    """paramiko logs each refused connection to a host that is down with a traceback: expected
    while it reboots, so not shown (a host that never comes back is named instead)."""
    paramiko = logging.getLogger("paramiko")
    level = paramiko.level
    paramiko.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        paramiko.setLevel(level)


def _wait_for_new_boot(
    state: State, host: Host, before: list[str], timeout_s: int, verdict: Verdict | None
) -> bool:
    # pyinfra passes state and host to a callback only when its parameters have these names.
    deadline = time.monotonic() + timeout_s
    clear_askpass_cache(host)  # the files lived on the host that is going down
    host.disconnect()
    while time.monotonic() < deadline:
        time.sleep(POLL_S)
        with _quiet_ssh():
            host.connect(show_errors=False)
        if not host.connected:
            continue
        if host.get_fact(BootMarker) != before[0]:
            return True
        host.disconnect()  # still the old boot: the reboot has not begun yet
    found = [did_not_come_back(host.name, timeout_s)]
    record(host, found, verdict)
    host.log_styled(str(found[0]), fg="red", log_func=logger.error)
    return False  # a False status fails the operation, which takes the host out of the run


@operation(is_idempotent=False)
def reboot(timeout_s: int, verdict: Verdict | None = None) -> Generator[Any, None, None]:
    """Reboot, then wait up to timeout_s for a login to a new boot of the same host."""
    before: list[str] = []

    def remember_boot(state: State, host: Host) -> bool:
        remove_any_sudo_askpass_file(host)
        before.append(host.get_fact(BootMarker))
        return True

    yield FunctionCommand(remember_boot, (), {})
    # Detached, so the SSH channel closes before the host goes down.
    yield StringCommand("( sleep 1 && systemctl reboot ) </dev/null >/dev/null 2>&1 &")
    yield FunctionCommand(_wait_for_new_boot, (before, timeout_s, verdict), {})
