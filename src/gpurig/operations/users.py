"""The service user: a system account with a home and a shell, no password, no sudo."""

from __future__ import annotations

import shlex
from collections.abc import Generator

from pyinfra.api.operation import operation
from pyinfra.context import host

from gpurig.facts.system import PasswdEntry


@operation()
def service_user(user: str, home: str, shell: str = "/bin/bash") -> Generator[str, None, None]:
    """One fact (getent) where pyinfra's server.user reads users, groups and the OS."""
    q = shlex.quote
    account = host.get_fact(PasswdEntry, user=user)
    if account is None:
        # A system account gets a locked password; it is in no group but its own.
        yield (
            f"useradd --system --user-group --create-home --home-dir {q(home)} "
            f"--shell {q(shell)} {q(user)}"
        )
        return
    changes = []
    if account.home != home:
        changes += ["--home", q(home)]
    if account.shell != shell:
        changes += ["--shell", q(shell)]
    if not changes:
        host.noop(f"user {user} exists")
        return
    yield f"usermod {' '.join(changes)} {q(user)}"
