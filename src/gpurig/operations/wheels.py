"""Wheels the hosts cannot download, pushed from the controller (gpurig.plan's Wheels step).

Each wheel is streamed over an exec channel of the deploy's SSH connection into a root-run
script that writes it beside its final name, hashes the same bytes, and renames it into place
only when the hash is the lock's (gpurig.operations.stream): one pass, no copy in /tmp, no file
of the wrong bytes ever under the wheel's name.

On a fresh host, where the run will execute, preflight starts the push of the wheels the host
lacks in the background (gpurig.operations.early); the Wheels operation waits for it, then
pushes whatever it did not place. Another connector than SSH gets pyinfra's upload and a
`sha256sum --check`.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Generator, Mapping
from typing import Any

from pyinfra import logger
from pyinfra.api.command import FileUploadCommand, FunctionCommand, StringCommand
from pyinfra.api.host import Host
from pyinfra.api.operation import operation
from pyinfra.api.state import State
from pyinfra.context import host

from gpurig.facts.system import FileSizes
from gpurig.operations.early import Push, Transfer, send
from gpurig.operations.stream import transport_of
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


def transfer(wheel: WheelFile, directory: str) -> Transfer:
    return Transfer(wheel.name, wheel.src, wheel.size, wheel.sha256, receive(wheel, directory))


def missing(wheels: list[WheelFile], sizes: Mapping[str, int]) -> list[WheelFile]:
    """A wheel of the right size counts as present: comparing sizes costs one `find`, where
    a checksum would read hundreds of MB per run. The contents are still checked: by sha256
    as each is written, and by the hash-pinned install that reads them."""
    return [w for w in wheels if sizes.get(w.name) != w.size]


def finish(
    state: State, host: Host, wheels: list[WheelFile], directory: str, early: Push | None
) -> bool:
    """Wait for the background push; push what it did not place; False names the failure.
    (pyinfra passes `state` and `host` by these names.)"""
    began = time.monotonic()
    transport = transport_of(host)
    for wheel in wheels:
        pushed_early = early is not None and wheel.name in early
        problem = early.outcome(wheel.name) if early and pushed_early else "not pushed"
        if problem is not None and transport is not None:
            if pushed_early:
                logger.warning(f"{host.print_prefix}wheel push: {wheel.name}: {problem}; again")
            problem = send(transport, transfer(wheel, directory))
        if problem is not None:
            logger.error(f"{host.print_prefix}wheel push: {wheel.name}: {problem}")
            return False
    total = sum(w.size for w in wheels)
    waited = time.monotonic() - began
    behind = [early.seconds[w.name] for w in wheels if early and w.name in early.seconds]
    how = f", {max(behind):.1f} s in the background" if behind else ""
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
    preflight started (gpurig.operations.early), which this waits for."""
    sizes = host.get_fact(FileSizes, directory=directory)
    todo = missing(wheels, sizes)
    if early is not None:  # what the background push is placing is not there yet
        todo = [w for w in wheels if w.name in early or w in todo]
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
