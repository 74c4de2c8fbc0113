"""Wheels the hosts cannot download, pushed from the controller (gpurig.plan's Wheels step).

Each wheel is streamed over an exec channel of the deploy's SSH connection into a root-run
script that writes it beside its final name, hashes the same bytes, and renames it into place
only when the hash is the lock's (gpurig.operations.stream): one pass, no copy in /tmp, no file
of the wrong bytes ever under the wheel's name.

On a fresh host the push is the biggest transfer of the deploy (torch's CPU wheel alone is
~190 MB), and the steps before it (the trust store, uv, the small files) mostly wait on the
host. So where the run will execute (`gpurig deploy` says so in host data; a pyinfra run that
may still be answered "no", or `--dry`, does not), preflight starts the push in the background
(`start_early`) as soon as it knows what the host lacks, and the Wheels operation waits for it,
then pushes whatever it did not place. Another connector than SSH gets pyinfra's upload
and a `sha256sum --check`.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any

import gevent
from paramiko import Transport
from pyinfra import logger
from pyinfra.api.command import FileUploadCommand, FunctionCommand, StringCommand
from pyinfra.api.host import Host
from pyinfra.api.operation import operation
from pyinfra.api.state import State
from pyinfra.context import host

from gpurig.facts.system import FileSizes
from gpurig.operations.stream import stream, transport_of, what_host_read
from gpurig.plan.hashing import tee_hashed
from gpurig.plan.steps import WheelFile


def receive(wheel: WheelFile, directory: str) -> str:
    """The host's side, run as root: stdin to `directory/.NAME.partial`, hashed as it is
    written; renamed to NAME only with the lock's sha256 and the whole size, else removed.
    Prints the hash it found."""
    q = shlex.quote
    part, dest = q(f"{directory}/.{wheel.name}.partial"), q(f"{directory}/{wheel.name}")
    return (
        f"umask 022; mkdir -p {q(directory)} || exit 1; "
        + tee_hashed(part)
        + f'if [ "$h" = {wheel.sha256} ] && [ "$(stat -c %s {part})" = {wheel.size} ]; '
        f"then mv -f {part} {dest}; else rm -f {part}; exit 1; fi"
    )


def _push(transport: Transport, wheel: WheelFile, directory: str) -> str | None:
    """None when the wheel is in place with its hash; else what went wrong."""
    status, out, err = stream(transport, wheel.src, receive(wheel, directory))
    if status == 0 and out == wheel.sha256:
        return None
    return what_host_read(status, out, err)


# Wheels in flight at once, each on its own exec channel of the one connection: every file's
# script (sudo, sh, its hash, the rename) costs the host ~50 ms, which the others' bytes fill.
CHANNELS = 3


@dataclass
class Push:
    """A push under way: each wheel's outcome as it ends (None: in place)."""

    wheels: list[WheelFile]
    directory: str
    done: dict[str, str | None] = field(default_factory=dict)
    seconds: float = 0.0
    greenlet: Any = None

    def run(self, transport: Transport) -> None:
        began = time.monotonic()
        todo = sorted(self.wheels, key=lambda w: -w.size)  # the longest transfer starts first

        def channel() -> None:
            while todo:
                wheel = todo.pop(0)  # greenlets switch only on I/O: no two take one wheel
                try:
                    self.done[wheel.name] = _push(transport, wheel, self.directory)
                except Exception as error:
                    self.done[wheel.name] = f"{type(error).__name__}: {error}"

        gevent.joinall([gevent.spawn(channel) for _ in range(min(CHANNELS, len(todo)))])
        self.seconds = time.monotonic() - began


def missing(wheels: list[WheelFile], sizes: Mapping[str, int]) -> list[WheelFile]:
    """A wheel of the right size counts as present: comparing sizes costs one `find`, where
    a checksum would read hundreds of MB per run. The contents are still checked: by sha256
    as each is written, and by the hash-pinned install that reads them."""
    return [w for w in wheels if sizes.get(w.name) != w.size]


def start_early(
    target: Host, wheels: list[WheelFile], directory: str, sizes: Mapping[str, int]
) -> Push | None:
    """The push of what `sizes` (the host's folder) lacks, started in the background over the
    host's SSH connection; None when nothing is missing or the connector is not SSH. Call it
    only for a run that will execute."""
    todo = missing(wheels, sizes)
    transport = transport_of(target)
    if not todo or transport is None:
        return None
    push = Push(todo, directory)
    push.greenlet = gevent.spawn(push.run, transport)
    total = sum(w.size for w in todo)
    target.log(f"wheels: pushing {len(todo)} ({total / 1e6:,.1f} MB) while the steps before run")
    return push


def finish(
    state: State, host: Host, wheels: list[WheelFile], directory: str, early: Push | None
) -> bool:
    """Wait for the background push; push what it did not place; False names the failure.
    (pyinfra passes `state` and `host` by these names.)"""
    began = time.monotonic()
    if early is not None:
        early.greenlet.join()
    transport = transport_of(host)
    for wheel in wheels:
        problem = early.done.get(wheel.name, "not pushed") if early else "not pushed"
        if problem is not None and transport is not None:
            if early is not None and wheel.name in early.done:
                logger.warning(f"{host.print_prefix}wheel push: {wheel.name}: {problem}; again")
            problem = _push(transport, wheel, directory)
        if problem is not None:
            logger.error(f"{host.print_prefix}wheel push: {wheel.name}: {problem}")
            return False
    total = sum(w.size for w in wheels)
    waited = time.monotonic() - began
    how = f", {early.seconds:.1f} s in the background" if early else ""
    logger.info(
        f"{host.print_prefix}wheel push: {len(wheels)} file(s), {total / 1e6:,.1f} MB, "
        f"hashes checked{how}; {waited:.1f} s here"
    )
    return True


@operation()
def pushed(
    wheels: list[WheelFile], directory: str, early: Push | None = None
) -> Generator[Any, None, None]:
    """Every wheel in `directory` (root's), each checked against its sha256; `early`: the push
    preflight started, which this waits for."""
    sizes = host.get_fact(FileSizes, directory=directory)
    todo = missing(wheels, sizes)
    if early is not None:  # what the background push is placing is not there yet
        todo = [w for w in wheels if w in early.wheels or w in todo]
    if not todo:
        host.noop(f"{len(wheels)} file(s) in {directory}")
        return
    if early is not None or transport_of(host) is not None:
        yield FunctionCommand(finish, (todo, directory, early), {})
        return
    # Another connector: pyinfra's upload, then the hashes.
    yield StringCommand("mkdir", "-p", "-m", "0755", directory)
    for wheel in todo:
        dest = f"{directory}/{wheel.name}"
        yield FileUploadCommand(wheel.src, dest, remote_temp_filename=host.get_temp_filename(dest))
    sums = "".join(f"{w.sha256}  {w.name}\n" for w in todo)
    names = " ".join(shlex.quote(w.name) for w in todo)
    # A corrupted upload is removed, so that the next run uploads it again.
    yield (
        f"cd {shlex.quote(directory)} && chmod 0644 {names} && "
        f"{{ printf %s {shlex.quote(sums)} | sha256sum --check --quiet --strict "
        f"|| {{ rm -f {names}; exit 1; }}; }}"
    )
