"""Files streamed to a host over an exec channel of the deploy's own SSH connection, into a
root-run script that writes and hashes the same bytes in one pass (the models' push, the
wheels' push). Strict host keys, sudo and the connection are the deploy's; nothing lands in a
folder the SSH user can write."""

from __future__ import annotations

import io
import shlex
from collections.abc import Callable
from typing import Any

from paramiko import SSHClient, Transport

BLOCK_BYTES = 256 << 10  # read and sent at a time; the SSH layer cuts its own packets


def as_root(script: str) -> str:
    """`script` as root (sudo -n, as preflight checked; the deploy's own sudo settings are for
    pyinfra's commands)."""
    q = shlex.quote(script)
    return f'if [ "$(id -u)" = 0 ]; then exec /bin/sh -c {q}; else exec sudo -n /bin/sh -c {q}; fi'


def transport_of(host: Any) -> Transport | None:
    """The host's open SSH transport; None for another connector (or before connecting)."""
    client = getattr(getattr(host, "connector", None), "client", None)
    return client.get_transport() if isinstance(client, SSHClient) else None


def stream(
    transport: Transport,
    src: str | bytes,
    script: str,
    report: Callable[[int], None] | None = None,
) -> tuple[int, str, str]:
    """`src`'s bytes (a controller file's path, or the bytes themselves) into `script`'s stdin
    (run as root); its exit status, stdout and stderr. `report(bytes sent)` after each block."""
    channel = transport.open_session()
    try:
        channel.exec_command(as_root(script))
        done = 0
        with open(src, "rb") if isinstance(src, str) else io.BytesIO(src) as source:
            while block := source.read(BLOCK_BYTES):
                channel.sendall(block)
                done += len(block)
                if report:
                    report(done)
        channel.shutdown_write()
        out = channel.makefile("rb").read().decode(errors="replace").strip()
        err = channel.makefile_stderr("rb").read().decode(errors="replace").strip()
        return channel.recv_exit_status(), out, err
    finally:
        channel.close()


def what_host_read(status: int, out: str, err: str) -> str:
    """A streamed file the host did not take, in the words every push logs: the hash it read
    (or nothing), its exit status, and the end of its stderr."""
    return f"the host read {out or 'nothing'} (exit {status}{': ' + err[-300:] if err else ''})"
