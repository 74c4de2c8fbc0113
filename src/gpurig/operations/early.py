"""The controller's big files, pushed from preflight in the background.

On a fresh host the wheels (torch's CPU wheel alone is ~190 MB) and uv's binary (38 MB) are the
deploy's biggest transfers, and the steps before theirs (the trust store, apt, the small files)
mostly wait on the host. So where the run will execute (`gpurig deploy` says so in host data; a
pyinfra run that may still be answered "no", or `--dry`, does not), preflight starts them as
soon as it knows what the host lacks (`start`). Each goes over an exec channel of the host's SSH
connection into the receiving script of its own step (gpurig.operations.wheels, .files), which
writes it beside its final name, hashes the same bytes and renames it into place only with the
plan's sha256: a file arrives whole and checked, or not at all. A few are in flight at once,
the biggest first. Each step's operation then waits for its own files (`outcome`), and pushes
again what did not arrive.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import gevent
from gevent.event import Event
from paramiko import Transport
from pyinfra.api.host import Host

from gpurig.operations.stream import stream, transport_of, what_host_read

# Files in flight at once, each on its own exec channel of the one connection: every file's
# script (sudo, sh, its hash, the rename) costs the host ~50 ms, which the others' bytes fill.
CHANNELS = 3
# A controller file at least this big goes early; a smaller one takes its step's own round
# trip rather than a place in the queue behind the big ones.
MIN_BYTES = 1 << 20


@dataclass(frozen=True)
class Transfer:
    """One controller file and the host-side script that takes it (run as root; it reads
    stdin and prints the sha256 of what it wrote)."""

    key: str  # what its step asks for: a wheel's name, a file's destination
    src: str | bytes  # a controller file's path, or the bytes
    size: int
    sha256: str
    script: str


def send(transport: Transport, transfer: Transfer) -> str | None:
    """None when the host took the file with its hash; else what went wrong."""
    status, out, err = stream(transport, transfer.src, transfer.script)
    if status == 0 and out == transfer.sha256:
        return None
    return what_host_read(status, out, err)


@dataclass
class Push:
    """A push under way: each file's outcome as it ends (None: in place)."""

    transfers: list[Transfer]
    done: dict[str, str | None] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # each file's, from the start
    greenlet: Any = None
    ended: dict[str, Event] = field(init=False)  # one per file, set as it ends

    def __post_init__(self) -> None:
        self.ended = {t.key: Event() for t in self.transfers}

    def __contains__(self, key: str) -> bool:
        return key in self.ended

    def run(self, transport: Transport) -> None:
        began = time.monotonic()
        todo = sorted(self.transfers, key=lambda t: -t.size)  # the longest transfer first

        def channel() -> None:
            while todo:
                transfer = todo.pop(0)  # greenlets switch only on I/O: no two take one file
                try:
                    self.done[transfer.key] = send(transport, transfer)
                except Exception as error:
                    self.done[transfer.key] = f"{type(error).__name__}: {error}"
                self.seconds[transfer.key] = time.monotonic() - began
                self.ended[transfer.key].set()

        gevent.joinall([gevent.spawn(channel) for _ in range(min(CHANNELS, len(todo)))])

    def outcome(self, key: str) -> str | None:
        """Waits for `key`'s file alone (not the whole push): None when it is in place, else
        what went wrong (also when the push ended without it)."""
        if self.greenlet is not None:  # it ends each file's wait, even killed before that file
            gevent.wait([self.ended[key], self.greenlet], count=1)
        return self.done.get(key, "not pushed")


def start(target: Host, transfers: list[Transfer]) -> Push | None:
    """`transfers` started in the background over the host's SSH connection; None when there is
    nothing to push or the connector is not SSH. Call it only for a run that will execute."""
    transport = transport_of(target)
    if not transfers or transport is None:
        return None
    push = Push(transfers)
    push.greenlet = gevent.spawn(push.run, transport)
    total = sum(t.size for t in transfers)
    target.log(
        f"pushing {len(transfers)} file(s) ({total / 1e6:,.1f} MB) while the steps before run"
    )
    return push
