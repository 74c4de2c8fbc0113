"""Stop one host with a reason, while the others go on."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from pyinfra import logger
from pyinfra.api.command import FunctionCommand
from pyinfra.api.host import Host
from pyinfra.api.operation import operation
from pyinfra.api.state import State

# host name -> why gpurig stopped it, for the fleet summary.
FAILURES: dict[str, str] = {}


def record_failure(host_name: str, reason: str) -> None:
    FAILURES.setdefault(host_name, reason)


def _stop(state: State, host: Host, reason: str) -> bool:
    # pyinfra passes state and host to a callback only when its parameters have these names.
    record_failure(host.name, reason)
    host.log_styled(reason, fg="red", log_func=logger.error)
    return False  # a False status fails the operation, which takes the host out of the run


@operation(is_idempotent=False)
def stop_host(reason: str) -> Generator[Any, None, None]:
    """Fail this host with `reason`; pyinfra skips its remaining operations."""
    yield FunctionCommand(_stop, (reason,), {})
